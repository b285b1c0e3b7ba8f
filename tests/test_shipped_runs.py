"""The runs shipped in assets/runs (tables only): every page renders each of them without an
exception or an error box, and the app opens on the featured showcase."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from kaviz.store import RunStore
from tests.test_app import navigation_only  # noqa: F401  (autouse fixture)

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "assets" / "runs"
PAGES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "pages").glob("[0-9]_*.py"))
SHIPPED = sorted(p.name for p in ASSETS.iterdir() if (p / "manifest.json").is_file())


@pytest.fixture(scope="module")
def listing():
    return RunStore(ASSETS).list_runs()


def test_the_app_opens_on_the_featured_run(listing, monkeypatch):
    featured = listing[listing.featured.fillna(False).astype(bool)]
    if featured.empty:
        pytest.skip("no featured run shipped")
    monkeypatch.setenv("KAVIZ_RUNS", str(ASSETS))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception
    assert at.sidebar.selectbox(key="app_run").value == str(ASSETS / featured.run_id.iloc[0])


@pytest.mark.parametrize("run_id", SHIPPED)
def test_every_page_renders_a_shipped_run(run_id, monkeypatch):
    monkeypatch.setenv("KAVIZ_RUNS", str(ASSETS))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)
    at.run()
    at.sidebar.selectbox(key="app_run").set_value(str(ASSETS / run_id)).run()
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, (run_id, page, at.exception)
        assert not at.error, (run_id, page, [e.value for e in at.error])


def test_the_showcase_shows_what_pruning_buys(monkeypatch):
    """The showcase's inference table (measured when it was analysed) behind the What-pruning-buys
    page: the teacher's dense row is 1x by construction, and the figure draws every timed row."""
    from tests.test_app import figures

    if "showcase-sst2" not in SHIPPED:
        pytest.skip("showcase-sst2 not shipped")
    run = RunStore(ASSETS).open_run("showcase-sst2")
    inference = run.unit_table("inference")
    if inference.empty:
        pytest.skip("the shipped showcase has no inference table yet")
    teacher = inference[(inference.unit == "finetuned") & (inference.variant == "dense")]
    assert (teacher.speedup == 1.0).all()
    monkeypatch.setenv("KAVIZ_RUNS", str(ASSETS))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)
    at.run()
    at.sidebar.selectbox(key="app_run").set_value(str(ASSETS / "showcase-sst2")).run()
    at.switch_page("pages/9_inference.py").run()
    assert not at.exception
    (fig,) = figures(at)
    drawn = sum(len(t.x) for t in fig.data if t.name not in ("Pareto front", "fine-tuned teacher (dense)"))
    timed = inference[(inference.batch_size == 32) & inference.median_s.notna()]
    students = timed[timed.unit.str.startswith("pruned_")]
    assert drawn == len(students)
    assert [t for t in fig.data if t.name == "fine-tuned teacher (dense)"][0].x[0] == 1.0
