"""Budget-curve tables and figures (kaviz.views.plots_budget) on a hand-made metrics table with
known values: two seeds at one budget, one seed at the others."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kaviz.views import plots_budget as pb


def metrics() -> pd.DataFrame:
    """knowledge-aware at 90%: budgets 0.5 (seeds 1 and 2: scores 0.7 and 0.8) and 1.0 (seed 1: 0.85);
    examples seen 100 per 0.5 epoch, seconds 10 per 0.5 epoch (seed 2: 12); a teacher without budget."""
    rows = []

    def unit(name, stage, budget, seed, **values):
        for metric, value in values.items():
            rows.append(
                dict(unit=name, stage=stage, method="knowledge-aware" if stage == "pruned" else stage)
                | dict(sparsity=0.9 if stage == "pruned" else 0.0, seed=seed, budget=budget, metric=metric, value=value)
            )

    unit("finetuned", "finetuned", np.nan, 42, score=0.9)
    unit("ka_b0.5_s1", "pruned", 0.5, 1, score=0.7, examples_seen=100, train_seconds=10)
    unit("ka_b0.5_s2", "pruned", 0.5, 2, score=0.8, examples_seen=100, train_seconds=12)
    unit("ka_b1_s1", "pruned", 1.0, 1, score=0.85, examples_seen=200, train_seconds=20)
    return pd.DataFrame(rows)


def test_budget_curve_table_averages_seeds():
    m = metrics()
    assert pb.has_budget_axis(m) and not pb.has_budget_axis(m[m.budget != 1.0])
    t = pb.budget_curve_table(m).set_index("budget")
    assert list(t.columns) == [c for c in pb.CURVE_COLUMNS if c != "budget"]
    assert t.loc[0.5, ["seeds", "mean", "lo", "hi", "examples_seen", "train_seconds"]].tolist() == pytest.approx(
        [2, 0.75, 0.7, 0.8, 100, 11]
    )
    assert t.loc[1.0, ["seeds", "mean", "lo", "hi"]].tolist() == pytest.approx([1, 0.85, 0.85, 0.85])
    with pytest.raises(ValueError, match="'f1' is not in"):
        pb.budget_curve_table(m, "f1")


def test_cka_budget_table_averages_seeds_per_layer():
    k = pd.DataFrame(
        [
            dict(unit=u, stage="pruned", method="knowledge-aware", sparsity=0.9, seed=s, budget=b)
            | dict(reference="finetuned", layer=layer, ref_layer=float(layer), head=-1, metric="linear_cka", value=v)
            for u, s, b, base in (("ka_b0.5_s1", 1, 0.5, 0.5), ("ka_b0.5_s2", 2, 0.5, 0.7), ("ka_b1_s1", 1, 1.0, 0.9))
            for layer, v in ((0, 1.0), (1, base))
        ]
    )
    t = pb.cka_budget_table(k, metrics())
    layer1 = t[t.layer == 1].set_index("budget")
    assert layer1.loc[0.5, ["value", "examples_seen", "train_seconds"]].tolist() == pytest.approx([0.6, 100, 11])
    assert layer1.loc[1.0, "value"] == pytest.approx(0.9)
    assert pb.cka_budget_table(k, metrics(), kind="rbf_cka").empty


def test_budget_curves_draws_levels_and_rejects_unknown_axes():
    fig = pb.budget_curves(pb.budget_curve_table(metrics()), x="budget", refs={"fine-tuned teacher": 0.9})
    line = [t for t in fig.data if t.name == "knowledge-aware"][0]
    assert list(line.x) == [0.5, 1.0] and list(line.y) == pytest.approx([0.75, 0.85])
    band = [t for t in fig.data if t.name == "knowledge-aware spread"][0]
    assert list(band.y) == pytest.approx([0.8, 0.85, 0.85, 0.7])
    assert "fine-tuned teacher (0.9)" in {t.name for t in fig.data}
    assert [s.y0 for s in fig.layout.shapes] == [0.9]
    with pytest.raises(ValueError, match="x 'steps'"):
        pb.budget_curves(pb.budget_curve_table(metrics()), x="steps")
