"""Unit-parallel runs: 2 CPU processes under torchrun share one grid (whole units per process).

The teacher is trained once; every student unit runs exactly once, on one of the two processes;
each unit's metrics equal those of a one-process run of the same config (both use one thread, so
the arithmetic is the same).
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from kaviz.core.config import RunConfig
from kaviz.store import RunStore
from tests.test_parallel import TORCHRUN, _env, _free_port, one_and_two_processes


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
            "save_checkpoints": True,  # each rank saves its own units (transformers saves on rank 0 only)
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


def test_every_rank_saves_the_weights_of_its_units(runs):
    """Each unit's checkpoint, written by whichever rank ran it, loads and equals the one-process
    run's weights (rank 1's too: transformers 5's save_pretrained writes on rank 0 only)."""
    from safetensors.torch import load_file

    two, one = runs
    workers = {u: e.get("worker") for u, e in two.manifest["units"].items()}
    assert "rank 1 of 2" in workers.values()
    for unit in workers:
        if unit == "pretrained":  # loaded from its source, never saved
            continue
        a, b = two.checkpoint_dir(unit), one.checkpoint_dir(unit)
        assert a is not None and (a / "config.json").is_file(), unit
        wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
        assert wa.keys() == wb.keys(), unit
        for k in wa:
            assert (wa[k] - wb[k]).abs().max() <= 1e-5, (unit, k)
    from kaviz.analysis.unit_view import load_unit_model

    rank1 = next(u for u, w in workers.items() if w == "rank 1 of 2")
    assert load_unit_model(two, rank1) is not None


def test_an_extension_shares_only_the_new_units(runs, tmp_path):
    """``--extend --unit-parallel`` on a finished run (how the showcase grew a 4-epoch point):
    the teacher and the stored units are left as they are, and each new unit runs once, on one rank."""
    two, _ = runs
    folder = tmp_path / "runs"
    shutil.copytree(two.path, folder / "up")
    before = {u: e["finished"] for u, e in RunStore(folder).open_run("up").manifest["units"].items()}
    grown = RunConfig.load(_config(tmp_path)).to_dict()  # the stored run's config
    grown["extra_units"] = [*grown["extra_units"], {"methods": ["knowledge-aware", "small-dense"], "seeds": [7]}]
    path = tmp_path / "grown.json"
    RunConfig.from_dict(grown).save(path)
    done = subprocess.run(
        [str(TORCHRUN), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
         "-m", "kaviz.cli", "run", str(path), "--out", str(folder), "--quiet", "--extend", "--unit-parallel"],
        env=_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = RunStore(folder).open_run("up")
    m = run.manifest
    new = sorted(set(m["units"]) - set(before))
    assert new == sorted(f"pruned_{meth}_s{s}_seed7" for meth in ("knowledge-aware", "small-dense") for s in (0.5, 0.9))
    assert run.status == "complete"
    for u, finished in before.items():  # untouched: same finish time, one attempt
        assert m["units"][u]["finished"] == finished and m["units"][u]["attempts"] == 1, u
    for u in new:
        assert m["units"][u]["status"] == "done" and m["units"][u]["attempts"] == 1, u
        assert m["units"][u]["worker"] in {"rank 0 of 2", "rank 1 of 2"}, u
    log = run.log_path.read_text()
    taken = re.findall(r"rank \d of 2 takes (\S+)", log)
    old = [u for u in before if u.startswith("pruned")]
    assert sorted(taken) == sorted([*old, *new])  # the new ones once each, nothing again
    assert log.count("start finetuned") == 1
