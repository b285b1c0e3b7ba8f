"""The tables behind the app's figures (kaviz.views.ui_data) on small hand-made frames, and run listings over folders."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kaviz.core.config import RunConfig
from kaviz.store import RunStore
from kaviz.views import ui_data
from tests.helpers import metric_rows, sample_metrics  # noqa: F401


@pytest.fixture
def metrics() -> pd.DataFrame:
    return sample_metrics()


def test_sparsity_curve_table(metrics):
    t = ui_data.sparsity_curve_table(metrics)
    assert list(t["method"]) == [
        "pretrained",
        "finetuned",
        "oneshot-magnitude",
        "oneshot-magnitude",
        "small-dense",
        "small-dense",
    ]
    row = t.iloc[3]
    assert (row["sparsity"], row["measured_sparsity"], row["n_seeds"]) == (0.9, pytest.approx(0.89), 2)
    assert row["mean"] == pytest.approx(0.65) and row["hi"] - row["lo"] == pytest.approx(2 * np.std([0.6, 0.7], ddof=1))
    assert t.iloc[2]["lo"] == t.iloc[2]["hi"] == pytest.approx(0.8)  # one seed: no spread
    with pytest.raises(ValueError, match="spread"):
        ui_data.sparsity_curve_table(metrics, spread="sem")


def test_headline_table(metrics):
    h = ui_data.headline_table(metrics)
    assert h.index.name == "model"
    assert list(h.index) == ["pre-trained", "fine-tuned (teacher)", "oneshot-magnitude", "small-dense"]
    assert list(h.columns) == ["dense score", "50% score", "50% sparsity", "90% score", "90% sparsity"]
    assert h.loc["fine-tuned (teacher)", "dense score"] == 0.9
    assert math.isnan(h.loc["fine-tuned (teacher)", "50% score"])
    assert h.loc["oneshot-magnitude", "90% score"] == pytest.approx(0.65)
    assert h.loc["small-dense", "50% sparsity"] == pytest.approx(0.49)
    assert list(ui_data.headline_table(metrics, "f1").columns)[:2] == ["dense f1", "50% f1"]


def test_latex_table(metrics):
    tex = ui_data.latex_table(ui_data.headline_table(metrics))
    assert "\\begin{tabular}" in tex and "\\toprule" in tex
    assert "fine-tuned (teacher) & 0.900 & -- &" in tex
    assert "50\\% score" in tex  # escaped
    plain = ui_data.latex_table(pd.DataFrame({"a_b": [1.0]}))
    assert "a\\_b" in plain and "\\\\\n0 &" not in plain  # a RangeIndex is left out


def test_task_metrics_and_unit_values(metrics):
    extra = pd.DataFrame(metric_rows("finetuned", "finetuned", 0.0, 1, {"accuracy": 0.9, "train_seconds": 3.0}))
    both = pd.concat([metrics, extra], ignore_index=True)
    assert ui_data.task_metrics(both) == ["score", "accuracy", "f1"]
    assert ui_data.unit_values(metrics)["finetuned"] == 0.9


def test_unit_status_table_keeps_the_first_error_line():
    units = pd.DataFrame(
        {"unit": ["a", "b"], "stage": ["pruned"] * 2, "status": ["failed", "done"], "error": ["Boom: x\ntrace", None]}
    )
    t = ui_data.unit_status_table(units)
    assert t["error"].iloc[0] == "Boom: x" and pd.isna(t["error"].iloc[1])
    assert "seconds" in t.columns and units.loc[0, "error"] == "Boom: x\ntrace"


def test_the_default_folders_hold_the_shipped_runs():
    """Without KAVIZ_RUNS the app looks in the repository's assets/runs (a fresh clone opens on the
    shipped runs, not on "No runs found")."""
    root = Path(__file__).resolve().parents[1]
    assert ui_data.DEMO_RUNS == root / "assets" / "runs"
    listed = ui_data.list_runs(ui_data.runs_folders(None, root))
    assert "showcase-sst2" in set(listed["run_id"])


def test_runs_folders(tmp_path):
    assert ui_data.runs_folders(None, tmp_path) == [str(ui_data.DEMO_RUNS), str(tmp_path / "runs")]
    env = f" {tmp_path / 'a'} ,b,,{tmp_path / 'a'}"
    assert ui_data.runs_folders(env, tmp_path, extra=["c", "b"]) == [
        str(tmp_path / "a"),
        str(tmp_path / "b"),
        str(tmp_path / "c"),
    ]
    assert ui_data.runs_folders("  ", tmp_path) == ui_data.runs_folders(None, tmp_path)


def test_list_runs_over_folders(tmp_path):
    def make(folder: Path, name: str) -> None:
        RunStore(folder).create_run(
            RunConfig(name=name).to_dict(), units=[{"unit": "pretrained", "stage": "pretrained"}]
        )

    make(tmp_path / "one", "old")
    make(tmp_path / "two", "new")
    (tmp_path / "two" / "junk").mkdir()
    runs = ui_data.list_runs([str(tmp_path / "one"), str(tmp_path / "two"), str(tmp_path / "missing")])
    assert list(runs["run_id"]) == ["new", "old", "junk"]
    assert list(runs["status"]) == ["running", "running", "unreadable"]
    assert runs.loc[0, "folder"] == str(tmp_path / "two")
    assert ui_data.run_label(runs.iloc[0]) == "new · two"
    assert ui_data.run_state(runs.iloc[0]) == "running · 0/1 units · yours: two"
    assert ui_data.list_runs([str(tmp_path / "missing")]).empty


def test_featured_runs_lead_the_listing(tmp_path):
    from kaviz.store import RunStore

    store = RunStore(tmp_path / "r")
    for name in ("old-showcase", "newer", "newest"):
        store.create_run({"name": name}, units=[{"unit": "pretrained", "stage": "pretrained"}])
    store.open_run("old-showcase").set_featured()
    runs = ui_data.list_runs([str(tmp_path / "r")])
    assert list(runs.run_id) == ["old-showcase", "newest", "newer"]
    assert ui_data.run_label(runs.iloc[0]).startswith("★ old-showcase")
    assert not ui_data.run_label(runs.iloc[1]).startswith("★")
    store.open_run("old-showcase").set_featured(False)
    assert list(ui_data.list_runs([str(tmp_path / "r")]).run_id) == ["newest", "newer", "old-showcase"]


def test_run_labels_say_where_a_run_comes_from():
    shipped = {"run_id": "showcase-sst2", "folder": str(ui_data.DEMO_RUNS), "featured": True, "status": "complete"}
    mine = {
        "run_id": "mine",
        "folder": "/somewhere/runs",
        "featured": None,
        "status": "failed",
        "n_done": 1,
        "n_units": 4,
    }
    assert ui_data.run_label(shipped) == "★ showcase-sst2 · shipped"
    assert ui_data.run_label(mine) == "mine · runs"
    assert ui_data.run_state(mine) == "failed · 1/4 units · yours: runs"
    assert ui_data.run_state(shipped) == "complete · shipped"
