"""Several browser sessions at once: each opens a different page of the same app server at the
same time; every page renders with no exception or error box. The 10-session figure with a run
training beside it is ``benchmarks/bench_load.py``."""

from __future__ import annotations

import asyncio

import pytest

from tests.test_browser import ARGS, CHROMIUM, server  # noqa: F401  (module fixture: the app on hand-made runs)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: apt-get install -y chromium"),
]

PAGES = ["", "accuracy_vs_sparsity", "knowledge_flow", "attention", "inference", "compare_runs"]
RUNNING = '[data-testid="stStatusWidget"] >> text=/Running|Stop/'


async def visit(browser, url: str, timeout: float = 90.0) -> dict:
    """Open ``url`` in a session of its own and wait until the script has settled; seconds and problems."""
    loop = asyncio.get_running_loop()
    context = await browser.new_context(viewport={"width": 1300, "height": 900})
    page = await context.new_page()
    start = loop.time()
    try:
        await page.goto(url)
        await page.wait_for_selector("h1", timeout=timeout * 1000)
        quiet_since = None
        while loop.time() - start < timeout:
            busy = await page.locator(RUNNING).count() or await page.locator('[data-testid="stSpinner"]').count()
            if busy:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = loop.time()
            elif loop.time() - quiet_since > 1.0:
                break
            await page.wait_for_timeout(200)
        seconds = (quiet_since or loop.time()) - start
        return {
            "url": url,
            "seconds": seconds,
            "title": await page.locator("h1").first.inner_text(),
            "exceptions": await page.locator('[data-testid="stException"]').count(),
            "errors": await page.locator('[data-testid="stAlertContentError"]').count(),
        }
    finally:
        await context.close()


async def sessions(base: str, pages: list[str]) -> list[dict]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            return await asyncio.gather(*(visit(browser, f"{base}/{name}".rstrip("/")) for name in pages))
        finally:
            await browser.close()


def test_three_sessions_at_once_all_render(server):  # noqa: F811
    pytest.importorskip("playwright.async_api")
    results = asyncio.run(sessions(server, PAGES[:3]))
    for r in results:
        assert r["title"] and not r["exceptions"] and not r["errors"], r
    assert [r["title"] for r in results] == ["Overview", "Accuracy vs sparsity", "Knowledge flow"]
