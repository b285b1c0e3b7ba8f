"""The real app in a real browser: `streamlit run app.py` on hand-made runs, every page visited in
headless Chromium, none showing an exception or an error.

Needs ``/usr/bin/chromium`` (``apt-get install -y chromium``) and the ``playwright`` package; skipped
otherwise.  ``KAVIZ_SCREENSHOTS=1`` saves a screenshot per page to ``docs/screenshots/`` (else to the
test's temporary folder).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.test_app_compare_newrun import RUNS, make_run

ROOT = Path(__file__).resolve().parent.parent
APP = "app.py"
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
ARGS += ["--disable-sync", "--no-first-run"]
#: Pages that draw at least one chart on the fixture runs.
WITH_CHARTS = {"overview", "accuracy_vs_sparsity", "compare_runs", "inference"}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: apt-get install -y chromium"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"streamlit exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"streamlit did not answer on {url} within {timeout}s")


def start_streamlit(script: str, cwd: Path, runs: Path, log: Path, timeout: float = 90) -> tuple[subprocess.Popen, str]:
    """``streamlit run script`` headless on a free localhost port with ``KAVIZ_RUNS=runs``; (process, url)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "KAVIZ_RUNS": str(runs), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "streamlit", "run", script, "--server.headless", "true"]
    cmd += ["--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"]
    cmd += ["--server.fileWatcherType", "none"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(url, proc, timeout=timeout)
    except BaseException:
        stop_streamlit(proc)
        raise
    return proc, url


def stop_streamlit(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    for name in RUNS:
        make_run(runs, name)
    proc, url = start_streamlit(APP, ROOT, runs, tmp_path_factory.mktemp("log") / "streamlit.log")
    try:
        yield url
    finally:
        stop_streamlit(proc)


def settle(page, charts: bool, timeout: float = 45.0) -> None:
    """Wait until the script has finished (no running indicator for a while) and, where the page
    draws charts, one has rendered."""
    page.wait_for_selector("h1", timeout=timeout * 1000)
    if charts:
        page.wait_for_selector(".js-plotly-plot", timeout=timeout * 1000)
    deadline, quiet_since = time.monotonic() + timeout, None
    running = '[data-testid="stStatusWidget"] >> text=/Running|Stop/'
    while time.monotonic() < deadline:
        busy = page.locator(running).count() or page.locator('[data-testid="stSpinner"]').count()
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > 1.0:
            return
        page.wait_for_timeout(200)
    raise AssertionError(f"{page.url} still running after {timeout}s")


@contextlib.contextmanager
def chromium_page():
    """A page of headless Debian Chromium (1400x1000), closed afterwards."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            browser.close()


def test_every_page_renders(server, tmp_path):
    shots = ROOT / "docs" / "screenshots" if os.environ.get("KAVIZ_SCREENSHOTS") == "1" else tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    with chromium_page() as page:
        page.goto(server)
        settle(page, charts=True)
        links = page.locator('[data-testid="stSidebarNavLink"]')
        hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
        names = [h.rstrip("/").rsplit("/", 1)[-1] if h.rstrip("/") != server else "overview" for h in hrefs]
        assert {"overview", "compare_runs", "new_run"} <= set(names), hrefs
        assert not page.locator('[data-testid="stAppDeployButton"]').count()  # .streamlit/config.toml: viewer toolbar
        seen = {}
        for name, href in zip(names, hrefs):
            page.goto(href)
            settle(page, charts=name in WITH_CHARTS)
            assert not page.locator('[data-testid="stException"]').count(), f"{name}: exception"
            errors = page.locator('[data-testid="stAlertContentError"]')
            assert not errors.count(), f"{name}: {errors.first.inner_text()}"
            seen[name] = (page.locator("h1").first.inner_text(), page.locator(".js-plotly-plot").count())
            if name == "compare_runs":  # the checkpoint-reading mask figures come with their toggle
                assert seen[name][1] == 4, seen[name]  # many-runs overlay, accuracy, knowledge, difference
                page.get_by_text("Show mask overlap").click()
                settle(page, charts=True)
                assert not page.locator('[data-testid="stException"]').count(), "compare_runs: exception"
                seen[name] = (seen[name][0], page.locator(".js-plotly-plot").count())
            page.screenshot(path=str(shots / f"{name}.png"), full_page=name == "compare_runs")
        assert seen["compare_runs"][0] == "Compare runs" and seen["new_run"][0] == "New run"
        assert seen["compare_runs"][1] == 6  # overlay, accuracy, knowledge, difference, mask overlap, heads


@pytest.fixture(scope="module")
def showcase_server(tmp_path_factory):
    from tests.test_app_budget import make_budget_run

    runs = tmp_path_factory.mktemp("showcase_runs")
    make_budget_run(runs, "showcase")
    make_run(runs, next(iter(RUNS)))  # newer, not featured
    proc, url = start_streamlit(APP, ROOT, runs, tmp_path_factory.mktemp("log") / "streamlit.log")
    try:
        yield url
    finally:
        stop_streamlit(proc)


def test_app_opens_on_the_showcase_and_draws_budget_curves(showcase_server, tmp_path):
    with chromium_page() as page:
        page.goto(showcase_server)
        settle(page, charts=False)
        picker = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first
        shown = (
            picker.inner_text()
            + " "
            + " ".join(
                picker.locator("input").evaluate_all(
                    "els => els.map(e => e.value || e.getAttribute('aria-label') || '')"
                )
            )
        )
        assert "★ showcase" in shown or "★ showcase" in page.locator('[data-testid="stSidebar"]').inner_text(), shown
        page.goto(f"{showcase_server}/budget_curves")
        settle(page, charts=True)
        assert page.locator("h1").first.inner_text() == "Budget curves"
        assert not page.locator('[data-testid="stException"]').count()
        assert not page.locator('[data-testid="stAlertContentError"]').count()
        assert page.locator(".js-plotly-plot").count() == 2  # score and per-layer CKA against budget
        page.screenshot(path=str(tmp_path / "budget_curves.png"), full_page=True)


@pytest.fixture(scope="module")
def shipped_server(tmp_path_factory):
    assets = ROOT / "assets" / "runs"
    if not (assets / "showcase-sst2" / "manifest.json").is_file():
        pytest.skip("the shipped showcase run is absent")
    proc, url = start_streamlit(APP, ROOT, assets, tmp_path_factory.mktemp("log") / "streamlit.log")
    try:
        yield url
    finally:
        stop_streamlit(proc)


def showcase_findings() -> list[str]:
    from kaviz.analysis.analyzer import knowledge_table
    from kaviz.analysis.findings import findings
    from kaviz.core.config import main_budget
    from kaviz.store import RunStore

    run = RunStore(ROOT / "assets" / "runs").open_run("showcase-sst2")
    tables = (run.metrics(), knowledge_table(run), run.unit_table("predictions"), run.unit_table("inference"))
    return [f.text for f in findings(*tables, main_budget=main_budget(run.config))]


def test_the_shipped_showcase_shows_findings_and_what_pruning_buys(shipped_server, tmp_path):
    """On the shipped runs the app opens on the showcase: the Overview's findings, and the score
    against measured speedup drawn from its inference table."""
    with chromium_page() as page:
        page.goto(shipped_server)
        settle(page, charts=True)
        body = page.locator('[data-testid="stMain"]').inner_text()
        assert showcase_findings()[0] in body, body[:2000]
        page.goto(f"{shipped_server}/inference")
        settle(page, charts=True)
        assert page.locator("h1").first.inner_text() == "What pruning buys"
        assert not page.locator('[data-testid="stException"]').count()
        assert not page.locator('[data-testid="stAlertContentError"]').count()
        assert page.locator(".js-plotly-plot").count() == 1
        page.screenshot(path=str(tmp_path / "inference.png"), full_page=True)


def test_attention_and_attribution_draw_maps_from_the_shipped_weights(shipped_server, tmp_path):
    """Issue 13: on first open, no run to train. The showcase keeps no weights, so its Attention page
    offers the demo, whose compact weights ship; there both pages draw the models' own maps."""
    import re

    weights_needed = "need the models' weights"
    with chromium_page() as page:
        page.goto(f"{shipped_server}/attention")
        settle(page, charts=True)
        page.get_by_role("button", name=re.compile(r"Open run demo")).click()
        settle(page, charts=True, timeout=90)
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 3", timeout=90_000)
        body = page.locator('[data-testid="stMain"]').inner_text()
        assert weights_needed not in body, body[:2000]
        assert page.locator(".js-plotly-plot").count() == 3  # per-head divergence, entropy change, the maps
        assert not page.locator('[data-testid="stException"]').count()
        page.screenshot(path=str(tmp_path / "attention.png"), full_page=True)
        page.locator('[data-testid="stSidebarNavLink"]', has_text="Attribution").click()  # same session
        settle(page, charts=True, timeout=90)
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 2", timeout=90_000)
        body = page.locator('[data-testid="stMain"]').inner_text()
        assert weights_needed not in body, body[:2000]
        assert page.locator(".js-plotly-plot").count() == 2  # agreement over sparsity, token attributions
        assert not page.locator('[data-testid="stException"]').count()
        page.screenshot(path=str(tmp_path / "attribution.png"), full_page=True)


@pytest.fixture
def empty_server(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    proc, url = start_streamlit(APP, ROOT, runs, tmp_path / "streamlit.log")
    try:
        yield url, runs
    finally:
        stop_streamlit(proc)
        from kaviz import launcher

        for name in launcher.launches(runs):
            launcher.stop(runs, name, timeout=5)


def test_the_tiny_preset_launches_learns_and_is_selected(empty_server, tmp_path):
    """Issue 14: launch the tiny preset from the form (a real `kaviz run` in the background), watch
    the training bar, then the analysis bar, reach completion, find the run selected in the
    sidebar, and check on disk that its teacher beats the constant answer."""
    from kaviz.analysis.evidence import constant_answer
    from kaviz.store import RunStore

    url, runs = empty_server
    with chromium_page() as page:
        page.goto(f"{url}/new_run")
        settle(page, charts=False)
        name = page.get_by_role("textbox", name="Run name")
        sync_api = pytest.importorskip("playwright.sync_api")
        sync_api.expect(name).to_have_value("demo-tiny", timeout=15_000)  # the tiny preset, the default
        page.get_by_role("button", name="Launch").click()
        seen_training = seen_analysis = False
        deadline = time.monotonic() + 420
        while time.monotonic() < deadline:
            body = page.locator('[data-testid="stMain"]').inner_text()
            seen_training |= "Training: " in body
            seen_analysis |= "Analysis: " in body
            if "demo-tiny · complete" in body.replace("**", ""):
                break
            assert "· failed" not in body, body[-3000:]
            page.wait_for_timeout(1000)
        else:
            raise AssertionError(f"not complete after 420 s: {body[-2000:]}")
        assert seen_training and seen_analysis, "a phase never showed its bar"
        settle(page, charts=False)
        page.screenshot(path=str(tmp_path / "new_run_done.png"), full_page=True)
        sidebar = page.locator('[data-testid="stSidebar"]')
        picker = sidebar.locator('[data-testid="stSelectbox"]').first
        shown = (picker.text_content() or "") + " ".join(
            picker.locator("input").evaluate_all("e => e.map(i => i.value)")
        )
        assert "demo-tiny · runs" in shown, shown  # selected in the run picker
        assert "complete · 17/17 units · yours: runs" in sidebar.inner_text()
        assert "no better than always answering" not in page.locator('[data-testid="stMain"]').inner_text()
    run = RunStore(runs).open_run("demo-tiny")
    assert run.status == "complete"
    m = run.metrics()
    teacher = float(m[(m.unit == "finetuned") & (m.metric == "score")].value.iloc[0])
    preds = run.unit_table("predictions")
    labels = preds[preds.unit == "finetuned"].sort_values("example").label.to_numpy()
    best, _ = constant_answer("accuracy", labels)
    assert teacher > best + 0.05, (teacher, best)
