"""Two runs writing to one store at once while a reader (as the app does) reads it all the time.

Every read must see a whole table or none (writes are temp file + rename, manifest updates are
locked), never raise, and both runs must complete with every unit stored.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kaviz.core.config import RunConfig
from kaviz.stages.pipeline import summary_table
from kaviz.store import RunStore

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error"}


def _config(tmp: Path, name: str, seed: int) -> Path:
    cfg = RunConfig.from_dict(
        {
            "name": name,
            "model": {"name_or_path": "tiny"},
            "task": {"name": "demo", "demo_train_size": 200, "demo_dev_size": 60, "max_length": 24},
            "training": {"max_steps": 30, "batch_size": 16, "learning_rate": 1e-3, "num_threads": 1},
            "pruning": {"max_steps": 20, "learning_rate": 5e-4, "mask_updates": 4},
            "methods": ["oneshot-magnitude", "gradual-magnitude", "knowledge-aware"],
            "sparsities": [0.5, 0.8],
            "seed": seed,
            "analysis": {"probe_size": 16, "attribution_examples": 2, "ig_steps": 2},
        }
    )
    path = tmp / f"{name}.json"
    cfg.save(path)
    return path


@pytest.mark.slow  # ~80 s: two real runs; tests/test_store.py checks concurrent writers in seconds
def test_two_writers_and_a_reader(tmp_path):
    store_root = tmp_path / "runs"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kaviz.cli",
                "run",
                str(_config(tmp_path, name, seed)),
                "--out",
                str(store_root),
                "--quiet",
            ],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        for name, seed in (("alpha", 1), ("beta", 2))
    ]
    store = RunStore(store_root)
    reads, seen_rows = 0, {}
    deadline = time.monotonic() + 600
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        listing = store.list_runs()  # the sidebar
        assert "unreadable" not in set(listing.get("status", [])), listing.to_dict("records")
        for run_id in listing.get("run_id", []):
            run = store.open_run(run_id)
            metrics = run.metrics()  # every done unit's table, each read whole (a torn file would raise)
            units = store.open_run(run_id).units()  # read after the metrics
            done = set(units[units.status == "done"]["unit"])
            assert set(metrics["unit"]) <= done  # rows only from finished units (done never goes back)
            assert len(metrics) >= seen_rows.get(run_id, 0)  # nothing that was stored disappears
            seen_rows[run_id] = len(metrics)
            summary_table(run)
            run.unit_table("history")
            run.unit_table("knowledge")
            reads += 1
        time.sleep(0.05)
    for p in procs:
        p.wait(timeout=60)
        assert p.returncode == 0, p.stderr.read().decode()[-3000:]
    assert reads >= 10, reads  # the reader really overlapped the writers
    for name in ("alpha", "beta"):
        run = store.open_run(name)
        assert run.status == "complete"
        assert (run.units().status == "done").all()
        assert set(run.metrics()["unit"]) == set(run.units()["unit"])
        assert not run.unit_table("knowledge").empty  # the analysis wrote its tables too
    assert [p.name for p in store_root.iterdir() if p.name.startswith(".")] == []  # no temp leftovers
