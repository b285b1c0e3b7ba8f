"""Data-parallel runs: a tiny config in 2 CPU processes (torchrun + Accelerate over gloo).

Both processes must end each unit with the same masks and metrics (their weights are kept equal
by gradient averaging), and the run must match a single-process run of the same config within a
tolerance: the global batches are the same, but each process draws its own dropout masks and the
attention loss is averaged over each half's own padded length, so the numbers are not bitwise equal.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kaviz.core.config import RunConfig
from kaviz.stages.pipeline import summary_table
from kaviz.store import RunStore
from kaviz.train import parallel

TORCHRUN = Path(sys.executable).with_name("torchrun")


def _config(tmp_path: Path) -> Path:
    cfg = RunConfig.from_dict(
        {
            "name": "dp",
            "model": {"name_or_path": "tiny"},
            "task": {"name": "demo", "demo_train_size": 256, "demo_dev_size": 96, "max_length": 24},
            "training": {"max_steps": 24, "batch_size": 16, "learning_rate": 1e-3, "device": "cpu", "num_threads": 1},
            "pruning": {"max_steps": 12, "learning_rate": 5e-4, "mask_updates": 4},
            "methods": ["gradual-magnitude", "knowledge-aware"],
            "sparsities": [0.5],
            "save_checkpoints": False,
            "analysis": {"enabled": False},
        }
    )
    path = tmp_path / "dp.json"
    cfg.save(path)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    env.pop("WORLD_SIZE", None)
    return env


def one_and_two_processes(tmp: Path, cfg: Path, name: str, *extra: str):
    """``kaviz run cfg`` under torchrun with 2 processes (``extra`` CLI flags) into ``tmp/two`` and in
    one process into ``tmp/one``; (two-process run, one-process run, the torchrun result)."""
    if not TORCHRUN.exists() and shutil.which("torchrun") is None:
        pytest.skip("torchrun is not installed beside this Python")
    cli = [str(TORCHRUN if TORCHRUN.exists() else shutil.which("torchrun"))]
    two = subprocess.run(
        [*cli, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
         "-m", "kaviz.cli", "run", str(cfg), "--out", str(tmp / "two"), "--quiet", *extra],
        env=_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    one = subprocess.run(
        [sys.executable, "-m", "kaviz.cli", "run", str(cfg), "--out", str(tmp / "one"), "--quiet"],
        env=_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    return RunStore(tmp / "two").open_run(name), RunStore(tmp / "one").open_run(name), two


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parallel")
    return one_and_two_processes(tmp, _config(tmp), "dp")


def test_both_processes_agree_on_masks_and_metrics(runs):
    two, _, _ = runs
    records = parallel.read_records(two.path)
    assert sorted(records) == [0, 1]
    units = [r["unit"] for r in records[0]]
    assert units == [r["unit"] for r in records[1]]
    assert len(units) == 4  # pretrained, finetuned, two students
    local = {"train_seconds", "final_loss"}  # each process's own clock and its slice's loss
    for a, b in zip(records[0], records[1], strict=True):
        assert a["masks"] == b["masks"], a["unit"]
        evaluated = {k: v for k, v in a["metrics"].items() if k not in local}
        assert evaluated == {k: v for k, v in b["metrics"].items() if k not in local}, a["unit"]
        assert {"score", "accuracy", "encoder_sparsity", "nonzero_encoder_params"} <= set(evaluated)
    students = [r for r in records[0] if r["unit"].startswith("pruned")]
    assert all(r["metrics"]["encoder_sparsity"] == pytest.approx(0.5, abs=1e-3) for r in students)


def test_the_main_process_alone_wrote_a_complete_run(runs):
    two, _, _ = runs
    assert two.status == "complete"
    assert (two.units()["status"] == "done").all()
    assert "2 processes" in two.log_path.read_text()


def test_two_processes_match_one_within_tolerance(runs):
    two, one, _ = runs
    a = summary_table(two).set_index("method")
    b = summary_table(one).set_index("method")
    assert list(a.index) == list(b.index)
    for method in a.index:
        assert a.loc[method, "encoder_sparsity"] == pytest.approx(b.loc[method, "encoder_sparsity"], abs=1e-3)
        assert a.loc[method, "score"] == pytest.approx(b.loc[method, "score"], abs=0.06), method
    # the pre-trained model is not trained: identical in both
    assert a.loc["pretrained", "score"] == b.loc["pretrained", "score"]


def test_batch_must_split_evenly(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ValueError, match="divisible by the 3 processes"):
        parallel.make_accelerator("cpu", 16)


def test_single_process_needs_no_accelerator(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert parallel.make_accelerator("cpu", 16) is None
    assert torch.distributed.is_available()
