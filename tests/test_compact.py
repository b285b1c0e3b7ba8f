"""Compact unit weights (kaviz.train.compact): each encoding chosen where it should be, every decoded
tensor at least as exact as a float16 copy (max norm), pruned zeros exactly zero, a whole model's
logits reproduced, and a wrong base refused."""

from __future__ import annotations

import copy

import pytest
import torch

from kaviz.train.compact import CompactError, decode_tensor, encode_tensor, load_compact, read_meta, save_compact
from kaviz.train.models import load_classifier, tiny_bert_config


def fp16_error(w):
    return (w.half().float() - w).abs().max().item()


def roundtrip(w, base):
    kind, arrays = encode_tensor(w, base)
    return kind, decode_tensor(kind, arrays, base, list(w.shape), w.dtype)


@pytest.fixture
def base():
    g = torch.Generator().manual_seed(0)
    return torch.randn(64, 48, generator=g) * 0.05


def test_an_unchanged_tensor_stores_nothing(base):
    kind, arrays = encode_tensor(base.clone(), base)
    assert kind == "base" and arrays == {}
    assert torch.equal(decode_tensor(kind, arrays, base, [64, 48], torch.float32), base)


def test_changed_rows_only_store_those_rows(base):
    w = base.clone()
    w[[3, 17]] += 1e-3 * torch.randn(2, 48)
    kind, arrays = encode_tensor(w, base)
    assert kind == "rows" and arrays["rows"].tolist() == [3, 17]
    out = decode_tensor(kind, arrays, base, [64, 48], torch.float32)
    others = [i for i in range(64) if i not in (3, 17)]
    assert torch.equal(out[others], base[others])  # bit-exact where nothing changed
    assert (out - w).abs().max().item() <= fp16_error(w)


def test_a_fine_tuned_matrix_is_an_int8_difference_no_less_exact_than_float16(base):
    w = base + 1e-3 * torch.randn(64, 48)  # fine-tuning moves weights by ~1e-3
    kind, out = roundtrip(w, base)
    assert kind == "delta8"
    err = (out - w).abs().max().item()
    assert err <= fp16_error(w)
    half_step = ((w - base).abs().amax(dim=1) / 254).max().item()  # int8 with a scale per row
    assert err <= half_step + 1e-7  # within float32 rounding


def test_a_pruned_matrix_keeps_exact_zeros(base):
    w = base + 1e-3 * torch.randn(64, 48)
    keep = torch.rand(64, 48, generator=torch.Generator().manual_seed(1)) < 0.1
    w = w * keep
    kind, arrays = encode_tensor(w, base)
    assert kind == "sparse"
    out = decode_tensor(kind, arrays, base, [64, 48], torch.float32)
    assert torch.equal(out == 0, w == 0)
    assert (out - w).abs().max().item() <= fp16_error(w)
    assert sum(a.numel() * a.element_size() for a in arrays.values()) < 0.2 * w.numel() * 4


def test_without_a_useful_base_it_stores_float16(base):
    unrelated = torch.randn(64, 48) * 0.05  # int8 of a difference as large as the weights: worse than float16
    kind, out = roundtrip(unrelated, base)
    assert kind == "dense16" and torch.equal(out, unrelated.half().float())
    kind, out = roundtrip(unrelated, None)
    assert kind == "dense16"
    pruned = unrelated * (torch.rand(64, 48) < 0.1)
    kind, out = roundtrip(pruned, torch.randn(8, 8))  # base of another shape: ignored
    assert kind == "sparse16" and torch.equal(out, pruned.half().float())


def test_vectors_and_integer_tensors_are_stored_exactly(base):
    for w in (torch.randn(48), torch.arange(10).reshape(2, 5)):
        kind, out = roundtrip(w, None)
        assert kind == "exact" and torch.equal(out, w)


# ----- whole models -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("base")
    AutoModelForSequenceClassification.from_config(tiny_bert_config(vocab_size=300, num_labels=2)).save_pretrained(
        folder
    )
    return folder


def tuned_and_pruned(base_model):
    """A model as training leaves it: every encoder matrix moved, one pruned to 90%, a few word rows
    changed and the others untouched, a new head."""
    m = copy.deepcopy(base_model)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "encoder" in name and p.ndim == 2:
                p.add_(1e-3 * torch.randn(p.shape, generator=g))
        w = m.bert.encoder.layer[1].intermediate.dense.weight
        w.mul_(w.abs() > w.abs().flatten().kthvalue(int(0.9 * w.numel())).values)
        m.bert.embeddings.word_embeddings.weight[[5, 9, 40]] += 1e-2
        m.classifier.weight.normal_(0, 0.02, generator=g)
    return m.eval()


def test_a_model_round_trips_through_its_base(base_folder, tmp_path):
    base = load_classifier(str(base_folder), 2)
    model = tuned_and_pruned(base)
    meta = save_compact(model, base, tmp_path / "c", str(base_folder))
    kinds = {n: t["kind"] for n, t in meta["tensors"].items()}
    assert kinds["bert.embeddings.word_embeddings.weight"] == "rows"
    assert kinds["bert.encoder.layer.1.intermediate.dense.weight"] == "sparse"
    assert kinds["bert.encoder.layer.0.attention.self.query.weight"] == "delta8"
    assert kinds["bert.embeddings.position_embeddings.weight"] == "base"
    assert read_meta(tmp_path / "c")["base"] == str(base_folder)

    back = load_compact(tmp_path / "c")
    want, got = model.state_dict(), back.state_dict()
    for name in want:
        assert (got[name].float() - want[name].float()).abs().max().item() <= fp16_error(want[name].float()), name
    w = back.bert.encoder.layer[1].intermediate.dense.weight
    assert torch.equal(w == 0, model.bert.encoder.layer[1].intermediate.dense.weight == 0)
    x = torch.randint(0, 300, (3, 12))
    with torch.no_grad():
        assert torch.allclose(back(input_ids=x).logits, model(input_ids=x).logits, atol=1e-4)
    stored = sum(f.stat().st_size for f in (tmp_path / "c").iterdir())
    dense = sum(p.numel() * 4 for p in model.parameters())
    assert stored < 0.35 * dense


def test_a_different_base_is_refused(base_folder, tmp_path):
    from transformers import AutoModelForSequenceClassification

    base = load_classifier(str(base_folder), 2)
    save_compact(tuned_and_pruned(base), base, tmp_path / "c", str(tmp_path / "other"))
    torch.manual_seed(1)  # another random model under the name the layout points to
    AutoModelForSequenceClassification.from_config(tiny_bert_config(vocab_size=300, num_labels=2)).save_pretrained(
        tmp_path / "other"
    )
    with pytest.raises(CompactError, match="different"):
        load_compact(tmp_path / "c")
    (tmp_path / "c" / "compact.json").write_text("{}")
    with pytest.raises(CompactError, match="not a kaviz compact layout"):
        load_compact(tmp_path / "c")


def test_a_run_serves_compact_weights_where_it_has_no_checkpoint(base_folder, tmp_path):
    from kaviz.analysis.unit_view import load_unit_model, store_compact
    from kaviz.store import RunStore

    base = load_classifier(str(base_folder), 2)
    model = tuned_and_pruned(base)
    from kaviz.core.config import RunConfig

    config = RunConfig.from_dict({"name": "r", "model": {"name_or_path": str(base_folder)}}).to_dict()
    units = [{"unit": "pretrained", "stage": "pretrained"}, {"unit": "finetuned", "stage": "finetuned"}]
    src = RunStore(tmp_path / "full").create_run(config, units=units)
    src.save_checkpoint("finetuned", model)
    dest = RunStore(tmp_path / "light").create_run(config, units=units)
    assert not dest.has_weights("finetuned") and load_unit_model(dest, "finetuned") is None

    (summary,) = store_compact(src, dest, ["finetuned"])
    assert summary["unit"] == "finetuned" and "sparse" in summary["kinds"]
    assert dest.has_weights("finetuned") and dest.checkpoint_dir("finetuned") is None
    back = load_unit_model(dest, "finetuned")
    x = torch.randint(0, 300, (2, 9))
    with torch.no_grad():
        assert torch.allclose(back(input_ids=x).logits, model(input_ids=x).logits, atol=1e-4)
    import shutil

    shutil.rmtree(dest.compact_dir("finetuned"))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        store_compact(dest, dest, ["finetuned"])
