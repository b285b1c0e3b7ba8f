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
