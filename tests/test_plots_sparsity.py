"""The one "value over sparsity" figure builder (kaviz.views.plots_sparsity) on small hand-made
frames: lines, seed bands, markers-only points, and the teacher / pre-trained / constant-answer levels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kaviz.core.registry import STAGE_COLORS
from kaviz.views import plots_sparsity as ps
from tests.helpers import sample_metrics


@pytest.fixture
def metrics() -> pd.DataFrame:
    return sample_metrics()


def by_name(fig):
    return {t.name: t for t in fig.data}


# ----- accuracy vs sparsity -----------------------------------------------------------------------


def test_accuracy_vs_sparsity_lines_band_and_teacher(metrics):
    before = metrics.copy()
    fig = ps.accuracy_vs_sparsity(metrics)
    pd.testing.assert_frame_equal(metrics, before)  # input untouched
    t = by_name(fig)
    assert set(t) == {"oneshot-magnitude", "oneshot-magnitude spread", "small-dense", "fine-tuned teacher"}
    one = t["oneshot-magnitude"]
    assert one.mode == "lines+markers"
    assert list(one.x) == pytest.approx([0.49, 0.89])
    assert list(one.y) == pytest.approx([0.8, 0.65])
    band = t["oneshot-magnitude spread"]
    sd = np.std([0.6, 0.7], ddof=1)
    assert band.fill == "toself" and band.showlegend is False
    assert list(band.x) == pytest.approx([0.49, 0.89, 0.89, 0.49])
    assert list(band.y) == pytest.approx([0.8, 0.65 + sd, 0.65 - sd, 0.8])
    assert t["small-dense"].mode == "markers"
    teacher = t["fine-tuned teacher"]
    assert teacher.line.dash == "dash" and list(teacher.y) == [0.9, 0.9] and teacher.x[0] == 0.0
    assert fig.layout.yaxis.title.text == "score"
    assert fig.layout.xaxis.title.text == "encoder sparsity (measured)"


def test_accuracy_vs_sparsity_options(metrics):
    fig = ps.accuracy_vs_sparsity(metrics, "f1", x="target", show_pretrained=True, spread="range")
    t = by_name(fig)
    assert list(t["oneshot-magnitude"].x) == [0.5, 0.9]
    assert list(t["oneshot-magnitude"].y) == pytest.approx([0.7, 0.55])
    assert list(t["oneshot-magnitude spread"].y) == pytest.approx([0.7, 0.6, 0.5, 0.7])  # min-max
    assert list(t["pre-trained"].y) == [0.4, 0.4] and t["pre-trained"].line.dash == "dot"
    assert fig.layout.yaxis.title.text == "f1"


def test_accuracy_vs_sparsity_without_measured_sparsity_uses_targets(metrics):
    fig = ps.accuracy_vs_sparsity(metrics[metrics["metric"] != "encoder_sparsity"])
    assert list(by_name(fig)["small-dense"].x) == [0.5, 0.9]


def test_accuracy_vs_sparsity_unknown_metric_names_the_present_ones(metrics):
    with pytest.raises(ValueError, match="'accuracy'.*present: encoder_sparsity, f1, score"):
        ps.accuracy_vs_sparsity(metrics, "accuracy")


def test_accuracy_vs_sparsity_only_the_teacher(metrics):
    fig = ps.accuracy_vs_sparsity(metrics[metrics["stage"] == "finetuned"])
    assert [t.name for t in fig.data] == ["fine-tuned teacher"]
    assert list(fig.data[0].x) == [0.0, 1.0]


def test_accuracy_vs_sparsity_draws_the_constant_answer(metrics):
    t = by_name(ps.accuracy_vs_sparsity(metrics, constant=0.509))
    level = t["constant answer"]
    assert list(level.y) == [0.509, 0.509] and list(level.x) == [0.0, 1.0]
    assert (level.line.color, level.line.dash) == ps.LEVEL_STYLES["constant"][:2]
    assert "constant answer" not in by_name(ps.accuracy_vs_sparsity(metrics))


def curve(run: str | None = None, shift: float = 0.0) -> pd.DataFrame:
    """Two seeds of gradual magnitude at 50% (0.7 and 0.8) and 90% (0.6, one seed), a teacher at 0.9."""
    rows = [
        dict(stage="finetuned", method="finetuned", sparsity=0.0, mean=0.9, lo=0.9, hi=0.9, n_seeds=1),
        dict(stage="pruned", method="gradual-magnitude", sparsity=0.9, mean=0.6, lo=0.6, hi=0.6, n_seeds=1),
        dict(stage="pruned", method="gradual-magnitude", sparsity=0.5, mean=0.75, lo=0.7, hi=0.8, n_seeds=2),
    ]
    df = pd.DataFrame(rows)
    df["mean"] += shift
    return df if run is None else df.assign(run=run)


def test_value_over_sparsity_sorts_by_x_bands_seeds_and_needs_its_columns():
    fig = ps.value_over_sparsity(curve(), "score", x="target", levels=ps.stage_levels(curve()))
    t = by_name(fig)
    assert list(t["gradual-magnitude"].x) == [0.5, 0.9] and list(t["gradual-magnitude"].y) == [0.75, 0.6]
    assert list(t["gradual-magnitude spread"].y) == [0.8, 0.6, 0.6, 0.7]
    assert list(t["fine-tuned teacher"].y) == [0.9, 0.9]
    assert "gradual-magnitude spread" not in by_name(ps.value_over_sparsity(curve(), "score", x="target", band=False))
    with pytest.raises(ValueError, match="measured_sparsity"):
        ps.value_over_sparsity(curve(), "score")  # measured axis without measured sparsities
    with pytest.raises(ValueError, match="x 'y'"):
        ps.value_over_sparsity(curve(), "score", x="y")


def test_value_over_sparsity_by_run_dashes_runs_and_groups_their_levels():
    both = pd.concat([curve("A"), curve("B", shift=-0.1)], ignore_index=True)
    levels = [*ps.stage_levels(both), ps.Level(0.509, ps.CONSTANT, "constant", "B")]
    t = by_name(ps.value_over_sparsity(both, "score", x="target", levels=levels))
    a, b = t["gradual-magnitude · A"], t["gradual-magnitude · B"]
    assert list(b.y) == pytest.approx([0.65, 0.5])
    assert (a.line.dash, b.line.dash) == ("solid", "dash") and (a.marker.symbol, b.marker.symbol) == (
        "circle",
        "square",
    )
    assert a.line.color == b.line.color
    teacher_b = t["fine-tuned teacher · B"]
    assert list(teacher_b.y) == pytest.approx([0.8, 0.8]) and teacher_b.line.dash == "dash"
    assert teacher_b.line.color == STAGE_COLORS["finetuned"] and teacher_b.legendgroup == "B"
    assert t["fine-tuned teacher · A"].line.dash == "solid"  # run A's dash
    assert t["constant answer · B"].line.dash == "dot" and t["constant answer · B"].legendgroup == "B"
