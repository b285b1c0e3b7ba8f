"""What pruning buys (kaviz.views.plots_costs and pages/9_inference.py) on a hand-made run whose
inference table has known timings: the cost table, the Pareto front, the figure and the page."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from kaviz.core.config import RunConfig
from kaviz.stages.pipeline import plan_units
from kaviz.store import RunStore
from kaviz.views import plots_costs as pc
from tests.test_app import APP, figures, navigation_only  # noqa: F401  (autouse fixture)

PAGE = "pages/9_inference.py"
#: unit -> score and {variant: batch-32 median seconds}; the teacher's dense median is 0.1 s.
KNOWN = {
    "pretrained": (0.5, {"dense": 0.1}),
    "finetuned": (0.9, {"dense": 0.1}),
    "pruned_wanda_s0.5_seed42": (0.85, {"dense": 0.1, "sparse": 0.05}),
    "pruned_structured_s0.5_seed42": (0.8, {"dense": 0.1, "shrunk": 0.04}),
}


def inference_rows(unit: str) -> pd.DataFrame:
    rows = []
    for variant, med in KNOWN[unit][1].items():
        for b, scale in ((1, 0.1), (32, 1.0)):
            rows.append(dict(variant=variant, batch_size=b, seq_len=16, device="cpu", median_s=med * scale,
                             disk_bytes=1000 if variant == "dense" else 400, peak_bytes=10**6, note=""))  # fmt: skip
    df = pd.DataFrame(rows)
    df["reference_median_s"] = np.where(df.batch_size == 32, 0.1, 0.01)
    df["speedup"] = df["reference_median_s"] / df["median_s"]
    df["size_ratio"] = df["disk_bytes"] / 1000
    return df


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    cfg = RunConfig.from_dict({"name": "costs", "methods": ["wanda", "structured"], "sparsities": [0.5]})
    units = plan_units(cfg)
    run = RunStore(root).create_run(cfg.to_dict(), units=units)
    for u in units:
        run.start_unit(u["unit"])
        run.finish_unit(u["unit"], [{"metric": "score", "value": KNOWN[u["unit"]][0]}],
                        tables={"inference": inference_rows(u["unit"])})  # fmt: skip
    run.set_status("complete")
    return root


@pytest.fixture
def tables(runs_dir):
    run = RunStore(runs_dir).open_run("costs")
    return run.metrics(), run.unit_table("inference")


def test_cost_table_and_pareto_front(tables):
    metrics, inference = tables
    t = pc.cost_table(metrics, inference, 32).set_index(["unit", "variant"])
    assert t.loc[("pruned_wanda_s0.5_seed42", "sparse"), "speedup"] == pytest.approx(2.0)
    assert t.loc[("pruned_structured_s0.5_seed42", "shrunk"), "speedup"] == pytest.approx(2.5)
    assert t.loc[("finetuned", "dense"), ["speedup", "score"]].tolist() == pytest.approx([1.0, 0.9])
    front = pc.pareto_front(t.reset_index(), "speedup")
    assert list(zip(front.unit, front.variant)) == [
        ("finetuned", "dense"),
        ("pruned_wanda_s0.5_seed42", "sparse"),
        ("pruned_structured_s0.5_seed42", "shrunk"),
    ]  # wanda dense (1x, 0.85) and the pre-trained model are beaten by the teacher
    size_front = pc.pareto_front(t.reset_index(), "size_ratio")
    assert set(size_front.variant) == {"dense", "sparse"} and size_front.size_ratio.min() == pytest.approx(0.4)
    assert pc.cost_table(metrics, inference.iloc[0:0], 32).empty


def test_score_vs_cost_figure(tables):
    table = pc.cost_table(*tables, 32)
    fig = pc.score_vs_cost(table)
    t = {tr.name: tr for tr in fig.data}
    assert list(t["structured · shrunk"].x) == pytest.approx([2.5]) and list(t["structured · shrunk"].y) == [0.8]
    assert t["structured · shrunk"].marker.symbol == "square" and t["wanda · sparse"].marker.symbol == "diamond"
    assert list(t["fine-tuned teacher (dense)"].x) == [1.0]
    assert list(t["Pareto front"].x) == pytest.approx([1.0, 2.0, 2.5])
    assert fig.layout.xaxis.type == "log"
    with pytest.raises(ValueError, match="x 'latency'"):
        pc.score_vs_cost(table, "latency")


def test_page_draws_score_against_speedup_and_size(runs_dir, monkeypatch):
    monkeypatch.setenv("KAVIZ_RUNS", str(runs_dir))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception
    assert at.title[0].value == "What pruning buys"
    (fig,) = figures(at)
    names = {t.name for t in fig.data}
    assert {"wanda · sparse", "structured · shrunk", "Pareto front"} <= names
    at.radio(key="costs_x").set_value("size_ratio").run()
    (fig,) = figures(at)
    assert [t for t in fig.data if t.name == "wanda · sparse"][0].x[0] == pytest.approx(0.4)
    at.selectbox(key="costs_batch").set_value(1).run()
    assert not at.exception
