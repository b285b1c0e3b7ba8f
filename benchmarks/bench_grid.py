"""Grid throughput: one process with every core against whole units across processes.

    python benchmarks/bench_grid.py [--model packaged|tiny] [--processes 2] [--steps 40]

The same small grid (the built-in demo task, the teacher, then knowledge-aware, gradual-magnitude
and small-dense at 90% and 95%: 6 student units of ``--steps`` steps each) runs twice in fresh
stores:

- baseline: one process, ``torch`` on all N cores (``training.num_threads=N``), units one after another;
- unit-parallel: ``torchrun --nproc_per_node N ... --unit-parallel``, one thread a process, each
  process taking whole units.

It prints each one's student-phase wall time (first student unit started -> last finished, from
the manifests) and units per minute, and the ratio unit-parallel / baseline. The teacher is
trained once in both and left out of the ratio. Needs an otherwise idle machine to mean anything.
Always exits 0: a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from kaviz.core.config import PACKAGED_MODEL, TINY_MODEL, RunConfig  # noqa: E402
from kaviz.store import RunStore  # noqa: E402


def grid_config(model: str, steps: int, threads: int) -> RunConfig:
    return RunConfig.from_dict(
        {
            "name": "grid",
            "model": {"name_or_path": PACKAGED_MODEL if model == "packaged" else TINY_MODEL},
            "task": {"name": "demo", "demo_train_size": 1000, "demo_dev_size": 200, "max_length": 40},
            "training": {"max_steps": 30, "batch_size": 32, "learning_rate": 1e-4, "num_threads": threads},
            "pruning": {"max_steps": steps, "learning_rate": 1e-4, "mask_updates": 10},
            "methods": ["knowledge-aware", "gradual-magnitude", "small-dense"],
            "sparsities": [0.9, 0.95],
            "save_checkpoints": False,
            "analysis": {"enabled": False},
        }
    )


def student_phase(run_dir: Path) -> tuple[float, int]:
    """(seconds from the first student start to the last student finish, student units)."""
    units = RunStore(run_dir.parent).open_run(run_dir.name).units()
    students = units[units.stage == "pruned"]
    start = min(datetime.fromisoformat(s) for s in students.started)
    end = max(datetime.fromisoformat(s) for s in students.finished)
    return (end - start).total_seconds(), len(students)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["packaged", "tiny"], default="packaged")
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--steps", type=int, default=40, help="steps per student unit")
    a = ap.parse_args()
    n = a.processes
    tmp = Path(tempfile.mkdtemp(prefix="kaviz-bench-grid-"))
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error"}
    env.pop("WORLD_SIZE", None)
    try:
        results = {}
        for label, threads in (("baseline: 1 process", n), (f"unit-parallel: {n} processes", 1)):
            cfg = grid_config(a.model, a.steps, threads)
            path = tmp / f"{threads}.json"
            cfg.save(path)
            out = tmp / f"runs{threads}"
            if threads == 1:
                torchrun = Path(sys.executable).with_name("torchrun")
                cmd = [str(torchrun), "--nproc_per_node", str(n), "--master_addr", "127.0.0.1",
                       "--master_port", str(free_port()), "-m", "kaviz.cli", "run", str(path),
                       "--out", str(out), "--quiet", "--unit-parallel"]  # fmt: skip
                env_run = {**env, "OMP_NUM_THREADS": "1"}
            else:
                cmd = [sys.executable, "-m", "kaviz.cli", "run", str(path), "--out", str(out), "--quiet"]
                env_run = {**env, "OMP_NUM_THREADS": str(n)}
            t0 = time.perf_counter()
            res = subprocess.run(cmd, env=env_run, capture_output=True, text=True, cwd=ROOT)
            wall = time.perf_counter() - t0
            if res.returncode != 0:
                print(f"{label}: failed\n{res.stderr[-2000:]}")
                return
            secs, units = student_phase(out / "grid")
            results[label] = secs
            print(
                f"{label:<28} student phase {secs:7.1f} s for {units} units "
                f"({60 * units / secs:5.2f} units/min; whole command {wall:.1f} s)"
            )
        base, par = results.values()
        print(f"ratio unit-parallel / baseline (student phase time): {par / base:.2f} (speed-up {base / par:.2f}x)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
