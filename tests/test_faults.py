"""Crash safety: ``kaviz run`` killed with SIGKILL at spread-out moments, then resumed.

Each trial starts a tiny run in a subprocess, kills it at a moment drawn from the span of an
uninterrupted run (seeded, so the trials cover early, middle and late kill points), then checks
that the store is readable as a partial run (listing, metrics, summary, ``kaviz runs``), resumes
it, and checks that the run completes, every unit finished before the kill was kept as it was,
at most the unit in flight was redone, and the final metrics equal an uninterrupted run's.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

import pandas as pd
import pytest

from kaviz.cli import main
from kaviz.core.config import RunConfig
from kaviz.stages.pipeline import Pipeline, summary_table
from kaviz.store import RunStore

TRIALS = 20
TIMING = {"train_seconds"}  # wall-clock figures differ between runs by nature


def _config() -> RunConfig:
    return RunConfig.from_dict(
        {
            "name": "faulty",
            "model": {"name_or_path": "tiny"},
            "task": {"name": "demo", "demo_train_size": 200, "demo_dev_size": 60, "max_length": 24},
            "training": {"max_steps": 40, "batch_size": 16, "learning_rate": 1e-3, "num_threads": 1},
            "pruning": {"max_steps": 30, "learning_rate": 5e-4, "mask_updates": 5},
            "methods": ["oneshot-magnitude", "gradual-magnitude", "knowledge-aware"],
            "sparsities": [0.5],
            "analysis": {"enabled": False},
        }
    )


def _metrics(run) -> dict[tuple[str, str], float]:
    m = run.metrics()
    return {(r.unit, r.metric): r.value for r in m.itertuples() if r.metric not in TIMING}


def _cmd(cfg_path: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "kaviz.cli", "run", str(cfg_path), "--out", str(out), "--quiet", "--no-analyze"]


ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run in a subprocess: its metrics, and when its units ran (seconds after start)."""
    tmp = tmp_path_factory.mktemp("faults")
    cfg_path = tmp / "faulty.json"
    _config().save(cfg_path)
    t0 = time.monotonic()
    proc = subprocess.Popen(_cmd(cfg_path, tmp / "ref"), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    manifest = tmp / "ref" / "faulty" / "manifest.json"
    first = None
    while proc.poll() is None:
        if first is None and manifest.exists():
            first = time.monotonic() - t0
        time.sleep(0.02)
    end = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr.read().decode()[-3000:]
    run = RunStore(tmp / "ref").open_run("faulty")
    return {"cfg_path": cfg_path, "metrics": _metrics(run), "first": first or 0.0, "end": end, "tmp": tmp}


def _kill_at(reference, out: Path, delay: float, after_units: int | None = None) -> None:
    """SIGKILL the run ``delay`` seconds after it starts or, with ``after_units``, ``delay`` seconds
    after its ``after_units``-th unit has started (read off the manifest as the run writes it)."""
    proc = subprocess.Popen(_cmd(reference["cfg_path"], out), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    manifest = out / "faulty" / "manifest.json"
    if after_units is not None:
        while proc.poll() is None:
            try:
                units = json.loads(manifest.read_text())["units"].values()
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                units = []
            if sum(u["status"] in ("running", "done") for u in units) >= after_units:
                break
            time.sleep(0.01)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def _readable_as_partial(out: Path) -> tuple[str, dict]:
    """What a user sees right after the kill: the listing, the run's tables, ``kaviz runs``."""
    store = RunStore(out)
    listing = store.list_runs()
    if listing.empty:  # killed before the run folder existed
        return "before the run existed", {}
    assert list(listing.run_id) == ["faulty"] and listing.status[0] != "unreadable", listing.to_dict("records")
    run = store.open_run("faulty")
    units = run.units()
    summary_table(run)  # the app's headline table
    run.metrics()
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["runs", str(out)]) == 0
    assert "faulty" in buf.getvalue()
    done = int((units.status == "done").sum())
    flight = units[units.status == "running"]["unit"].tolist()
    point = f"{done} done" + (f", {flight[0]} in flight" if flight else ", between units")
    return point, {u: _metrics_of(run, u) for u in units[units.status == "done"]["unit"]}


def _metrics_of(run, unit: str) -> dict:
    m = run.metrics()
    return {r.metric: r.value for r in m[m.unit == unit].itertuples() if r.metric not in TIMING}


@pytest.mark.slow  # ~4 min on 2 busy cores; tests/test_pipeline.py kills and resumes once in the default suite
def test_kill_and_resume_at_many_points(reference, tmp_path, one_thread, capsys):
    rng = random.Random(0)
    lo, hi = max(0.0, reference["first"] - 0.5), reference["end"] + 0.2
    cfg = RunConfig.from_dict(json.loads(reference["cfg_path"].read_text()))
    points = []
    n_units = len({u for u, _ in reference["metrics"]})
    for i in range(TRIALS):
        out = tmp_path / f"trial{i:02d}"
        if i % 2:  # soon after the start of each unit in turn, in flight or just done
            _kill_at(reference, out, 0.3 * rng.random(), after_units=1 + (i // 2) % n_units)
        else:  # at a moment stratified over the span of an uninterrupted run
            _kill_at(reference, out, lo + (hi - lo) * (i + rng.random()) / TRIALS)
        point, kept = _readable_as_partial(out)
        points.append(point)
        run = Pipeline(cfg, RunStore(out), resume=True, progress=False).run()
        assert run.status == "complete", point
        units = run.units().set_index("unit")
        assert (units.status == "done").all(), point
        redone = units[units.attempts > 1]
        assert len(redone) <= 1, (point, redone.index.tolist())  # at most the unit in flight
        assert not set(redone.index) & set(kept), point  # units finished before the kill were kept...
        for unit, before in kept.items():
            assert _metrics_of(run, unit) == before, (point, unit)  # ...as they were
        assert _metrics(run) == pytest.approx(reference["metrics"], abs=1e-9), point  # = an uninterrupted run
    covered = sorted(set(points))
    print(f"\nfault injection: {TRIALS} trials, {len(covered)} distinct kill points, 0 failures:")
    for p in covered:
        print(f"  {points.count(p)} x {p}")
    assert len(covered) >= 5, covered  # early, mid-unit and between-unit kills were all exercised


def test_partial_run_renders_in_the_app(reference, tmp_path, monkeypatch):
    """The app shows a run killed halfway as partial (no exception) on its overview page."""
    from streamlit.testing.v1 import AppTest

    out = tmp_path / "runs"
    mid = reference["first"] + 0.5 * (reference["end"] - reference["first"])
    _kill_at(reference, out, mid)
    run = RunStore(out).open_run("faulty")
    if (run.units().status == "done").all():
        pytest.skip("the run finished before the kill on this machine")
    monkeypatch.setenv("KAVIZ_RUNS", str(out))
    app = AppTest.from_file(str(Path(__file__).parents[1] / "app.py"), default_timeout=60)
    app.run()
    assert not app.exception, [e.message for e in app.exception]
    text = " ".join(str(m.value) for m in app.markdown) + " ".join(str(c.value) for c in app.caption)
    assert "faulty" in text or any("faulty" in str(s.value) for s in app.selectbox)
    assert isinstance(summary_table(run), pd.DataFrame)
