"""Many browser sessions at once while a run trains: does every page still render, and how long?

    python benchmarks/bench_load.py [--sessions 10] [--no-training]

Starts ``streamlit run app.py`` on the shipped runs (``assets/runs``) plus a scratch runs folder in
which ``kaviz demo --tiny`` trains in the background (one thread), then opens ``--sessions``
headless Chromium sessions at once (playwright async), each on a different page in turn, and
reports every page's time from ``goto`` until the script settled, the p50/p95 over sessions, and
whether any showed an exception or an error box. Baseline in the same run: one session alone on
the same pages, so the figures read as ratios. Always exits 0: a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from tests.test_browser import ARGS, CHROMIUM, start_streamlit, stop_streamlit  # noqa: E402
from tests.test_browser_load import PAGES, visit  # noqa: E402


async def round_of(base: str, n: int) -> list[dict]:
    """``n`` sessions at once, session i on page i mod len(PAGES)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            urls = [f"{base}/{PAGES[i % len(PAGES)]}".rstrip("/") for i in range(n)]
            return await asyncio.gather(*(visit(browser, u, timeout=180) for u in urls))
        finally:
            await browser.close()


def summary(name: str, rows: list[dict]) -> str:
    t = np.array([r["seconds"] for r in rows])
    bad = sum(1 for r in rows if r["exceptions"] or r["errors"] or not r["title"])
    return (
        f"{name:<28} sessions {len(rows):>3}  p50 {np.percentile(t, 50):6.2f} s  p95 {np.percentile(t, 95):6.2f} s"
        f"  max {t.max():6.2f} s  pages with an exception/error: {bad}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--no-training", action="store_true", help="no background run")
    args = ap.parse_args()
    if not CHROMIUM.exists():
        print(f"needs {CHROMIUM}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp) / "runs"
        scratch.mkdir()
        train = None
        if not args.no_training:
            env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
            cmd = [sys.executable, "-m", "kaviz.cli", "demo", "--tiny", "--out", str(scratch), "--quiet"]
            train = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        runs = f"{ROOT / 'assets' / 'runs'},{scratch}"
        proc, url = start_streamlit("app.py", ROOT, runs, Path(tmp) / "streamlit.log")  # type: ignore[arg-type]
        try:
            for page in PAGES:  # warm the server's caches, one page at a time
                asyncio.run(one(url, page))
            t0 = time.perf_counter()
            base = [r for page in PAGES for r in asyncio.run(one(url, page))]
            loaded = asyncio.run(round_of(url, args.sessions))
            wall = time.perf_counter() - t0
        finally:
            stop_streamlit(proc)
            if train is not None:
                training = "still training" if train.poll() is None else f"training finished (exit {train.returncode})"
                train.terminate()
                train.wait(timeout=30)
            else:
                training = "no background run"
    print(f"bench_load: app on the shipped runs; {training}; {os.cpu_count()} CPU cores; wall {wall:.0f} s")
    print(summary("baseline: 1 session a page", base))
    print(summary(f"{args.sessions} sessions at once", loaded))
    p95 = np.percentile([r["seconds"] for r in loaded], 95) / max(1e-9, np.percentile([r["seconds"] for r in base], 95))
    print(f"p95 ratio loaded / baseline: {p95:.1f}x")
    for r in loaded:
        print(f"  {r['title']:<22} {r['seconds']:6.2f} s")


async def one(base: str, page: str) -> list[dict]:
    """One session alone on ``page``."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            return [await visit(browser, f"{base}/{page}".rstrip("/"), timeout=180)]
        finally:
            await browser.close()


if __name__ == "__main__":
    main()
