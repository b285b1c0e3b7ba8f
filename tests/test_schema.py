"""kaviz.core.schema: each selector on a hand-made knowledge table with every kind of row."""

import pandas as pd
import pytest

from kaviz.core import schema


def table():
    rows = [
        ("finetuned", 0, -1, "linear_cka"),  # per layer, compared
        ("finetuned", 1, -1, "linear_cka"),
        ("finetuned", 1, 0, "js"),  # per head
        ("self", 1, 2, "attention_entropy"),  # per head, own
        ("self", 1, -1, "probe_accuracy"),  # per layer, own
        ("self", -1, -1, "general_sts_spearman"),  # per model
        ("finetuned", -1, -1, "attribution_spearman"),
    ]
    return pd.DataFrame(rows, columns=["reference", "layer", "head", "metric"])


def test_kinds_of_row():
    k = table()
    assert list(schema.layer_rows(k).metric) == ["linear_cka", "linear_cka", "probe_accuracy"]
    assert list(schema.head_rows(k).metric) == ["js", "attention_entropy"]
    assert list(schema.model_rows(k).metric) == ["general_sts_spearman", "attribution_spearman"]
    assert list(schema.compared(schema.head_rows(k)).metric) == ["js"]
    assert list(schema.own(schema.layer_rows(k)).metric) == ["probe_accuracy"]
    assert len(schema.whole_or_heads(k, per_head=True)) == 2 and len(schema.whole_or_heads(k, False)) == 5


def test_metric_families():
    k = table()
    assert schema.probe_metrics(k) == ["probe_accuracy"]
    assert schema.general_metrics(k) == ["general_sts_spearman"]
    assert schema.attribution_metrics(k) == ["attribution_spearman"]
    assert schema.family_label("general_sts_spearman") == "sts_spearman"
    assert schema.family_label("linear_cka") == "linear_cka"
    assert schema.is_self("self") and not schema.is_self("finetuned")


def test_over_seeds_by_hand():
    rows = pd.DataFrame({"method": ["a", "a", "b"], "sparsity": [0.9, 0.9, 0.9], "value": [0.5, 0.7, 0.2]})
    out = schema.over_seeds(rows, ["method", "sparsity"])
    assert list(out.columns) == ["method", "sparsity", "mean", "std", "lo", "hi", "n_seeds"]
    a = out.iloc[0]
    assert (a["mean"], a.lo, a.hi, a.n_seeds) == (0.6, 0.5, 0.7, 2)
    assert abs(a["std"] - 0.1414213562373095) < 1e-12  # sample std of 0.5, 0.7
    assert pd.isna(out.iloc[1]["std"]) and out.iloc[1].n_seeds == 1


def test_shown_scores_scales_task_scores_only():
    df = pd.DataFrame(
        {
            "unit": ["u"] * 4,
            "metric": ["score", "f1", "encoder_sparsity", "nonzero_encoder_params"],
            "value": [0.893, 0.8125, 0.9, 1000],
        }
    )
    out = schema.shown_scores(df)
    assert out["value"].tolist() == pytest.approx([89.3, 81.25, 0.9, 1000])
    assert df["value"].tolist() == pytest.approx([0.893, 0.8125, 0.9, 1000])  # the input is left alone
    assert schema.shown_score(0.5) == 50 and schema.shown_score(None) is None


def test_score_axes_stay_inside_the_metrics_range():
    assert schema.score_axis_range([89.3], "accuracy") == pytest.approx([88.3, 90.3])  # not -50..150
    assert schema.score_axis_range([0.5, 99.8], "f1") == pytest.approx([0.0, 100.0])  # padded, clamped
    assert schema.score_axis_range([-20.0, 40.0], "matthews") == pytest.approx([-23.0, 43.0])
    assert schema.score_axis_range([10.0, 40.0], "score")[0] == pytest.approx(8.5)
    assert schema.score_axis_range([0.93], "linear_cka") is None
    assert schema.score_axis_range([float("nan")], "accuracy") is None
