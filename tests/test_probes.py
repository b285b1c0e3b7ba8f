"""kaviz.measure.probes: linear probes on toy features with known answers; MLM loss and STS Spearman on tiny
BERTs, each against an independent reference."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr

from kaviz.data.base import TaskError
from kaviz.measure import probes
from kaviz.measure.probes import general_knowledge, has_mlm_head, linear_probe, mlm_loss, sts_pairs, sts_spearman
from tests.helpers import tiny_bert

STSB = (
    Path(os.environ.get("KAVIZ_GLUE_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "glue")) / "STS-B"
)
TEXTS = [
    "the film was a delight from start to finish",
    "a slow and tedious story",
    "great acting",
    "nobody should have to sit through this",
    "it rains",
]


pytestmark = pytest.mark.usefixtures("one_thread")


def _bert(cls_name: str, vocab: int, seed: int = 0, num_labels: int = 2):
    return tiny_bert(vocab=vocab, seed=seed, num_labels=num_labels, cls=cls_name)


# ----- linear probes ---------------------------------------------------------------------------------------


def _toy_layers(n: int = 200, d: int = 8, seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2  # balanced
    noise = torch.randn(n, d, generator=g)  # layer 0 knows nothing
    sep = torch.randn(n, d, generator=g)
    sep[:, 0] = (2 * y - 1) * 3.0 + 0.1 * torch.randn(n, generator=g)  # layer 1: the label is feature 0's sign
    return [noise, sep], y


def test_linear_probe_separable_layer_vs_noise():
    feats, y = _toy_layers()
    df = linear_probe(feats, y, regression=False)
    assert list(df.columns) == ["layer", "metric", "value", "n_train", "n_test"]
    assert df["layer"].tolist() == [0, 1] and set(df["metric"]) == {"accuracy"}
    assert (df["n_train"] == 100).all() and (df["n_test"] == 100).all()
    assert df.loc[1, "value"] == 1.0
    assert 0.35 < df.loc[0, "value"] < 0.65  # chance


def test_linear_probe_regression_linear_target():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(120, 6, generator=g)
    target = x @ torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0, 1.0]) + 4.0
    df = linear_probe([torch.randn(120, 6, generator=g), x], target, regression=True, train_fraction=0.6)
    assert set(df["metric"]) == {"pearson"}
    assert df.loc[1, "value"] > 0.999
    assert abs(df.loc[0, "value"]) < 0.4
    assert df.loc[0, "n_train"] == 72 and df.loc[0, "n_test"] == 48


def test_linear_probe_deterministic_and_pluggable():
    feats, y = _toy_layers(n=60, seed=1)
    feats[1] = feats[0] + 0.3 * torch.randn(60, 8)  # neither layer perfect: the value depends on the split
    a = linear_probe(feats, y, regression=False, seed=5)
    pd.testing.assert_frame_equal(a, linear_probe([f.numpy() for f in feats], y.numpy(), regression=False, seed=5))
    seen = {}

    def majority(x_train, y_train, x_test, seed):
        seen["n"] = len(y_train)
        return np.full(len(x_test), np.bincount(y_train).argmax())

    def error_rate(pred, y):
        return float(np.mean(pred != y))

    b = linear_probe(feats, y, regression=False, probe=majority, metric=error_rate)
    assert seen["n"] == 30 and set(b["metric"]) == {"error_rate"}
    assert b["value"].tolist() == pytest.approx([0.5, 0.5])  # stratified split: balanced test set
    assert set(probes.PROBES) == {"logistic", "ridge"}


def test_linear_probe_multiclass():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(90) % 3
    x = torch.nn.functional.one_hot(y, 3).float() * 4 + 0.1 * torch.randn(90, 3, generator=g)
    assert linear_probe([x], y, regression=False).loc[0, "value"] == 1.0


def test_linear_probe_errors():
    feats, y = _toy_layers(n=20)
    with pytest.raises(ValueError, match="class"):
        linear_probe(feats, torch.zeros(20, dtype=torch.long), regression=False)
    with pytest.raises(ValueError, match="at least 4"):
        linear_probe([f[:3] for f in feats], y[:3], regression=False)
    with pytest.raises(ValueError, match=r"features\[1\].*\(20, d\)"):
        linear_probe([feats[0], feats[1][:10]], y, regression=False)
    with pytest.raises(ValueError, match="NaN"):
        linear_probe([feats[0] * math.nan], y, regression=False)
    with pytest.raises(ValueError, match="unknown metric 'auc'"):
        linear_probe(feats, y, regression=False, metric="auc")
    with pytest.raises(ValueError, match="train_fraction"):
        linear_probe(feats, y, regression=False, train_fraction=1.0)
    with pytest.raises(ValueError, match="empty"):
        linear_probe([], y, regression=False)


# ----- MLM loss --------------------------------------------------------------------------------------------


def test_bert_masking_proportions():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (20000,))
    special = torch.zeros(20000, dtype=torch.bool)
    special[:100] = True
    inputs, labels = probes._bert_mask(ids, special, 0.15, mask_id=103, vocab=3000, g=g)
    sel = labels != -100
    assert not sel[:100].any() and torch.equal(labels[sel], ids[sel])
    assert sel.float().mean().item() == pytest.approx(0.15, abs=0.01)
    masked = (inputs[sel] == 103).float().mean().item()
    same = (inputs[sel] == ids[sel]).float().mean().item()
    assert masked == pytest.approx(0.8, abs=0.02) and same == pytest.approx(0.1 + 0.1 / 3000, abs=0.02)
    assert torch.equal(inputs[~sel], ids[~sel])


def test_mlm_loss_random_model(tok, tmp_path):
    model = _bert("BertForMaskedLM", len(tok))
    loss = mlm_loss(model, tok, TEXTS * 2, batch_size=8)
    assert math.isfinite(loss) and loss > 0
    assert abs(loss - math.log(len(tok))) < 1.0  # a random model is ~uniform over the vocabulary
    assert mlm_loss(model, tok, TEXTS * 2, batch_size=3) == pytest.approx(loss, rel=1e-5)  # batching-independent
    assert mlm_loss(model, tok, TEXTS * 2, seed=1) != loss
    assert model.training  # mode restored
    model.save_pretrained(tmp_path)
    assert has_mlm_head(tmp_path)
    assert mlm_loss(tmp_path, tok, TEXTS * 2, batch_size=8) == pytest.approx(loss, rel=1e-5)


def test_has_mlm_head_and_errors(tok):
    from kaviz.train.models import packaged_model_dir

    clf = _bert("BertForSequenceClassification", len(tok))
    assert has_mlm_head(_bert("BertForMaskedLM", 50)) and not has_mlm_head(clf)
    assert not has_mlm_head(packaged_model_dir())  # all-MiniLM-L6-v2 is a bare BertModel
    with pytest.raises(ValueError, match="no masked-LM head"):
        mlm_loss(clf, tok, TEXTS)
    with pytest.raises(ValueError, match="mask_prob"):
        mlm_loss(clf, tok, TEXTS, mask_prob=0)
    with pytest.raises(ValueError, match="vocabulary has 50"):
        mlm_loss(_bert("BertForMaskedLM", 50), tok, TEXTS)


# ----- STS -------------------------------------------------------------------------------------------------


def _reference_sts(model, tok, pairs, gold) -> float:
    """Manual mean pooling over real tokens + numpy cosine + scipy Spearman."""
    model.eval()

    def embed(texts):
        enc = tok(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            h = model.bert(**enc).last_hidden_state.numpy().astype(np.float64)  # (n, T, d)
        m = enc["attention_mask"].numpy()[:, :, None]
        return (h * m).sum(1) / m.sum(1)

    a, b = embed([p[0] for p in pairs]), embed([p[1] for p in pairs])
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return float(spearmanr(cos, gold).statistic)


def test_sts_spearman_matches_reference(tok):
    model = _bert("BertForSequenceClassification", len(tok), seed=2)
    pairs, gold = sts_pairs(None, 24, seed=0)
    value = sts_spearman(model, tok, pairs, gold, batch_size=5)
    assert value == pytest.approx(_reference_sts(model, tok, pairs, gold), abs=1e-6)
    with pytest.raises(ValueError, match="one score per pair"):
        sts_spearman(model, tok, pairs, gold[:-1])
    with pytest.raises(ValueError, match="all equal"):
        sts_spearman(model, tok, pairs, [1.0] * len(pairs))
    with pytest.raises(ValueError, match="unknown pooling"):
        sts_spearman(model, tok, pairs, gold, pooling="max")


def test_builtin_sts_is_deterministic_and_spread():
    pairs, gold = sts_pairs(None, 60, seed=0)
    assert (pairs, gold) == sts_pairs(None, 60, seed=0)
    assert pairs != sts_pairs(None, 60, seed=1)[0]
    assert len(pairs) == len(gold) == 60 and all(a != b for a, b in pairs)
    g = np.array(gold)
    assert g.min() >= 0 and g.max() <= 5 and g.min() < 0.5 and g.max() > 4.5 and g.std() > 1.2
    with pytest.raises(TaskError, match="STS-B data not found"):  # a given path that is not there: an error
        sts_pairs(STSB / "missing", 10, seed=0)
    with pytest.raises(ValueError, match="n must be"):
        sts_pairs(None, 0, seed=0)


def test_sts_pairs_reads_tsv(tmp_path):
    head = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    lines = [f'{i}\tg\tf\ty\t{i}\tn\tn\t"Quoted" left {i}.\tright {i}\t{i / 2:.3f}\n' for i in range(10)]
    (tmp_path / "STS-B").mkdir()
    (tmp_path / "STS-B" / "dev.tsv").write_text(head + "".join(lines) + "bad\trow\n", encoding="utf-8")
    pairs, gold = sts_pairs(tmp_path, 100, seed=0)  # the GLUE folder; n above the size: everything
    assert pairs[3] == ('"Quoted" left 3.', "right 3") and gold == [i / 2 for i in range(10)]
    sub, sub_gold = sts_pairs(tmp_path / "STS-B", 4, seed=7)
    assert (
        len(sub) == 4
        and sub == sorted(sub, key=pairs.index)
        and all(g == gold[pairs.index(p)] for p, g in zip(sub, sub_gold))
    )
    (tmp_path / "x.tsv").write_text("a\tb\nc\td\n", encoding="utf-8")
    with pytest.raises(ValueError, match="header lacks"):
        sts_pairs(tmp_path / "x.tsv", 5)


@pytest.mark.skipif(not (STSB / "dev.tsv").is_file(), reason="no local GLUE STS-B")
def test_sts_pairs_reads_real_stsb():
    pairs, gold = sts_pairs(STSB, 50, seed=0)
    assert len(pairs) == 50 and (pairs, gold) == sts_pairs(STSB, 50, seed=0)
    assert all(0 <= g <= 5 for g in gold) and np.std(gold) > 0.5
    assert all(isinstance(a, str) and a and b for a, b in pairs)


def test_general_knowledge_picks_the_probe(tok):
    mlm = _bert("BertForMaskedLM", len(tok))
    out = general_knowledge(mlm, tok, texts=TEXTS)
    assert out == {"probe": "mlm_loss", "value": pytest.approx(mlm_loss(mlm, tok, TEXTS)), "n": len(TEXTS)}
    clf = _bert("BertForSequenceClassification", len(tok))
    pairs, gold = sts_pairs(None, 12, seed=0)
    out = general_knowledge(clf, tok, texts=TEXTS, sts_pairs=pairs, sts_gold=gold)
    assert out == {"probe": "sts_spearman", "value": pytest.approx(sts_spearman(clf, tok, pairs, gold)), "n": 12}
    assert general_knowledge(mlm, tok)["probe"] == "sts_spearman"  # no texts: the built-in STS set
    with pytest.raises(ValueError, match="both"):
        general_knowledge(clf, tok, sts_pairs=pairs)


def test_mlm_probe_runs_in_the_analysis_with_the_pretrained_head(tmp_path):
    """A pre-trained model with a masked-LM head (a tiny BertForMaskedLM saved as safetensors): the
    analysis reports general_mlm_loss for every unit that shares its width, and the value for the
    pre-trained unit equals mlm_loss of the original MLM model (its own encoder under its own head)."""
    from transformers import BertForMaskedLM

    from kaviz.analysis.analyzer import Analyzer, knowledge_table
    from kaviz.core.config import RunConfig
    from kaviz.data.tasks import load_task
    from kaviz.measure.capture import probe_inputs
    from kaviz.stages.pipeline import Pipeline
    from kaviz.store import RunStore
    from kaviz.train.models import load_tokenizer

    tok = load_tokenizer(RunConfig().model)  # the packaged tokenizer: its vocabulary sizes the tiny model
    src = tmp_path / "mlm"
    tiny_bert(vocab=tok.vocab_size, cls="BertForMaskedLM", kaviz_attention=False).save_pretrained(src)
    tok.save_pretrained(src)
    run_cfg = RunConfig.from_dict(
        {
            "name": "mlm",
            "model": {"name_or_path": str(src)},
            "task": {"name": "demo", "demo_train_size": 64, "demo_dev_size": 40, "max_length": 24},
            "training": {"max_steps": 2, "batch_size": 16, "num_threads": 1},
            "pruning": {"max_steps": 2, "mask_updates": 1},
            "methods": ["oneshot-magnitude"],
            "sparsities": [0.5],
            "analysis": {"enabled": False, "general_probe": "mlm", "probe_size": 16, "attribution_examples": 0},
        }
    )
    run = Pipeline(run_cfg, RunStore(tmp_path / "runs"), progress=False).run()
    Analyzer(run, progress=False).run()
    k = knowledge_table(run)
    mlm = k[k.metric == "general_mlm_loss"].set_index("unit").value
    assert set(mlm.index) == {"pretrained", "finetuned", "pruned_oneshot-magnitude_s0.5_seed42"}
    probe = probe_inputs(load_task(run_cfg.task, seed=run_cfg.seed), tok, 16, seed=0, max_length=24)
    expected = mlm_loss(BertForMaskedLM.from_pretrained(src), tok, probe.texts, seed=0)
    assert mlm["pretrained"] == pytest.approx(expected, rel=1e-5)
    assert mlm["pruned_oneshot-magnitude_s0.5_seed42"] != pytest.approx(expected)  # pruning changed it


def test_mlm_probe_without_a_head_is_refused(tmp_path):
    from kaviz.analysis.analyzer import Analyzer
    from kaviz.core.config import RunConfig
    from kaviz.stages.pipeline import Pipeline
    from kaviz.store import RunStore

    cfg = RunConfig.from_dict(
        {
            "name": "nohead",
            "model": {"name_or_path": "tiny"},
            "task": {"name": "demo", "demo_train_size": 64, "demo_dev_size": 40, "max_length": 24},
            "training": {"max_steps": 1, "batch_size": 16, "num_threads": 1},
            "methods": ["oneshot-magnitude"],
            "sparsities": [0.5],
            "analysis": {"enabled": False, "general_probe": "mlm", "probe_size": 16, "attribution_examples": 0},
        }
    )
    run = Pipeline(cfg, RunStore(tmp_path), progress=False).run()
    with pytest.raises(TaskError, match="needs a pre-trained model with a masked-LM head"):
        Analyzer(run, progress=False).run()
