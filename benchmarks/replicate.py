"""Replicate the paper's table at small scale: real GLUE data, the packaged all-MiniLM-L6-v2.

    python benchmarks/replicate.py                      # all of SST-2, MRPC, CoLA (resumable)
    python benchmarks/replicate.py --tasks mrpc         # one task
    python benchmarks/replicate.py --report-only        # rebuild the tables from the runs so far

For each task it runs ``benchmarks/configs/replicate-<task>.yaml``: the teacher, then all five
methods at sparsities 0.5/0.8/0.9/0.95, a second seed at 0.9 and 0.95. The budget (training
subset, sequence length, steps) is stated in each config and sized for 2 CPU cores; a GPU is used
when present. Runs go to the run store ``--out`` (default ``runs/``, with checkpoints). Rerunning the
same command continues where it stopped: finished units are kept. After each task it analyses the
run (knowledge tables), publishes a tables-only copy to ``--publish`` (default ``assets/runs/``, which
the app shows), and rewrites ``benchmarks/results/replicate.csv`` and ``.md``: task metric per method
per sparsity (mean ± sample std over seeds), teacher and small-dense rows, non-zero encoder
weights, and the paper's two claims checked.

The GLUE TSVs are read from ``--data`` (default ``../shared/data/glue``); a task whose folder is
missing is skipped with a message.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pandas as pd  # noqa: E402

from kaviz.cli import _set_overrides  # noqa: E402
from kaviz.core.config import RunConfig  # noqa: E402
from kaviz.stages.pipeline import summary_table  # noqa: E402
from kaviz.store import RunStore, StoreError  # noqa: E402

TASKS = {"sst2": "SST-2", "mrpc": "MRPC", "cola": "CoLA"}
METRIC = {"sst2": "accuracy", "mrpc": "F1", "cola": "Matthews corr."}
CONFIGS = ROOT / "benchmarks" / "configs"
RESULTS = ROOT / "benchmarks" / "results"
METHOD_ORDER = ["oneshot-magnitude", "gradual-magnitude", "knowledge-aware", "small-dense", "upstream-magnitude"]
CLAIM_KEEP = 0.97  # knowledge-aware at 90% keeps >= 97% of the teacher's dev score (goal 99%)


def task_config(task: str, data: Path, overrides: list[str], suffix: str = "") -> RunConfig:
    cfg = RunConfig.load(CONFIGS / f"replicate-{task}.yaml").to_dict()
    cfg["task"]["path"] = str(data / TASKS[task])
    cfg["name"] += suffix
    return RunConfig.from_dict(_set_overrides(cfg, overrides) if overrides else cfg)


def run_task(cfg: RunConfig, out: Path, analyze: bool) -> None:
    from kaviz.stages.pipeline import Pipeline

    t0 = time.perf_counter()
    run = Pipeline(cfg, RunStore(out), resume=True, echo=lambda m: print(m, file=sys.stderr, flush=True)).run()
    print(f"{cfg.name}: units done in {time.perf_counter() - t0:.0f} s this session", file=sys.stderr)
    if analyze and cfg.analysis.enabled:
        from kaviz.analysis.analyzer import Analyzer

        t0 = time.perf_counter()
        done = Analyzer(run).run()
        print(f"{cfg.name}: analysed {len(done)} unit(s) in {time.perf_counter() - t0:.0f} s", file=sys.stderr)


def publish(out: Path, run_id: str, dest: Path) -> None:
    """Replace ``dest/run_id`` with a tables-only copy of the run (no checkpoints)."""
    run = RunStore(out).open_run(run_id)
    target = dest / run_id
    if target.exists():
        shutil.rmtree(target)
    run.copy_to(dest)


def results(out: Path, tasks: list[str], suffix: str = "") -> pd.DataFrame:
    """One row per (task, method, sparsity): mean and sample std of the task metric over seeds."""
    rows = []
    for task in tasks:
        try:
            run = RunStore(out).open_run(f"replicate-{task}{suffix}")
        except StoreError:
            continue
        s = summary_table(run)
        if s.empty:
            continue
        s = s.assign(method=s["method"].where(s["stage"] == "pruned", s["stage"]))
        for (method, sparsity), g in s.groupby(["method", "sparsity"], sort=False):
            rows.append(
                {
                    "task": task,
                    "metric": METRIC[task],
                    "method": method,
                    "sparsity": float(sparsity),
                    "seeds": len(g),
                    "mean": 100 * g["score"].mean(),
                    "std": 100 * g["score"].std(ddof=1) if len(g) > 1 else float("nan"),
                    "measured_sparsity": g["encoder_sparsity"].mean(),
                    "nonzero_encoder_params": int(g["nonzero_encoder_params"].mean()),
                    "train_seconds": g["train_seconds"].mean() if "train_seconds" in g else float("nan"),
                }
            )
    return pd.DataFrame(rows)


def constant_baseline(cfg: RunConfig) -> float | None:
    """The dev score of the best constant answer (e.g. MRPC F1 of always 'equivalent'), x100."""
    import numpy as np

    from kaviz.data.tasks import compute_metrics, load_task

    try:
        task = load_task(cfg.task, seed=cfg.seed)
    except Exception:  # no data here: the row is left out
        return None
    spec, y = task.spec, np.asarray(task.dev["label"])
    if spec.is_regression:
        return None
    return 100 * max(compute_metrics(spec, np.full(len(y), c), y)[spec.main_metric] for c in range(spec.num_labels))


def claims(df: pd.DataFrame) -> pd.DataFrame:
    out = []
    for task, g in df.groupby("task", sort=False):

        def score(method: str, s: float, g=g) -> float:
            hit = g[(g.method == method) & (g.sparsity == s)]
            return float(hit["mean"].iloc[0]) if len(hit) else float("nan")

        teacher, ka90 = score("finetuned", 0.0), score("knowledge-aware", 0.9)
        ka95, gm95 = score("knowledge-aware", 0.95), score("gradual-magnitude", 0.95)
        keep = ka90 / teacher if teacher == teacher and teacher != 0 else float("nan")
        out.append(
            {
                "task": task,
                "teacher": teacher,
                "knowledge-aware 90%": ka90,
                "kept of teacher": keep,
                f"keeps >= {CLAIM_KEEP:.0%}": "yes" if keep >= CLAIM_KEEP else "no",
                "knowledge-aware 95%": ka95,
                "gradual 95%": gm95,
                "beats gradual at 95%": "yes" if ka95 > gm95 else "no",
            }
        )
    return pd.DataFrame(out)


def provenance(out: Path, task: str, suffix: str, computed_on: str | None) -> str:
    """Where a task's students were trained: from the units' info (kaviz records it), else --computed-on."""
    try:
        units = RunStore(out).open_run(f"replicate-{task}{suffix}").manifest["units"].values()
    except StoreError:
        return computed_on or "unknown"
    seen = sorted({f"{u['info']['device']}, {u['info'].get('precision', '?')}" for u in units if "device" in u["info"]})
    return "; ".join(seen) or computed_on or "not recorded"


def _md_table(df: pd.DataFrame) -> str:
    def fmt(v) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    rows = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    rows += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join(rows)


def _cell(r) -> str:
    if r is None:
        return "–"
    return f"{r['mean']:.1f}" + (f" ± {r['std']:.1f}" if r["seeds"] > 1 else "")


def markdown(df: pd.DataFrame, configs: dict[str, RunConfig], where: dict[str, str] | None = None) -> str:
    lines = [
        "# Replication at small scale (generated by `python benchmarks/replicate.py`)",
        "",
        "Dev-set task metric ×100 (SST-2 accuracy, MRPC F1, CoLA Matthews correlation); mean ± sample",
        "std over seeds where two seeds ran (0.9 and 0.95). Sparsity is of the encoder's linear weights,",
        "per matrix; non-zero counts are encoder linear weights. All-MiniLM-L6-v2 (6 layers, 384 wide).",
        "",
    ]
    sparsities = sorted(s for s in df["sparsity"].unique() if s > 0)
    for task, g in df.groupby("task", sort=False):
        cfg = configs.get(task)
        lines += [f"## {TASKS[task]} ({METRIC[task]})", ""]
        if cfg is not None:
            t, tr, p = cfg.task, cfg.training, cfg.pruning
            lines += [
                f"Budget: {t.max_train_examples or 'all'} training examples, max length {t.max_length}, batch "
                f"{tr.batch_size}; teacher {f'{tr.max_steps} steps' if tr.max_steps else f'{tr.epochs:g} epochs'} "
                f"at lr {tr.learning_rate:g}; every student "
                f"{f'{p.max_steps} steps' if p.max_steps else f'{p.epochs:g} epochs'} at lr {p.learning_rate:g}, "
                f"{p.mask_updates} mask updates, target reached at {p.ramp_end:.0%} of training.",
                "",
            ]
        if where and task in where:
            lines += [f"Computed on: {where[task]}.", ""]
        by = {(r["method"], r["sparsity"]): r for r in g.to_dict("records")}
        teacher = by.get(("finetuned", 0.0))
        pre = by.get(("pretrained", 0.0))
        blank = " |" * len(sparsities)
        lines += ["| method | dense | " + " | ".join(f"{100 * s:g}%" for s in sparsities) + " |"]
        lines += ["|---|---|" + "---|" * len(sparsities)]
        const = constant_baseline(cfg) if cfg is not None else None
        if const is not None:
            lines += [f"| best constant answer (no model) | {const:.1f} |" + blank]
        if pre:
            lines += [f"| pre-trained, untrained head | {_cell(pre)} |" + blank]
        if teacher:
            lines += [f"| fine-tuned teacher | {_cell(teacher)} |" + blank]
        for m in METHOD_ORDER:
            if any((m, s) in by for s in sparsities):
                lines += [f"| {m} | | " + " | ".join(_cell(by.get((m, s))) for s in sparsities) + " |"]
        nz = {s: by.get(("knowledge-aware", s)) or by.get(("gradual-magnitude", s)) for s in sparsities}
        sd = {s: by.get(("small-dense", s)) for s in sparsities}
        dense_nz = f"{teacher['nonzero_encoder_params'] / 1e6:.2f}M" if teacher else ""
        lines += [
            f"| non-zero encoder weights (sparse) | {dense_nz} | "
            + " | ".join(f"{r['nonzero_encoder_params'] / 1e6:.2f}M" if r else "–" for r in nz.values())
            + " |",
            f"| non-zero encoder weights (small-dense) | {dense_nz} | "
            + " | ".join(f"{r['nonzero_encoder_params'] / 1e6:.2f}M" if r else "–" for r in sd.values())
            + " |",
        ]
        lines += [""]
    c = claims(df)
    if not c.empty:
        lines += ["## The paper's claims at this scale", ""]
        lines += [_md_table(c), ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--out", type=Path, default=ROOT / "runs", help="run store (checkpoints included)")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "glue")
    ap.add_argument("--publish", type=Path, default=ROOT / "assets" / "runs", help="tables-only copies for the app")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    ap.add_argument(
        "--suffix", default="", help="a variant: runs named replicate-<task><suffix>, results replicate<suffix>.*"
    )
    ap.add_argument(
        "--computed-on", default=None, help="where the runs were trained, for runs made before kaviz recorded it"
    )
    ap.add_argument("--report-only", action="store_true", help="only rebuild tables and copies from the runs")
    ap.add_argument("--no-analyze", action="store_true", help="skip the knowledge tables")
    a = ap.parse_args(argv)
    configs = {}
    for task in a.tasks:
        cfg = task_config(task, a.data, a.set, a.suffix)
        configs[task] = cfg
        if a.report_only:
            continue
        if not (a.data / TASKS[task]).is_dir():
            print(f"skip {task}: no GLUE folder {a.data / TASKS[task]} (the original GLUE TSVs)", file=sys.stderr)
            continue
        run_task(cfg, a.out, analyze=not a.no_analyze)
    df = results(a.out, a.tasks, a.suffix)
    if df.empty:
        print(f"no replication runs in {a.out} yet", file=sys.stderr)
        return 1
    for task in df["task"].unique():
        publish(a.out, f"replicate-{task}{a.suffix}", a.publish)
    a.results.mkdir(parents=True, exist_ok=True)
    stem = a.results / f"replicate{a.suffix}"
    df.to_csv(stem.with_suffix(".csv"), index=False, float_format="%.4f")
    where = {t: provenance(a.out, t, a.suffix, a.computed_on) for t in df["task"].unique()}
    text = markdown(df, configs, where)
    stem.with_suffix(".md").write_text(text, encoding="utf-8")
    print(text)
    print(f"wrote {stem}.csv and .md; tables-only runs in {a.publish}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
