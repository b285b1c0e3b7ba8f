"""kaviz.analysis.evidence: vectorised metrics against kaviz.data.base, the constant answer by hand,
bootstrap intervals against the normal approximation, and summaries of hand-made runs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from kaviz.analysis import evidence
from kaviz.data.base import METRICS
from kaviz.store import RunStore


@pytest.mark.parametrize("metric", ["accuracy", "f1", "matthews"])
def test_batched_metrics_match_the_reference(metric):
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 50)
        p = np.where(rng.random(50) < 0.7, y, 1 - y)
        assert evidence.metric_value(metric, p, y) == pytest.approx(METRICS[metric](p, y), abs=1e-12)
    y = np.ones(10, dtype=int)
    assert evidence.metric_value("matthews", y, y) == METRICS["matthews"](y, y) == 0.0  # constant: 0, not NaN


def test_constant_answer_by_hand():
    y = np.array([1] * 68 + [0] * 32)
    acc, cls = evidence.constant_answer("accuracy", y)
    assert (acc, cls) == (0.68, 1.0)
    f1, cls = evidence.constant_answer("f1", y)
    assert f1 == pytest.approx(2 * 0.68 / 1.68) and cls == 1.0  # "always equivalent": 0.81 on MRPC
    assert evidence.constant_answer("matthews", y)[0] == 0.0


def test_bootstrap_over_examples_matches_the_normal_interval():
    rng = np.random.default_rng(1)
    n, acc = 2000, 0.8
    y = rng.integers(0, 2, n)
    p = np.where(np.arange(n) < acc * n, y, 1 - y)
    mean, lo, hi = evidence.bootstrap([p], y, "accuracy", n_boot=4000)
    half = 1.96 * math.sqrt(acc * (1 - acc) / n)
    assert mean == pytest.approx(acc)
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)
    perfect = evidence.bootstrap([y], y, "accuracy", n_boot=200)
    assert perfect == (1.0, 1.0, 1.0)


def test_bootstrap_over_seeds_widens_with_seed_spread():
    rng = np.random.default_rng(2)
    n = 1000
    y = rng.integers(0, 2, n)
    good = np.where(np.arange(n) < 900, y, 1 - y)
    bad = np.where(np.arange(n) < 600, y, 1 - y)
    one = evidence.bootstrap([good], y, "accuracy")
    two = evidence.bootstrap([good, bad], y, "accuracy")
    assert two[0] == pytest.approx(0.75)
    assert two[2] - two[1] > 3 * (one[2] - one[1])
    assert two[1] < 0.65 and two[2] > 0.85  # the seed draw can give both bad or both good


def test_paired_difference_matches_the_normal_interval_of_per_example_differences():
    """One seed a side: the bootstrap of acc(A) - acc(B) over shared example draws is the mean of the
    per-example differences d_i = correct_A - correct_B, so its interval is the textbook
    1.96 * sd(d) / sqrt(n); the unpaired intervals of A and B overlap though the paired one excludes 0."""
    rng = np.random.default_rng(3)
    n = 1000
    y = rng.integers(0, 2, n)
    right_a = rng.random(n) < 0.86
    right_b = right_a & (rng.random(n) > 0.03)  # B is A with 3% of A's right answers turned wrong
    a, b = np.where(right_a, y, 1 - y), np.where(right_b, y, 1 - y)
    diff, lo, hi = evidence.paired_difference([a], [b], y, "accuracy", n_boot=4000)
    d = right_a.astype(float) - right_b.astype(float)
    assert diff == pytest.approx(d.mean())
    assert (hi - lo) / 2 == pytest.approx(1.96 * d.std() / math.sqrt(n), rel=0.1)
    assert lo > 0  # separated
    ia, ib = evidence.bootstrap([a], y, "accuracy"), evidence.bootstrap([b], y, "accuracy")
    assert ia[1] < ib[2]  # ... although the two intervals overlap
    same = evidence.paired_difference([a], [a], y, "accuracy", n_boot=200)
    assert same == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="examples"):
        evidence.paired_difference([a], [b[:-1]], y, "accuracy")


def test_paired_ratio_matches_the_delta_method():
    """One seed a side: the bootstrap of acc(A) / acc(B) over shared example draws against the
    textbook delta-method interval R +- 1.96 sd(a_i - R b_i) / (mean(b) sqrt(n)), a_i, b_i each
    side's per-example correctness; a model over itself is exactly 1."""
    rng = np.random.default_rng(5)
    n = 1000
    y = rng.integers(0, 2, n)
    right_b = rng.random(n) < 0.89  # the teacher
    right_a = right_b & (rng.random(n) > 0.04)  # a student that loses 4% of the teacher's right answers
    a, b = np.where(right_a, y, 1 - y), np.where(right_b, y, 1 - y)
    r, lo, hi = evidence.paired_ratio([a], [b], y, "accuracy", n_boot=4000)
    ra, rb = right_a.astype(float), right_b.astype(float)
    ratio = ra.mean() / rb.mean()
    assert r == pytest.approx(ratio)
    half = 1.96 * (ra - ratio * rb).std() / (rb.mean() * math.sqrt(n))
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.15)
    assert lo < ratio < hi and hi < 1  # paired: the student is below its teacher on every draw
    assert evidence.paired_ratio([b], [b], y, "accuracy", n_boot=200) == (1.0, 1.0, 1.0)
    d = evidence.paired_difference([a], [b], y, "accuracy", n_boot=300)  # the shared draws are unchanged
    assert d[0] == pytest.approx(ra.mean() - rb.mean()) and d[1] <= d[0] <= d[2]


def test_share_of_teacher_of_a_run(tmp_path):
    y = np.array([0, 1] * 50)
    wrong = lambda k: np.where(np.arange(100) < k, 1 - y, y)  # noqa: E731
    rows = [
        ("finetuned", "finetuned", "finetuned", 0.0, 42, None, 0.9, (wrong(10), y)),
        ("pruned_ka_s0.9_seed42", "pruned", "knowledge-aware", 0.9, 42, 2.0, 0.8, (wrong(20), y)),
        ("pruned_ka_s0.9_seed42_ep4", "pruned", "knowledge-aware", 0.9, 42, 4.0, 0.9, (wrong(10), y)),
    ]
    run = _run_with_units(tmp_path, rows)
    r, lo, hi, seeds = evidence.share_of_teacher(run, "knowledge-aware", 0.9, 2.0, "accuracy", n_boot=500)
    assert seeds == 1 and r == pytest.approx(0.8 / 0.9) and lo <= r <= hi < 1
    assert evidence.share_of_teacher(run, "knowledge-aware", 0.9, 4.0, "accuracy", n_boot=200)[:3] == (1.0, 1.0, 1.0)
    assert evidence.share_of_teacher(run, "gm", 0.9, 2.0, "accuracy") is None
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "evidence_bench", Path(__file__).parents[1] / "benchmarks" / "evidence.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    s = evidence.summary(run, ("accuracy",), n_boot=200)
    goal = "\n".join(bench.goal_check(s, "accuracy", 0.9, 2.0, run, n_boot=200))
    assert "(1 seed, 2 epochs)" in goal and "keeps 88.9% [" in goal and "does not hold" in goal


def _run_with_units(tmp_path, rows):
    """A run with hand-made units: rows of (unit, stage, method, sparsity, seed, budget, accuracy, preds)."""
    units = [
        {"unit": u, "stage": st, "method": m, "sparsity": s, "seed": sd, "budget": b}
        for u, st, m, s, sd, b, _, _ in rows
    ]
    run = RunStore(tmp_path).create_run({"name": "r", "task": {"name": "sst2"}}, units=units)
    for u, _, _, _, _, b, acc, (pred, y) in rows:
        run.start_unit(u)
        seen = [] if b is None else [{"metric": "examples_seen", "value": b * 100}]
        run.finish_unit(
            u,
            [{"metric": "accuracy", "value": acc}, {"metric": "score", "value": acc}, *seen],
            tables={"predictions": pd.DataFrame({"example": np.arange(len(y)), "label": y, "prediction": pred})},
        )
    return run


def test_summary_of_a_run(tmp_path):
    y = np.array([0, 1] * 50)
    right, wrong90 = y.copy(), y.copy()
    wrong90[:10] = 1 - wrong90[:10]
    const = np.ones_like(y)
    rows = [
        ("finetuned", "finetuned", "finetuned", 0.0, 42, None, 1.0, (right, y)),
        ("pruned_ka_s0.9_seed42", "pruned", "ka", 0.9, 42, 2.0, 0.9, (wrong90, y)),
        ("pruned_ka_s0.9_seed43", "pruned", "ka", 0.9, 43, 2.0, 1.0, (right, y)),
        ("pruned_gm_s0.9_seed42", "pruned", "gm", 0.9, 42, 2.0, 0.5, (const, y)),
    ]
    run = _run_with_units(tmp_path, rows)
    s = evidence.summary(run, ("accuracy",), n_boot=500)
    ka = s[s.method == "ka"].iloc[0]
    assert ka.seeds == 2 and ka["mean"] == pytest.approx(0.95) and ka.teacher == 1.0
    assert ka.low < 0.95 < ka.high and ka.constant == 0.5 and ka.of_teacher == pytest.approx(0.95)
    gm = s[s.method == "gm"].iloc[0]
    assert gm["mean"] == 0.5 and gm.low <= 0.5 <= gm.high
    assert set(evidence.separated(s, "accuracy").method) == {"finetuned", "ka"}
    res = evidence.unit_results(run)
    assert list(res.columns[:7]) == evidence.RESULT_COLUMNS and len(res) == 4


def test_separation_from_the_constant_answer_is_paired(tmp_path):
    """MRPC-like dev set (408 examples, 68% positive): a student that answers "positive" except on 15
    negatives it gets right. Its own interval includes the constant answer's 68.4, but scored on the
    same example draws it is above it on every draw that has one of those 15: the paired interval is
    the textbook mean +- 1.96 sd / sqrt(n) of the per-example differences and excludes 0."""
    n, pos = 408, 279
    y = np.array([1] * pos + [0] * (n - pos))
    student = np.ones(n, dtype=y.dtype)
    student[pos : pos + 15] = 0  # right on 15 negatives
    rows = [
        ("finetuned", "finetuned", "finetuned", 0.0, 42, None, 1.0, (y, y)),
        ("pruned_ka_s0.8_seed42", "pruned", "ka", 0.8, 42, None, float((student == y).mean()), (student, y)),
        ("pruned_gm_s0.8_seed42", "pruned", "gm", 0.8, 42, None, pos / n, (np.ones(n, dtype=y.dtype), y)),
    ]
    s = evidence.summary(_run_with_units(tmp_path, rows), ("accuracy",), n_boot=4000)
    ka = s[s.method == "ka"].iloc[0]
    assert ka.constant == pytest.approx(pos / n)
    assert ka.low < ka.constant  # the unpaired interval includes the constant answer...
    d = (student == y).astype(float) - (y == 1).astype(float)  # per-example: student right - constant right
    assert ka.above == pytest.approx(d.mean())
    assert (ka.above_high - ka.above_low) / 2 == pytest.approx(1.96 * d.std() / math.sqrt(n), rel=0.15)
    assert ka.above_low > 0  # ...but paired it is above it
    gm = s[s.method == "gm"].iloc[0]  # the constant answer itself: exactly 0, never separated
    assert (gm.above, gm.above_low, gm.above_high) == (0.0, 0.0, 0.0)
    assert list(evidence.separated(s, "accuracy").method) == ["finetuned", "ka"]


def test_difference_between_two_methods_of_a_run(tmp_path):
    y = np.array([0, 1] * 50)
    wrong = lambda k: np.where(np.arange(100) < k, 1 - y, y)  # noqa: E731
    rows = [
        ("finetuned", "finetuned", "finetuned", 0.0, 42, None, 1.0, (y, y)),
        ("pruned_ka_s0.9_seed42", "pruned", "ka", 0.9, 42, 2.0, 0.9, (wrong(10), y)),
        ("pruned_ka_s0.9_seed43", "pruned", "ka", 0.9, 43, 2.0, 0.8, (wrong(20), y)),
        ("pruned_gm_s0.9_seed42", "pruned", "gm", 0.9, 42, 2.0, 0.7, (wrong(30), y)),
    ]
    run = _run_with_units(tmp_path, rows)
    d, lo, hi, ka, gm = evidence.difference(run, "ka", "gm", 0.9, 2.0, "accuracy", n_boot=500)
    assert (ka, gm) == (2, 1) and d == pytest.approx(0.85 - 0.7)
    assert lo > 0 and hi < 0.3  # gm's mistakes include both of ka's seeds'
    assert evidence.difference(run, "ka", "sd", 0.9, 2.0, "accuracy") is None
    assert evidence.difference(run, "ka", "gm", 0.9, 1.0, "accuracy") is None  # no unit at that budget


def test_overtakes_reads_the_curve():
    t = pd.DataFrame(
        {
            "method": ["ka"] * 4 + ["gm"] * 4,
            "budget": [0.25, 0.5, 1, 2] * 2,
            "mean": [0.5, 0.7, 0.8, 0.85, 0.6, 0.65, 0.82, 0.8],
            "sparsity": 0.95,
            "metric": "accuracy",
        }
    )
    assert evidence.overtakes(t, "ka", "gm", 0.95, "accuracy") == 2  # ahead at 0.5, behind at 1, ahead at 2
    assert evidence.overtakes(t, "gm", "ka", 0.95, "accuracy") is None
    t.loc[t.method == "ka", "mean"] = 0.9
    assert evidence.overtakes(t, "ka", "gm", 0.95, "accuracy") == 0.25


def test_reference_levels_name_the_score_metric(tmp_path):
    y = np.array([1] * 7 + [0] * 3)
    rows = [
        ("finetuned", "finetuned", "finetuned", 0.0, 42, None, 0.9, (y, y)),
    ]
    run = _run_with_units(tmp_path, rows)
    m = run.metrics()
    assert evidence.score_metric(m) == "accuracy"
    levels = evidence.reference_levels(m, run.unit_table("predictions"), "score")
    assert levels == {"fine-tuned teacher": 0.9, "constant answer": 0.7}


def test_overtakes_reads_every_budget_either_method_has():
    """Knowledge-aware has no unit at budget 1, where gradual magnitude may lead: the streak starts
    again after it; a baseline never ahead gives the first budget; ties are not ahead."""
    rows = [("ka", 0.25, 0.70), ("ka", 0.5, 0.80), ("ka", 2.0, 0.90)]
    rows += [("gm", 0.25, 0.60), ("gm", 0.5, 0.70), ("gm", 1.0, 0.95), ("gm", 2.0, 0.80)]
    t = pd.DataFrame([{"metric": "accuracy", "sparsity": 0.9, "method": m, "budget": b, "mean": v} for m, b, v in rows])
    assert evidence.overtakes(t, "ka", "gm", 0.9, "accuracy") == 2.0
    full = pd.concat([t, t.iloc[[0]].assign(budget=1.0, mean=0.96)], ignore_index=True)
    assert evidence.overtakes(full, "ka", "gm", 0.9, "accuracy") == 0.25
    tie = full.assign(mean=0.5)
    assert evidence.overtakes(tie, "ka", "gm", 0.9, "accuracy") is None


def test_a_unit_scored_on_other_dev_labels_gets_no_interval(tmp_path):
    """Every unit's predictions must be on the first unit's dev examples: a table of another length
    or with other labels is not stacked against them (no crash, no silent mis-scoring); the unit
    keeps its stored score with no interval."""
    y = np.array([0, 1] * 50)
    other = np.array([1, 0] * 50)  # the same length, other labels (another order)
    rows = [
        ("finetuned", "finetuned", "finetuned", 0.0, 42, None, 1.0, (y, y)),
        ("pruned_ka_s0.9_seed42", "pruned", "ka", 0.9, 42, None, 1.0, (other, other)),
        ("pruned_gm_s0.9_seed42", "pruned", "gm", 0.9, 42, None, 0.9, (y[:90], y[:90])),
    ]
    s = evidence.summary(_run_with_units(tmp_path, rows), ("accuracy",), n_boot=100).set_index("method")
    assert s.loc["ka", "mean"] == 1.0 and math.isnan(s.loc["ka", "low"]) and math.isnan(s.loc["ka", "above_low"])
    assert s.loc["gm", "mean"] == 0.9 and math.isnan(s.loc["gm", "low"])
    run = RunStore(tmp_path).open_run("r")
    assert evidence.difference(run, "ka", "gm", 0.9, None, "accuracy") is None


def test_multiclass_f1_and_matthews_take_the_reference_implementation():
    y = np.array([0, 1, 2, 2, 1, 0, 2, 1, 0, 0])
    p = np.array([0, 2, 2, 2, 1, 0, 1, 1, 0, 2])
    assert evidence.metric_value("matthews", p, y) == pytest.approx(METRICS["matthews"](p, y))
    lo = evidence.bootstrap([p], y, "matthews", n_boot=50)
    assert lo[0] == pytest.approx(METRICS["matthews"](p, y))


def test_the_report_says_what_it_could_not_test():
    """No stored predictions: the separation table shows no number and says why, the goal check
    names no interval overlap, and a method without budget units is "not measured"."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("evidence_bench", root / "benchmarks" / "evidence.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    nan = math.nan
    base = {"stage": "pruned", "metric": "accuracy", "seeds": 1, "teacher": 0.9, "constant": 0.5, "of_teacher": nan}
    base |= {"low": nan, "high": nan, "above": nan, "above_low": nan, "above_high": nan}
    base |= {"examples_seen": 100.0, "train_seconds": 1.0}
    s = pd.DataFrame(
        [base | {"method": m, "sparsity": 0.95, "budget": 2.0, "mean": v}
         for m, v in (("knowledge-aware", 0.85), ("gradual-magnitude", 0.80), ("small-dense", 0.82))]
        + [base | {"method": "knowledge-aware", "sparsity": 0.95, "budget": 1.0, "mean": 0.8}]
    )  # fmt: skip
    sep = bench.separation_section(s, ["accuracy"], 2.0)
    assert "nan" not in sep and "– (no stored predictions)" in sep
    assert "- knowledge-aware: accuracy not tested (no stored predictions)." in sep
    goal = "\n".join(bench.goal_check(s, "accuracy", 0.95, 2.0))
    assert "not known" in goal and "overlap" not in goal and "has no interval to compare" in goal
    curves = bench.budget_section(s, "accuracy")
    assert "knowledge-aware vs gradual-magnitude at 95% (means): ahead from a budget of 2 epochs" in curves
