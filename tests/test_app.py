"""AppTest per page on runs built with the store API (no training): what each page shows."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from streamlit.testing.v1 import AppTest

from kaviz.core.config import RunConfig
from kaviz.stages.pipeline import plan_units
from kaviz.store import RunStore

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
OVERVIEW = "pages/1_overview.py"
ACCURACY = "pages/2_accuracy_vs_sparsity.py"
ROLES = ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")
DROP = {"oneshot-magnitude": 0.4, "knowledge-aware": 0.1, "small-dense": 0.2}


def score(stage: str, method: str | None, sparsity: float, seed: int) -> float:
    """The known score of each unit: teacher 0.9, pre-trained 0.5, students lose DROP x sparsity."""
    if stage == "pretrained":
        return 0.5
    if stage == "finetuned":
        return 0.9
    return round(0.9 - DROP[method] * sparsity + (0.01 if seed == 7 else 0.0), 6)


def measured(stage: str, sparsity: float) -> float:
    return 0.0 if stage != "pruned" else round(sparsity - 0.002, 6)


def make_run(root: Path, name: str, *, finish: int | None = None, fail: str | None = None) -> list[dict]:
    """Run ``name``: 2 sparsities x 3 methods, seeds 42 and (at 0.9) 7; the first ``finish``
    units done (all by default) with hand-made metrics, sparsity and history tables."""
    cfg = RunConfig(
        name=name,
        sparsities=[0.5, 0.9],
        methods=list(DROP),
        extra_seeds=[7],
        extra_seed_sparsities=[0.9],
    )
    units = plan_units(cfg)
    run = RunStore(root).create_run(cfg.to_dict(), units=units)
    for u in units[:finish]:
        stage, method, s, seed = u["stage"], u["method"], u["sparsity"], u["seed"]
        run.start_unit(u["unit"])
        if u["unit"] == fail:
            run.fail_unit(u["unit"], "RuntimeError: out of memory\ntraceback...")
            continue
        sc = score(stage, method, s, seed)
        metrics = [
            {"metric": "score", "value": sc},
            {"metric": "accuracy", "value": sc},
            {"metric": "encoder_sparsity", "value": measured(stage, s)},
            {"metric": "nonzero_encoder_params", "value": 1000 * (1 - measured(stage, s))},
        ]
        tables = {
            "sparsity": pd.DataFrame(
                [
                    {
                        "module": f"encoder.layer.{layer}.{role}",
                        "layer": layer,
                        "role": role,
                        "numel": 100,
                        "nonzero": round(100 * (1 - measured(stage, s))),
                        "sparsity": measured(stage, s),
                    }
                    for layer in range(2)
                    for role in ROLES
                ]
            )
        }
        if stage != "pretrained":
            steps = [10.0, 20.0, 30.0]
            tables["history"] = pd.DataFrame({"step": steps, "loss": [1.0, 0.6, 0.4]})
            metrics += [{"metric": "train_seconds", "value": 1.5}, {"metric": "final_loss", "value": 0.4}]
        run.finish_unit(u["unit"], metrics, tables=tables)
    run.set_status("complete" if finish is None and fail is None else "failed" if fail else "running")
    return units


@pytest.fixture(autouse=True)
def navigation_only(monkeypatch):
    """Keep Streamlit's legacy ``pages/``-folder mode off between runs, as a served app has it
    once app.py has called ``st.navigation``.  AppTest (streamlit 1.67) turns it back on before
    every run because of our ``pages/`` folder; the pages then rerun through app.py
    (``leave_legacy_pages_mode``), which loses a button click.  test_legacy_pages_mode covers
    that path."""
    from streamlit.runtime.pages_manager import PagesManager

    init = PagesManager.__init__

    def navigation_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", navigation_init)


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    make_run(root, "t-partial", finish=2, fail="finetuned")
    make_run(root, "t")  # created last: the newest, picked by default
    return root


def _decode(obj):
    """Plotly's JSON with typed arrays ({"dtype", "bdata", "shape"}) turned into numpy arrays."""
    if isinstance(obj, dict):
        if "bdata" in obj and "dtype" in obj:
            arr = np.frombuffer(base64.b64decode(obj["bdata"]), dtype=obj["dtype"])
            shape = obj.get("shape")
            return arr.reshape([int(n) for n in str(shape).split(",")]) if shape else arr
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    return obj


def figures(at: AppTest) -> list[go.Figure]:
    """The page's plotly charts as figures."""
    return [go.Figure(_decode(json.loads(c.proto.spec))) for c in at.get("plotly_chart")]


def traces(fig: go.Figure) -> dict[str, go.Scatter]:
    """Traces by name, the seed bands (no legend entry, named "<line> spread") left out."""
    return {t.name: t for t in fig.data if not (t.name or "").endswith(" spread")}


def frame(at: AppTest, column: str) -> pd.DataFrame:
    """The first st.dataframe on the page that has ``column``."""
    for df in at.dataframe:
        value = df.value
        if column in value.columns or value.index.name == column:
            return value
    raise AssertionError(f"no dataframe with column {column!r}")


def test_overview_is_the_default_page(app, runs_dir):
    assert app.title[0].value == "Overview"
    assert app.sidebar.selectbox(key="app_run").value == str(runs_dir / "t")
    assert [m.value for m in app.metric[:2]] == ["complete", "11/11"]
    assert len(app.get("plotly_chart")) == 3  # stages, sparsity heatmap, loss curves


def test_overview_headline_table(app):
    table = frame(app, "model")
    assert list(table.index) == [
        "pre-trained",
        "fine-tuned (teacher)",
        "oneshot-magnitude",
        "knowledge-aware",
        "small-dense",
    ]
    assert list(table.columns) == ["dense score", "50% score", "50% sparsity", "90% score", "90% sparsity"]
    # scores shown ×100 (kaviz.core.schema.SCORE_SCALE), sparsities as fractions (formatted as percent)
    assert table.loc["fine-tuned (teacher)", "dense score"] == pytest.approx(90)
    assert table.loc["oneshot-magnitude", "50% score"] == pytest.approx(100 * (0.9 - 0.4 * 0.5))
    # two seeds at 90%: 0.9 - 0.36 and that + 0.01
    assert table.loc["oneshot-magnitude", "90% score"] == pytest.approx(100 * (0.9 - 0.36 + 0.005))
    assert table.loc["knowledge-aware", "90% sparsity"] == pytest.approx(0.898)


def test_overview_unit_table_and_figures(app):
    units = frame(app, "unit")
    assert len(units) == 11 and set(units["status"]) == {"done"}
    stages, heatmap, loss = figures(app)
    assert set(traces(stages)) == {"done", "labels"}
    z = heatmap.data[0].z
    assert z.shape == (2, 6) and z[0, 0] == pytest.approx(0.898)  # a unit at 90% is shown first
    assert list(loss.data[0].y) == [1.0, 0.6, 0.4]
    assert "```\nkaviz demo" not in str(app.info)


def test_overview_heatmap_follows_unit_choice(app):
    app.selectbox(key="overview_heatmap_unit").set_value("pruned_small-dense_s0.5_seed42").run()
    assert not app.exception
    heatmap = figures(app)[1]
    assert heatmap.data[0].z[1, 5] == pytest.approx(0.498)
    assert "pruned_small-dense_s0.5_seed42" in heatmap.layout.title.text


def test_overview_config_expander_shows_yaml(app):
    code = app.code[0].value
    assert "name: t\n" in code and "sparsities:" in code


def test_accuracy_page(app):
    app.switch_page(ACCURACY).run()
    assert not app.exception
    assert app.title[0].value == "Accuracy vs sparsity"
    assert app.selectbox(key="accuracy_metric").options == ["score", "accuracy"]
    (fig,) = figures(app)
    lines = traces(fig)
    assert list(lines["oneshot-magnitude"].x) == pytest.approx([0.498, 0.898])
    assert list(lines["oneshot-magnitude"].y) == pytest.approx([70, 54.5])  # scores shown ×100
    assert lines["small-dense"].mode == "markers"
    assert list(lines["fine-tuned teacher"].y) == pytest.approx([90, 90])
    assert "pre-trained" not in lines
    table = frame(app, "mean")
    assert len(table) == 2 + 6
    row = table[(table["method"] == "knowledge-aware") & (table["sparsity"] == 0.9)].iloc[0]
    assert row["n_seeds"] == 2 and row["mean"] == pytest.approx(81.5)


def test_accuracy_page_controls(app):
    app.switch_page(ACCURACY).run()
    app.selectbox(key="accuracy_metric").set_value("accuracy")
    app.radio(key="accuracy_x").set_value("target")
    app.toggle(key="accuracy_pretrained").set_value(True)
    app.run()
    assert not app.exception
    (fig,) = figures(app)
    lines = traces(fig)
    assert fig.layout.yaxis.title.text == "accuracy"
    assert list(lines["oneshot-magnitude"].x) == pytest.approx([0.5, 0.9])
    assert list(lines["pre-trained"].y) == pytest.approx([50, 50])


def test_run_picker_switches_run(app, runs_dir):
    app.selectbox(key="overview_heatmap_unit").set_value("finetuned")
    app.multiselect(key="overview_loss_units").set_value(["pruned_knowledge-aware_s0.9_seed7"])
    app.run()
    assert not app.exception
    app.sidebar.selectbox(key="app_run").set_value(str(runs_dir / "t-partial")).run()
    assert not app.exception
    assert app.metric[0].value == "failed" and app.metric[1].value == "1/11"
    assert "out of memory" in app.error[0].value
    units = frame(app, "unit")
    assert units.set_index("unit").loc["finetuned", "status"] == "failed"
    assert units.set_index("unit").loc["finetuned", "error"] == "RuntimeError: out of memory"
    # the page's own widgets survive the switch although their options changed
    assert app.selectbox(key="overview_heatmap_unit").options == ["pretrained"]
    assert not app.get("plotly_chart")[2:]  # no training history in this run yet
    # the choice is kept across pages
    app.switch_page(ACCURACY).run()
    assert not app.exception
    assert app.session_state["kaviz_run"]["run_id"] == "t-partial"
    assert app.selectbox(key="accuracy_metric").options == ["score", "accuracy"]


def test_fresh_data_when_a_unit_finishes(tmp_path, monkeypatch):
    units = make_run(tmp_path, "growing", finish=3)
    monkeypatch.setenv("KAVIZ_RUNS", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert at.metric[1].value == "3/11"
    run = RunStore(tmp_path).open_run("growing")
    run.start_unit(units[3]["unit"])
    run.finish_unit(units[3]["unit"], [{"metric": "score", "value": 0.1}])
    at.run()
    assert not at.exception
    assert at.metric[1].value == "4/11"
    assert frame(at, "unit").set_index("unit").loc[units[3]["unit"], "status"] == "done"


@pytest.mark.parametrize("page", [OVERVIEW, ACCURACY])
def test_empty_state(tmp_path, monkeypatch, page):
    monkeypatch.setenv("KAVIZ_RUNS", str(tmp_path / "nothing-here"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    if page != OVERVIEW:
        at.switch_page(page).run()
    assert not at.exception
    assert "kaviz demo --tiny --out runs" in at.info[0].value
    assert not at.get("plotly_chart")


def test_add_folder_in_sidebar(tmp_path, monkeypatch, runs_dir):
    monkeypatch.setenv("KAVIZ_RUNS", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert at.info and not at.get("plotly_chart")
    at.sidebar.text_input(key="app_new_folder").input(str(runs_dir)).run()
    assert not at.exception
    assert at.session_state["kaviz_run"]["run_id"] == "t"
    assert len(at.get("plotly_chart")) == 3


def test_unreadable_run_is_listed_not_fatal(tmp_path, monkeypatch):
    make_run(tmp_path, "ok", finish=2)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{not json")
    monkeypatch.setenv("KAVIZ_RUNS", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert at.session_state["kaviz_run"]["run_id"] == "ok"
    assert any("unreadable" in e.label for e in at.sidebar.expander)


def test_png_export_never_breaks_the_page(app):
    """Without Chrome kaleido cannot render: the page says so; with it, a Save PNG button appears."""
    app.switch_page(ACCURACY).run()
    app.button(key="accuracy_png").click().run()
    assert not app.exception
    unavailable = [c.value for c in app.caption if "PNG export is unavailable" in c.value]
    saved = [b for b in app.get("download_button") if "Save PNG" in str(b.proto)]
    assert unavailable or saved
    assert len(app.get("plotly_chart")) == 1


@pytest.mark.parametrize("page", [OVERVIEW, ACCURACY])
def test_legacy_pages_mode_still_runs_app_py(runs_dir, monkeypatch, page):
    """Streamlit's own behaviour, unpatched: from the second AppTest run on the page file would
    run alone (like a page URL opened first on a fresh server); the page reruns through app.py."""
    monkeypatch.undo()  # without navigation_only
    monkeypatch.setenv("KAVIZ_RUNS", str(runs_dir))
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page(page).run()
    at.run()
    assert not at.exception
    assert at.sidebar.selectbox(key="app_run").value == str(runs_dir / "t")
    assert at.get("plotly_chart") and not at.info


def test_overview_leads_with_findings_and_offers_the_report(runs_dir, monkeypatch):
    from kaviz.analysis.findings import findings
    from kaviz.core.config import main_budget
    from kaviz.store import RunStore

    monkeypatch.setenv("KAVIZ_RUNS", str(runs_dir))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception
    run = RunStore(runs_dir).open_run("t")
    expected = [f.text for f in findings(run.metrics(), main_budget=main_budget(run.config))]
    shown = [m.value for m in at.markdown] + [w.value for w in at.warning]
    assert expected and all(text in shown for text in expected)
    assert any("Report" in str(b.proto) for b in at.get("download_button"))
