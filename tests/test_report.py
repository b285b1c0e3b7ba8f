"""`kaviz report`: a run as one self-contained HTML page, opened offline in headless Chromium."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kaviz.cli import main
from kaviz.store import RunStore
from tests.test_browser import ARGS, CHROMIUM

ROOT = Path(__file__).resolve().parent.parent
SHOWCASE = ROOT / "assets" / "runs" / "showcase-sst2"


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    if not (SHOWCASE / "manifest.json").is_file():
        pytest.skip("the shipped showcase run is absent")
    out = tmp_path_factory.mktemp("report") / "showcase.html"
    assert main(["report", str(SHOWCASE), "-o", str(out)]) == 0
    return out


def test_report_holds_findings_figures_tables_and_config(report):
    from kaviz.analysis.analyzer import knowledge_table
    from kaviz.analysis.findings import findings
    from kaviz.core.config import main_budget

    text = report.read_text(encoding="utf-8")
    run = RunStore(SHOWCASE.parent).open_run("showcase-sst2")
    expected = findings(run.metrics(), knowledge_table(run), run.unit_table("predictions"),
                        run.unit_table("inference"), main_budget=main_budget(run.config))  # fmt: skip
    stored = json.loads(re.search(r"id='kaviz-findings'>(.*?)</script>", text, re.S).group(1))
    assert stored == [f.text for f in expected] and len(stored) >= 3
    assert text.count('class="plotly-graph-div"') >= 5
    assert text.count('<script type="text/javascript">/**\n* plotly.js') <= 1  # plotly.js inlined once
    assert "<h2>Headline</h2>" in text and "showcase-sst2" in text and "name: showcase-sst2" in text
    assert not re.search(r"<script[^>]+src=", text)  # nothing fetched from elsewhere


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: apt-get install -y chromium")
def test_report_opens_offline_in_chromium(report):
    sync_api = pytest.importorskip("playwright.sync_api")
    outside: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})

            def guard(route):
                url = route.request.url
                if url.startswith(("file:", "data:", "blob:")):
                    route.continue_()
                else:
                    outside.append(url)
                    route.abort()

            page.route("**/*", guard)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(report.as_uri())
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 5", timeout=60000)
            assert page.locator(".finding").count() >= 3
            assert not errors, errors
        finally:
            browser.close()
    assert not outside, outside
