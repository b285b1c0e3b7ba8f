"""``kaviz`` command line: run, demo, runs, export, import. Builds the same RunConfig as the app."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from kaviz.core.config import GRID_KEYS, PACKAGED_MODEL, ConfigError, RunConfig
from kaviz.core.errors import KavizError
from kaviz.core.presets import demo_config

DEFAULT_RUNS = "runs"


def _set_overrides(data: dict, sets: list[str]) -> dict:
    """Apply ``--set a.b=value`` (value parsed as YAML: numbers, lists, null, true/false)."""
    import yaml

    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set pruning.max_steps=200")
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"--set {item!r}: {p!r} is not a config section")
            node = node[p]
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def _print_summary(run) -> None:
    from kaviz.stages.pipeline import summary_table

    table = summary_table(run)
    if table.empty:
        print("no finished units")
        return
    print()
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"\nrun stored in {run.path}")


def _execute(
    cfg: RunConfig,
    out: str,
    resume: bool,
    quiet: bool,
    analyze: bool = True,
    unit_parallel: bool = False,
    extend: bool = False,
) -> int:
    from kaviz.stages.pipeline import Pipeline
    from kaviz.stages.unit_parallel import UnitParallelPipeline
    from kaviz.store import RunStore

    kind = UnitParallelPipeline if unit_parallel else Pipeline
    echo = None if quiet else _stderr
    pipe = kind(cfg, RunStore(out), resume=resume, progress=not quiet, echo=echo, extend=extend)
    run = pipe.run()
    if pipe.rank != 0:  # several processes: the main one reports and analyses
        return 0
    _print_summary(run)
    if analyze and cfg.analysis.enabled:
        _analyze(run, force=False, quiet=quiet)
    return 0


def _analyze(run, force: bool, quiet: bool) -> list[str]:
    from kaviz.analysis.analyzer import Analyzer

    done = Analyzer(run, progress=not quiet).run(force=force)
    print(f"analysed {len(done)} unit(s) of {run.run_id}" + ("" if done else " (all up to date)"), file=sys.stderr)
    return done


def _stderr(msg: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(msg, file=sys.stderr)


def cmd_run(a: argparse.Namespace) -> int:
    cfg = RunConfig.load(a.config)
    if a.set:
        cfg = RunConfig.from_dict(_set_overrides(cfg.to_dict(), a.set))
    if a.name:
        cfg = RunConfig.from_dict({**cfg.to_dict(), "name": a.name})
    return _execute(
        cfg, a.out, a.resume, a.quiet, analyze=not a.no_analyze, unit_parallel=a.unit_parallel, extend=a.extend
    )


def cmd_demo(a: argparse.Namespace) -> int:
    cfg = demo_config(tiny=a.tiny, name=a.name)
    return _execute(cfg, a.out, a.resume, a.quiet, analyze=not a.no_analyze)


def cmd_runs(a: argparse.Namespace) -> int:
    from kaviz.store import RunStore

    df = RunStore(a.dir).list_runs()
    if df.empty:
        print(f"no runs in {a.dir} (make one with: kaviz demo --tiny --out {a.dir})")
        return 0
    cols = [c for c in ("run_id", "status", "n_done", "n_units", "task", "model", "created") if c in df.columns]
    print(df[cols].to_string(index=False))
    return 0


def _open_run(path: str):
    from kaviz.store import RunStore

    p = Path(path)
    return RunStore(p.parent).open_run(p.name)


def cmd_analyze(a: argparse.Namespace) -> int:
    _analyze(_open_run(a.run), force=a.force, quiet=a.quiet)
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from kaviz.report import write

    out = write(_open_run(a.run), a.output or f"{Path(a.run).name}-report.html")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): open it in a browser, no server needed", file=sys.stderr)
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from kaviz.analysis.analyzer import knowledge_table

    run = _open_run(a.run)
    df = run.metrics() if a.table == "metrics" else knowledge_table(run, a.table)
    if df.empty and a.table != "metrics":
        print(f"run {run.run_id} has no {a.table!r} table yet: run `kaviz analyze {a.run}`", file=sys.stderr)
    if a.format == "csv":
        text = df.to_csv(index=False)
    else:
        text = df.to_json(orient="records", indent=1)
    if a.output:
        Path(a.output).write_text(text, encoding="utf-8")
        print(f"wrote {len(df)} rows to {a.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_feature(a: argparse.Namespace) -> int:
    run = _open_run(a.run)
    run.set_featured(not a.off)
    print(f"{run.run_id}: " + ("no longer featured" if a.off else "featured (the app opens on it)"))
    return 0


def cmd_copy(a: argparse.Namespace) -> int:
    run = _open_run(a.run)
    compact = a.compact or []
    unknown = sorted(set(compact) - set(run.units()["unit"]))
    if unknown:
        print(f"error: run {run.run_id} has no unit {', '.join(unknown)}", file=sys.stderr)
        return 2
    lacking = [u for u in compact if run.checkpoint_dir(u) is None]
    if lacking:
        print(f"error: no checkpoint to store compactly for {', '.join(lacking)}", file=sys.stderr)
        return 2
    dest = run.copy_to(a.dest, include_checkpoints=a.checkpoints, texts=not a.no_texts)
    print(
        f"copied {run.run_id} to {dest.path}"
        + ("" if a.checkpoints else " (tables only, no checkpoints)")
        + (" without the dataset's sentences" if a.no_texts else "")
    )
    if compact:
        from kaviz.analysis.unit_view import store_compact

        for row in store_compact(run, dest, compact):
            print(f"  {row['unit']}: compact weights, {row['bytes'] / 1e6:.1f} MB ({', '.join(row['kinds'])})")
    return 0


def cmd_import(a: argparse.Namespace) -> int:
    task = {"name": a.task}
    if a.task_path:
        task["path"] = a.task_path
    if a.text_columns:
        task["text_columns"] = a.text_columns.split(",")
    if a.max_eval_examples:
        task["max_eval_examples"] = a.max_eval_examples
    data = {
        "name": a.name,
        "model": {"name_or_path": a.pretrained, "finetuned": a.teacher},
        "task": task,
        "methods": [],
        "import_students": a.student,
    }
    return _execute(RunConfig.from_dict(data), a.out, a.resume, a.quiet, analyze=not a.no_analyze)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kaviz", description="Prune pre-trained transformers and see where knowledge is lost."
    )
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--out", default=DEFAULT_RUNS, help=f"runs folder (default: ./{DEFAULT_RUNS})")
        sp.add_argument("--resume", action="store_true", help="continue an interrupted run; finished units are kept")
        sp.add_argument("--quiet", action="store_true", help="no progress bars")
        sp.add_argument(
            "--no-analyze", action="store_true", help="skip the knowledge tables at the end (see kaviz analyze)"
        )

    r = sub.add_parser(
        "run",
        help="run the stages of a config (YAML or JSON)",
        description="Fine-tune the teacher and prune students for every method x sparsity in CONFIG. "
        "Config fields: " + ", ".join(f for f, _, _ in RunConfig().help_table()),
    )
    r.add_argument("config", help="path to a .yaml/.yml/.json RunConfig")
    r.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field, e.g. --set pruning.max_steps=200 --set 'sparsities=[0.5,0.9]'",
    )
    r.add_argument("--name", help="override the run name")
    r.add_argument(
        "--unit-parallel",
        action="store_true",
        help="under torchrun --nproc_per_node N: train the teacher once, then give each process whole "
        "student units (instead of splitting every batch, the data-parallel default)",
    )
    r.add_argument(
        "--extend",
        action="store_true",
        help="continue a stored run with a larger grid (more methods, sparsities, seeds, budgets: "
        + ", ".join(GRID_KEYS)
        + "); only the new units train, the teacher and finished units are kept. Every other field must "
        "equal the stored one",
    )
    common(r)
    r.set_defaults(fn=cmd_run)

    d = sub.add_parser(
        "demo",
        help="build the embedded demo run offline",
        description="The built-in sentiment task, all five methods, packaged all-MiniLM-L6-v2 "
        "(<=10 min on 2 cores) or --tiny, a small random BERT (<=60 s).",
    )
    d.add_argument("--tiny", action="store_true", help="small random BertConfig instead of MiniLM")
    d.add_argument("--name", help="run name (default demo / demo-tiny)")
    common(d)
    d.set_defaults(fn=cmd_demo)

    ls = sub.add_parser(
        "runs",
        help="list the runs in a folder with their status",
        description="One line per run: name, status (running, complete, failed, interrupted, "
        "unreadable), units done of planned, task, model and creation time.",
    )
    ls.add_argument("dir", nargs="?", default=DEFAULT_RUNS, help=f"runs folder (default: ./{DEFAULT_RUNS})")
    ls.set_defaults(fn=cmd_runs)

    e = sub.add_parser(
        "export",
        help="write a run's tidy metrics table",
        description="Columns: run, stage, method, sparsity, seed, budget (student epochs), unit, metric, value",
    )
    e.add_argument("run", help="run folder, e.g. runs/demo-tiny")
    e.add_argument("--format", choices=["csv", "json"], default="csv")
    e.add_argument(
        "--table",
        choices=["metrics", "knowledge", "cka_matrix", "attribution"],
        default="metrics",
        help="metrics (task scores, sparsity) or an analysis table: knowledge (per-layer similarity to "
        "references, attention per head, probes), cka_matrix (layer x layer), attribution",
    )
    e.add_argument("--output", "-o", help="file to write (default: stdout)")
    e.set_defaults(fn=cmd_export)

    an = sub.add_parser(
        "analyze",
        help="compute a run's knowledge tables (incremental)",
        description="Capture every done unit on a fixed probe set and store per-layer CKA and attention "
        "similarity to the teacher and the pre-trained model, linear probes, the general-knowledge probe and "
        "attribution agreement. Only units without tables are computed unless --force.",
    )
    an.add_argument("run", help="run folder, e.g. runs/demo-tiny")
    an.add_argument("--force", action="store_true", help="recompute every unit")
    an.add_argument("--quiet", action="store_true", help="no progress bars")
    an.set_defaults(fn=cmd_analyze)

    rp = sub.add_parser(
        "report",
        help="write a run as one self-contained HTML page",
        description="Findings, every figure (interactive, plotly.js inlined: opens offline), headline tables, "
        "units and config of a run, from its tables (no model loaded).",
    )
    rp.add_argument("run", help="run folder, e.g. assets/runs/showcase-sst2")
    rp.add_argument("--output", "-o", help="HTML file to write (default: <run>-report.html)")
    rp.set_defaults(fn=cmd_report)

    cp = sub.add_parser(
        "copy",
        help="copy a run to another runs folder (tables only by default)",
        description="Copy a run's manifest, metrics and tables to another runs folder, e.g. to share results "
        "or ship a demo; checkpoints only with --checkpoints.",
    )
    cp.add_argument("run", help="run folder, e.g. runs/demo")
    cp.add_argument("dest", help="destination runs folder")
    cp.add_argument("--checkpoints", action="store_true", help="also copy the safetensors checkpoints")
    cp.add_argument(
        "--no-texts",
        action="store_true",
        help="leave the dataset's sentences out of the copy (the attribution examples' text), for data you "
        "may not redistribute, e.g. GLUE",
    )
    cp.add_argument(
        "--compact",
        nargs="+",
        metavar="UNIT",
        help="also store these units' weights compactly, as int8/float16 differences from the run's pre-trained "
        "model (no less exact than float16; a 90%%-sparse MiniLM student takes ~2 MB): the Attention and "
        "Attribution pages then draw maps from the copy",
    )
    cp.set_defaults(fn=cmd_copy)

    ft = sub.add_parser(
        "feature",
        help="mark a run as a showcase the app opens on",
        description="Featured runs lead the app's run picker (marked ★), before the newest runs.",
    )
    ft.add_argument("run", help="run folder, e.g. assets/runs/showcase-sst2")
    ft.add_argument("--off", action="store_true", help="remove the mark")
    ft.set_defaults(fn=cmd_feature)

    im = sub.add_parser(
        "import",
        help="assemble a run from checkpoints made elsewhere",
        description="Evaluate a pre-trained model, a fine-tuned teacher and students pruned by other "
        "tools (nn_pruning, SparseML, torch.nn.utils.prune...) and store them as stages.",
    )
    im.add_argument("--name", required=True, help="run name")
    im.add_argument("--pretrained", required=True, help="pre-trained model: hub id, folder or " + PACKAGED_MODEL)
    im.add_argument("--teacher", required=True, help="fine-tuned teacher: hub id or folder")
    im.add_argument(
        "--student",
        action="append",
        required=True,
        metavar="LABEL@SPARSITY=PATH",
        help="a pruned student, e.g. obert@0.9=./obert-90 (repeatable)",
    )
    im.add_argument("--task", required=True, help="task name: demo, custom or a GLUE task")
    im.add_argument("--task-path", help="local GLUE TSV folder or CSV/JSONL for the task")
    im.add_argument("--text-columns", help="custom task: comma-separated text columns")
    im.add_argument("--max-eval-examples", type=int, help="evaluate on a subsample of dev")
    common(im)
    im.set_defaults(fn=cmd_import)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-file load/save bars drown the per-unit progress
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        print("\ninterrupted: continue with --resume", file=sys.stderr)
        return 130
    except KavizError as e:  # user-facing errors; anything else is a bug and shows its traceback
        print(f"kaviz: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
