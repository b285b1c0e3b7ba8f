"""Listing and opening a run store of 50 and 500 runs.

    python benchmarks/bench_store.py [--sizes 50 500] [--repeat 5]

Builds each store with the store API in a temporary folder: runs shaped like a replication run
(31 units: teacher and five methods at four sparsities, a second seed at two; every unit done with
its metrics, sparsity and history tables). Times, as the best of ``--repeat``:

- ``list_runs()``: one row per run (what ``kaviz runs`` and the app's sidebar read);
- ``open_run()`` + ``manifest``: opening one run by name;
- ``metrics()`` of one run: the tidy metric table the pages draw from.

Baseline in the same run: reading (``json.load``) every manifest of the store with no kaviz code,
so the listing's figure reads as a ratio to the file reads it cannot avoid. Target: listing 500 runs
< 2 s. Always exits 0: a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from kaviz.core.config import RunConfig  # noqa: E402
from kaviz.stages.pipeline import plan_units  # noqa: E402
from kaviz.store import RunStore  # noqa: E402

TARGET_LIST_500 = 2.0


def build(root: Path, n: int) -> None:
    cfg = RunConfig.from_dict(
        {"name": "r", "task": {"name": "sst2"}, "extra_seeds": [43], "extra_seed_sparsities": [0.9, 0.95]}
    )
    units = plan_units(cfg)
    store = RunStore(root)
    history = pd.DataFrame({"step": [10.0, 20.0, 30.0], "loss": [0.9, 0.7, 0.6]})
    sparsity = pd.DataFrame({"layer": [0, 1], "matrix": ["query", "key"], "sparsity": [0.9, 0.9]})
    d = cfg.to_dict()
    d["name"] = "run0000"
    run = store.create_run(d, units=units)
    for u in units:
        run.start_unit(u["unit"])
        rows = [{"metric": "score", "value": 0.8}, {"metric": "encoder_sparsity", "value": u["sparsity"]}]
        run.finish_unit(u["unit"], rows, tables={"history": history, "sparsity": sparsity})
    run.set_status("complete")
    template = json.loads((run.path / "manifest.json").read_text(encoding="utf-8"))
    for i in range(1, n):  # copies of the first run, each with its own name (building through the API is slow)
        name = f"run{i:04d}"
        shutil.copytree(run.path, root / name)
        m = {**template, "run_id": name, "config": {**template["config"], "name": name}}
        (root / name / "manifest.json").write_text(json.dumps(m), encoding="utf-8")


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def measure(n: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory(prefix="kaviz-bench-store-") as tmp:
        root = Path(tmp) / "runs"
        t0 = time.perf_counter()
        build(root, n)
        built = time.perf_counter() - t0
        store = RunStore(root)

        def baseline():
            for p in root.iterdir():
                with open(p / "manifest.json", encoding="utf-8") as f:
                    json.load(f)

        base = best(baseline, repeat)
        listing = best(store.list_runs, repeat)
        assert len(store.list_runs()) == n
        middle = f"run{n // 2:04d}"
        opening = best(lambda: store.open_run(middle).manifest, repeat)
        metrics = best(lambda: store.open_run(middle).metrics(), repeat)
        verdict = ("PASS" if listing < TARGET_LIST_500 else "FAIL") if n >= 500 else ""
        print(f"{n:>5} {built:>8.1f} {base:>16.3f} {listing:>12.3f} {listing / base:>6.1f} {opening:>8.4f} "
              f"{metrics:>10.4f}  {verdict}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 500])
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args(argv)
    print(f"{'runs':>5} {'build s':>8} {'json baseline s':>16} {'list_runs s':>12} {'ratio':>6} {'open s':>8} "
          f"{'metrics s':>10}  verdict")  # fmt: skip
    for n in a.sizes:
        measure(n, a.repeat)
    print(f"\ntarget: list_runs of 500 runs < {TARGET_LIST_500} s; ratio = list_runs / reading every manifest")
    return 0


if __name__ == "__main__":
    sys.exit(main())
