"""The Budget curves page (AppTest) on a hand-made run with a budget axis, and the featured flag
that makes the app open on a showcase run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from kaviz.core.config import RunConfig
from kaviz.stages.pipeline import plan_units
from kaviz.store import RunStore
from tests.test_app import APP, figures, navigation_only, traces  # noqa: F401  (autouse fixture)

BUDGET = "pages/8_budget_curves.py"
METHODS = ["knowledge-aware", "gradual-magnitude"]
N_TRAIN, BATCH = 640, 32


def budget_score(method: str, sparsity: float, budget: float) -> float:
    """Known scores: knowledge-aware starts lower and overtakes gradual from 1 epoch on."""
    if method == "knowledge-aware":
        return round(0.6 + 0.1 * np.log2(budget * 4) - (sparsity - 0.9), 6)
    return round(0.75 + 0.01 * np.log2(budget * 4) - (sparsity - 0.9), 6)


def make_budget_run(root: Path, name: str = "showcase", *, featured: bool = True, knowledge: bool = True) -> None:
    cfg = RunConfig.from_dict(
        {
            "name": name,
            "task": {"name": "sst2"},
            "methods": METHODS,
            "sparsities": [0.9, 0.95],
            "pruning": {"epochs": 2.0},
            "extra_units": [{"budgets": [0.25, 0.5, 1.0]}],
        }
    )
    units = plan_units(cfg)
    run = RunStore(root).create_run(cfg.to_dict(), units=units)
    labels = np.array([1] * 60 + [0] * 40)
    for u in units:
        run.start_unit(u["unit"])
        if u["stage"] == "pruned":
            sc = budget_score(u["method"], u["sparsity"], u["budget"])
        else:
            sc = 0.9 if u["stage"] == "finetuned" else 0.5
        metrics = [{"metric": "score", "value": sc}, {"metric": "accuracy", "value": sc}]
        if u["stage"] == "pruned":
            steps = int(np.ceil(N_TRAIN / BATCH * u["budget"]))
            metrics += [
                {"metric": "examples_seen", "value": steps * BATCH},
                {"metric": "train_seconds", "value": steps * 0.5},
                {"metric": "budget_epochs", "value": steps * BATCH / N_TRAIN},
            ]
        pred = labels.copy()
        pred[: int(round((1 - sc) * len(labels)))] ^= 1
        tables = {"predictions": pd.DataFrame({"example": np.arange(100), "label": labels, "prediction": pred})}
        run.finish_unit(u["unit"], metrics, tables=tables)
        if knowledge and u["stage"] == "pruned":
            rows = [
                {"reference": "finetuned", "layer": layer, "ref_layer": float(layer), "head": -1,
                 "metric": "linear_cka", "value": min(1.0, 0.2 * layer * u["budget"] + 0.1), "pruned": False}
                for layer in range(3)
            ]  # fmt: skip
            run.write_unit_table(u["unit"], "knowledge", pd.DataFrame(rows))
    run.set_status("complete")
    if featured:
        run.set_featured()


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    from tests.test_app import make_run

    root = tmp_path_factory.mktemp("runs")
    make_budget_run(root)
    make_run(root, "newer")  # created after the showcase: newest, but not featured
    return root


def test_app_opens_on_the_featured_run(app, runs_dir):
    assert app.sidebar.selectbox(key="app_run").value == str(runs_dir / "showcase")


def test_budget_page_draws_score_and_cka_against_budget(app):
    app.switch_page(BUDGET).run()
    assert not app.exception
    assert app.title[0].value == "Budget curves"
    score, cka = figures(app)
    lines = traces(score)
    ka = [t for t in score.data if t.name == "knowledge-aware"]
    assert [t.showlegend for t in ka] == [True, False]  # one panel per sparsity, one legend entry
    assert list(ka[0].x) == [160, 320, 640, 1280]  # examples seen at 0.25 .. 2 epochs
    assert list(ka[0].y) == pytest.approx([100 * budget_score("knowledge-aware", 0.9, b) for b in (0.25, 0.5, 1, 2)])
    assert list(ka[1].y) == pytest.approx([100 * budget_score("knowledge-aware", 0.95, b) for b in (0.25, 0.5, 1, 2)])
    assert "fine-tuned teacher (90)" in lines and "constant answer (60)" in lines  # shown ×100
    assert len([a for a in score.layout.annotations if "sparse" in a.text]) == 2  # one panel per sparsity
    assert {t.name for t in cka.data} == set(METHODS)
    layer2 = [t for t in cka.data if t.name == "knowledge-aware" and t.xaxis == "x3"][0]
    assert list(layer2.y) == pytest.approx([0.2, 0.3, 0.5, 0.9])


def test_budget_page_axis_choices(app):
    app.switch_page(BUDGET).run()
    app.radio(key="budget_x").set_value("train_seconds").run()
    assert not app.exception
    score, _ = figures(app)
    ka = [t for t in score.data if t.name == "knowledge-aware"][0]
    assert list(ka.x) == [2.5, 5.0, 10.0, 20.0]
    app.selectbox(key="budget_sparsity").set_value(0.95).run()
    assert not app.exception


def test_by_sparsity_pages_show_the_main_budget_only(app):
    app.switch_page("pages/2_accuracy_vs_sparsity.py").run()
    assert not app.exception
    (fig,) = figures(app)
    ka = traces(fig)["knowledge-aware"]
    assert list(ka.y) == pytest.approx([100 * budget_score("knowledge-aware", s, 2.0) for s in (0.9, 0.95)])
    assert list(traces(fig)["constant answer"].y) == pytest.approx([60, 60])  # 60 of 100 dev labels are 1


def test_budget_page_explains_a_run_without_budgets(runs_dir, monkeypatch):
    monkeypatch.setenv("KAVIZ_RUNS", str(runs_dir))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.sidebar.selectbox(key="app_run").set_value(str(runs_dir / "newer")).run()
    at.switch_page(BUDGET).run()
    assert not at.exception
    assert "extra_units" in at.info[0].value


def test_accuracy_page_draws_bootstrap_intervals(app, runs_dir):
    """The 95% CI band: the percentile bootstrap of evidence.summary over the stored predictions,
    drawn even for one seed."""
    from kaviz.analysis import evidence

    app.switch_page("pages/2_accuracy_vs_sparsity.py").run()
    app.radio(key="accuracy_spread").set_value("95% CI").run()
    assert not app.exception
    (fig,) = figures(app)
    band = [t for t in fig.data if t.name == "knowledge-aware spread"][0]
    run = RunStore(runs_dir).open_run("showcase")
    s = evidence.summary(run, ("accuracy",), n_boot=1000)
    s = s[(s.method == "knowledge-aware") & (s.budget == 2.0)].sort_values("sparsity")
    assert list(band.y) == pytest.approx([100 * v for v in (*s.high, *s.low[::-1])])  # shown ×100
    assert (s.high > s.low).all()


def test_budget_page_draws_bootstrap_intervals_by_default(app, runs_dir):
    """Most budget points have one seed: the default band is the 95% bootstrap interval of
    evidence.summary over the stored predictions at each budget; "seed range" draws none for one seed."""
    from kaviz.analysis import evidence

    app.switch_page(BUDGET).run()
    assert not app.exception
    assert app.radio(key="budget_band").value == "95% CI"
    score, _ = figures(app)
    band = [t for t in score.data if t.name == "knowledge-aware 95% CI"][0]  # first panel: 90%
    s = evidence.summary(RunStore(runs_dir).open_run("showcase"), ("accuracy",), n_boot=1000)
    s = s[(s.method == "knowledge-aware") & (s.sparsity == 0.9) & s.budget.notna()].sort_values("budget")
    assert list(band.y) == pytest.approx([100 * v for v in (*s.high, *s.low[::-1])])  # shown ×100
    assert (s.high > s.low).all() and len(s) == 4
    assert band.mode == "lines" and band.fill == "toself"  # a shaded area: no stray vertex markers
    app.radio(key="budget_band").set_value("seed range").run()
    assert not app.exception
    score, _ = figures(app)
    assert not [t for t in score.data if t.name.endswith(("95% CI", "seed range"))]  # one seed: no range


def test_with_intervals_keeps_points_without_one_flat():
    from kaviz.views import plots_budget

    table = pd.DataFrame(
        {"method": ["a", "a"], "sparsity": [0.9, 0.9], "budget": [0.5, 1.0], "seeds": [1, 1], "mean": [70.0, 80.0],
         "lo": [70.0, 80.0], "hi": [70.0, 80.0], "examples_seen": [1.0, 2.0], "train_seconds": [1.0, 2.0]}
    )  # fmt: skip
    iv = pd.DataFrame({"method": ["a"], "sparsity": [0.9], "budget": [1.0 + 1e-12], "low": [75.0], "high": [84.0]})
    out = plots_budget.with_intervals(table, iv)
    assert list(out.columns) == list(table.columns)
    assert list(out.lo) == [70.0, 75.0] and list(out.hi) == [70.0, 84.0]
