"""kaviz.analysis.diagnosis: loss shares by hand, the gain kept at its two ends, and the diagnosis
rows of a hand-made run (capacity, budget and loss balance read off its units)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from kaviz.analysis import diagnosis, evidence
from kaviz.store import RunStore


def _history(att, hid, pred, steps=None):
    steps = steps if steps is not None else np.arange(1, len(att) + 1) * 10
    return pd.DataFrame({"step": steps, "loss": np.add(np.add(att, hid), pred), "att": att, "hid": hid, "pred": pred})


def test_loss_shares_by_hand():
    """The last 20% of 10 logged steps are the last 2: (3, 1, 0) and (1, 1, 2) give shares
    (0.75, 0.25, 0) and (0.25, 0.25, 0.5), mean (0.5, 0.25, 0.25); earlier steps do not count."""
    att = [100.0] * 8 + [3.0, 1.0]
    hid = [0.0] * 8 + [1.0, 1.0]
    pred = [0.0] * 8 + [0.0, 2.0]
    h = _history(att, hid, pred).sample(frac=1.0, random_state=0)  # rows in any order: sorted by step
    assert diagnosis.loss_shares(h) == pytest.approx({"att": 0.5, "hid": 0.25, "pred": 0.25})
    # weights as in training: pred x 3 turns the last step's (1, 1, 2) into (1, 1, 6)
    got = diagnosis.loss_shares(h, {"pred": 3.0})
    assert got == pytest.approx({"att": (0.75 + 1 / 8) / 2, "hid": (0.25 + 1 / 8) / 2, "pred": (0 + 6 / 8) / 2})
    assert sum(diagnosis.loss_shares(h, tail=1.0).values()) == pytest.approx(1.0)
    assert diagnosis.loss_shares(h, tail=0.01) == pytest.approx({"att": 0.25, "hid": 0.25, "pred": 0.5})  # >= 1 step
    assert diagnosis.loss_shares(pd.DataFrame({"step": [10, 20], "loss": [0.7, 0.5]})) == {}  # cross-entropy
    with pytest.raises(ValueError, match="tail"):
        diagnosis.loss_shares(h, tail=0)


def test_gain_kept_is_one_at_the_teacher_and_zero_at_the_constant_answer():
    assert diagnosis.gain_kept(0.9, 0.9, 0.5) == 1.0
    assert diagnosis.gain_kept(0.5, 0.9, 0.5) == 0.0
    assert diagnosis.gain_kept(0.7, 0.9, 0.5) == pytest.approx(0.5)
    assert diagnosis.gain_kept(0.4, 0.9, 0.5) < 0  # below the constant answer
    assert math.isnan(diagnosis.gain_kept(0.6, 0.5, 0.5))  # a teacher that learnt nothing


def test_diagnosis_of_a_run(tmp_path):
    """Two knowledge-aware seeds (loss terms logged) and a cross-entropy gradual unit at 90%: the
    row means the seeds' non-zero weights and shares, the gradual row has no shares."""
    y = np.array([0, 1] * 50)
    wrong = lambda k: np.where(np.arange(100) < k, 1 - y, y)  # noqa: E731
    specs = [  # unit, stage, method, seed, budget, predictions, nonzero encoder weights, history
        ("finetuned", "finetuned", "finetuned", 42, None, y, 1000, None),
        ("pruned_ka_s0.9_seed42", "pruned", "ka", 42, 2.0, wrong(10), 100, _history([3.0] * 5, [1.0] * 5, [0.0] * 5)),
        ("pruned_ka_s0.9_seed43", "pruned", "ka", 43, 2.0, wrong(30), 102, _history([1.0] * 5, [1.0] * 5, [2.0] * 5)),
        ("pruned_gm_s0.9_seed42", "pruned", "gm", 42, 2.0, wrong(50), 100, pd.DataFrame({"step": [10], "loss": [0.3]})),
    ]
    units = [{"unit": u, "stage": st, "method": m, "sparsity": 0.0 if st == "finetuned" else 0.9, "seed": sd,
              "budget": b} for u, st, m, sd, b, *_ in specs]  # fmt: skip
    run = RunStore(tmp_path).create_run(
        {"name": "r", "task": {"name": "sst2"}, "distill": {"alpha_pred": 1.0}}, units=units
    )
    for u, _, _, _, b, pred, nz, hist in specs:
        acc = float((pred == y).mean())
        rows = [{"metric": "accuracy", "value": acc}, {"metric": "score", "value": acc}]
        rows += [{"metric": "nonzero_encoder_params", "value": nz}, {"metric": "encoder_params", "value": 1000}]
        rows += [] if b is None else [{"metric": "examples_seen", "value": b * 100}]
        tables = {"predictions": pd.DataFrame({"example": np.arange(100), "label": y, "prediction": pred})}
        run.start_unit(u)
        run.finish_unit(u, rows, tables=tables | ({} if hist is None else {"history": hist}))
    d = diagnosis.diagnosis(run, evidence.summary(run, ("accuracy",), n_boot=100), "accuracy")
    assert list(d.columns) == diagnosis.COLUMNS and len(d) == 2
    ka = d[d.method == "ka"].iloc[0]
    assert ka.seeds == 2 and ka["mean"] == pytest.approx(0.8) and ka.teacher == 1.0 and ka.constant == 0.5
    assert ka.headroom == 0.5 and ka.gain_kept == pytest.approx(0.6)
    assert ka.nonzero_encoder == 101 and ka.encoder == 1000 and ka.examples_seen == 200
    assert (ka.share_att, ka.share_hid, ka.share_pred) == pytest.approx(
        (0.5, 0.25, 0.25)
    )  # mean of (3,1,0)/4, (1,1,2)/4
    gm = d[d.method == "gm"].iloc[0]
    assert gm.gain_kept == pytest.approx(0.0) and math.isnan(gm.share_att)
    assert diagnosis.diagnosis(run, pd.DataFrame(), "accuracy").empty


def test_the_evidence_report_states_the_causes_beside_the_paper(tmp_path, monkeypatch, capsys):
    """benchmarks/evidence.py --report-only over the shipped runs: evidence-diagnosis.csv holds a row
    per three-method unit group (every budget), and evidence.md puts the paper's MRPC row beside them."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("evidence_bench", root / "benchmarks" / "evidence.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    bench.report(root / "assets" / "runs", n_boot=50)
    capsys.readouterr()
    d = pd.read_csv(tmp_path / "evidence-diagnosis.csv")
    assert list(d.columns) == diagnosis.COLUMNS
    assert {0.25, 2.0} <= set(d[d.task == "sst2"].budget)  # every budget of the curves has its row
    sst2 = d[(d.task == "sst2") & (d.sparsity == 0.95) & (d.budget == 2.0)].set_index("method")
    assert set(sst2.index) == {"knowledge-aware", "gradual-magnitude", "small-dense"}
    assert (sst2.nonzero_encoder < 0.06 * sst2.loc["knowledge-aware", "encoder"]).all()
    assert sst2.loc["knowledge-aware", "share_att"] > 0.5 and math.isnan(sst2.loc["gradual-magnitude", "share_att"])
    md = (tmp_path / "evidence.md").read_text()
    assert "## What decides how much a student keeps" in md and "mrpc (paper, BERT-base)" in md
    sep = md.split("### Separation from the constant answer")[1].split("##")[0]  # MRPC: paired vs the constant
    assert "| knowledge-aware | 80% | +3.7 [" in sep and "- knowledge-aware: accuracy above at" in sep


def test_gradient_shares_equal_each_terms_own_gradient_on_the_kept_weights(tiny_bert, batch):
    """Per term, the norm equals ||d term / d W|| over the kept weights computed straight from the
    loss functions of kaviz.train.distill (teacher outputs, identity projection); a pruned weight's
    gradient is left out; alpha_pred x 2 doubles the prediction term's norm alone; neither model
    changes and the student's mode and requires_grad flags come back."""
    from kaviz.core.config import DistillConfig
    from kaviz.core.structure import prunable_linears
    from kaviz.train.distill import attention_loss, hidden_loss, prediction_loss

    student, teacher = tiny_bert(seed=0), tiny_bert(seed=1).eval()
    with torch.no_grad():
        for lin in prunable_linears(student).values():
            lin.weight[:, ::2] = 0.0  # half the inputs pruned
    student.train()
    before = [p.detach().clone() for p in student.parameters()]
    got = diagnosis.gradient_shares(student, teacher, [batch], DistillConfig()).set_index("term")
    assert student.training and all(torch.equal(a, b) for a, b in zip(before, student.parameters()))

    student.eval()
    weights = [lin.weight for lin in prunable_linears(student).values()]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        t = teacher(**inputs, output_hidden_states=True, output_attentions=True)
    s = student(**inputs, output_hidden_states=True, output_attentions=True)
    eye = torch.nn.Identity()
    terms = {
        "att": attention_loss(list(s.attentions), list(t.attentions)),
        "hid": hidden_loss(list(s.hidden_states), list(t.hidden_states), eye),
        "pred": prediction_loss(s.logits, t.logits),
    }
    for term, value in terms.items():
        grads = torch.autograd.grad(value, weights, retain_graph=True, allow_unused=True)  # att: no last FFN
        want = math.sqrt(sum(float((g * (w != 0)).pow(2).sum()) for g, w in zip(grads, weights) if g is not None))
        assert got.loc[term, "norm"] == pytest.approx(want, rel=1e-4), term
    assert got.share.sum() == pytest.approx(1.0)
    double = diagnosis.gradient_shares(student, teacher, [batch], DistillConfig(alpha_pred=2.0)).set_index("term")
    assert double.loc["pred", "norm"] == pytest.approx(2 * got.loc["pred", "norm"], rel=1e-5)
    assert double.loc["att", "norm"] == pytest.approx(got.loc["att", "norm"], rel=1e-5)
