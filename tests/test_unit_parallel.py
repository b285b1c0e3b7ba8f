"""Unit-parallel runs: 2 CPU processes under torchrun share one grid (whole units per process).

The teacher is trained once; every student unit runs exactly once, on one of the two processes;
each unit's metrics equal those of a one-process run of the same config (both use one thread, so
the arithmetic is the same).
"""

from __future__ import annotations

import re

import pytest

from kaviz.core.config import RunConfig
from tests.test_parallel import one_and_two_processes


def _config(tmp_path):
    cfg = RunConfig.from_dict(
        {
            "name": "up",
            "model": {"name_or_path": "tiny"},
            "task": {"name": "demo", "demo_train_size": 192, "demo_dev_size": 64, "max_length": 24},
            "training": {"max_steps": 16, "batch_size": 16, "learning_rate": 1e-3, "device": "cpu", "num_threads": 1},
            "pruning": {"max_steps": 8, "learning_rate": 5e-4, "mask_updates": 4},
            "methods": ["oneshot-magnitude", "gradual-magnitude", "knowledge-aware", "small-dense"],
            "sparsities": [0.5, 0.9],
            "extra_units": [{"methods": ["gradual-magnitude"], "budgets": [0.25]}],
            "save_checkpoints": False,
            "analysis": {"enabled": False},
        }
    )
    path = tmp_path / "up.json"
    cfg.save(path)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("unit_parallel")
    two, one, _ = one_and_two_processes(tmp, _config(tmp), "up", "--unit-parallel")
    return two, one


def test_every_unit_runs_once_on_one_process(runs):
    two, _ = runs
    assert two.status == "complete"
    m = two.manifest
    students = [u for u, e in m["units"].items() if e["stage"] == "pruned"]
    assert len(students) == 2 * 4 + 2  # methods x sparsities + the budget block
    for uid, e in m["units"].items():
        assert e["status"] == "done" and e["attempts"] == 1, uid
    workers = {m["units"][u]["worker"] for u in students}
    assert workers <= {"rank 0 of 2", "rank 1 of 2"}
    taken = re.findall(r"rank \d of 2 takes (\S+)", two.log_path.read_text())
    assert sorted(taken) == sorted(students)  # each claimed exactly once
    assert "teacher" not in " ".join(taken) and "finetuned" not in taken
    assert two.log_path.read_text().count("start finetuned") == 1


def test_units_equal_a_one_process_run(runs):
    two, one = runs
    a = two.metrics().set_index(["unit", "metric"]).value
    b = one.metrics().set_index(["unit", "metric"]).value
    assert set(a.index) == set(b.index)
    skip = {"train_seconds"}
    keys = [k for k in b.index if k[1] not in skip]
    diff = (a[keys] - b[keys]).abs()
    assert diff.max() <= 1e-6, diff.sort_values().tail()
    assert two.units().set_index("unit").budget.equals(one.units().set_index("unit").budget)
