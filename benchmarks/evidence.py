"""Issue 10's evidence: the SST-2 showcase with budget curves, and MRPC at the paper's epochs.

    python benchmarks/evidence.py                       # run both configs (resumable), then report
    python benchmarks/evidence.py --tasks sst2          # one of them
    python benchmarks/evidence.py --report-only         # tables from the runs as they stand
    python benchmarks/evidence.py --report-only --ship  # ... and copy them (tables only) to assets/runs
    python benchmarks/evidence.py --unit-parallel 2     # whole units on 2 processes (torchrun)

Configs: ``benchmarks/configs/showcase-sst2.yaml`` and ``paper-mrpc.yaml`` (read them for the
budgets). Writes ``benchmarks/results/evidence.csv`` (task, metric, method, sparsity, seed, budget,
value: one row per unit and metric, with stage, unit, examples seen and training seconds),
``evidence-teacher-epochs.csv`` (the teachers' dev score after every epoch) and ``evidence.md``
(means with 95% bootstrap intervals over dev examples and seeds, the constant answer beside every
number, and whether the paper's claims hold). Works on partial runs: what is not done is listed.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from kaviz.analysis import diagnosis, evidence  # noqa: E402
from kaviz.core.config import main_budget  # noqa: E402
from kaviz.store import RunStore, StoreError  # noqa: E402

CONFIGS = {"sst2": "showcase-sst2", "mrpc": "paper-mrpc"}
FEATURED = "showcase-sst2"
RETIRED = ("replicate-sst2", "replicate-mrpc", "replicate-cola", "replicate-sst2-long", "replicate-mrpc-long")
RESULTS = ROOT / "benchmarks" / "results"
THREE = ("knowledge-aware", "gradual-magnitude", "small-dense")
#: The paper's released MRPC checkpoints (../shared/PAPER.md): BERT-base teacher and its 95%-sparse
#: student, dev accuracy / F1; 5% of BERT-base's 84.9M encoder linear weights; 12 epochs of 3,668 pairs.
PAPER_MRPC = {"teacher": {"accuracy": 0.8676, "f1": 0.9078}, "student": {"accuracy": 0.8627, "f1": 0.9054}}
# The official MRPC command trains on TinyBERT-augmented pairs: "MRPC (1 epoch = 7051 steps)" of batch 32.
PAPER_NONZERO, PAPER_EXAMPLES = 0.05 * 12 * (4 * 768 * 768 + 2 * 768 * 3072), 12 * 7051 * 32


def run_config(task: str, out: Path, unit_parallel: int, sets: list[str]) -> None:
    cfg = ROOT / "benchmarks" / "configs" / f"{CONFIGS[task]}.yaml"
    args = ["run", str(cfg), "--out", str(out)] + [x for s in sets for x in ("--set", s)]
    if (out / CONFIGS[task]).exists():
        args.append("--resume")
    if unit_parallel > 1:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        torchrun = str(Path(sys.executable).with_name("torchrun"))
        cmd = [torchrun, "--nproc_per_node", str(unit_parallel), "--master_addr", "127.0.0.1",
               "--master_port", str(port), "-m", "kaviz.cli", *args, "--unit-parallel"]  # fmt: skip
    else:
        cmd = [sys.executable, "-m", "kaviz.cli", *args]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


# ----- formatting ---------------------------------------------------------------------------------


def pct(v: float) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def ci(row) -> str:
    if math.isnan(row["low"]):
        return f"{pct(row['mean'])}"
    return f"{pct(row['mean'])} [{pct(row['low'])}, {pct(row['high'])}]"


def at_budget(t: pd.DataFrame, budget: float | None) -> pd.DataFrame:
    """Rows at the main ``budget`` (float-tolerant), and rows without one (one-shot; a max_steps run)."""
    if budget is None:
        return t[t.budget.isna()]
    return t[t.budget.isna() | np.isclose(t.budget.astype(float).fillna(-1.0), budget)]


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines)


def provenance(run) -> str:
    units = run.units()
    done = units[units.status == "done"]
    devices = sorted({str((i or {}).get("device")) for i in done["info"] if (i or {}).get("device")})
    secs = done.seconds.sum()
    return (
        f"{len(done)}/{len(units)} units done, {secs / 3600:.1f} h of unit time "
        f"(on {', '.join(devices) or 'n/a'}), kaviz commit {str(run.manifest.get('git'))[:10]}, status {run.status}"
    )


def teacher_epochs(run) -> pd.DataFrame:
    t = run.unit_table("epochs")
    if t.empty:
        return t
    t = t[t.unit == "finetuned"].drop(columns="unit")
    t.insert(0, "task", evidence._task_name(run))
    return t


def teacher_section(run, ep: pd.DataFrame, metrics: list[str]) -> str:
    info = run.manifest["units"].get("finetuned", {}).get("info") or {}
    if ep.empty:
        return "Teacher: not finished yet.\n"
    rows = [[int(r.epoch), *[pct(r[m]) for m in metrics], f"{r.seconds / 60:.0f}"] for _, r in ep.iterrows()]
    stop = (
        f"stopped after epoch {info.get('epochs_trained')} (one more epoch gained < {info.get('plateau_delta')} points), "
        f"kept epoch {info.get('best_epoch')}"
        if info.get("stopped_at_plateau")
        else f"trained {info.get('epochs_trained')} epochs (the maximum), kept epoch {info.get('best_epoch')}"
    )
    return f"Teacher, dev score after every epoch ({stop}):\n\n" + md_table(["epoch", *metrics, "minutes"], rows) + "\n"


def grid_section(s: pd.DataFrame, metrics: list[str], budget: float | None) -> str:
    t = at_budget(s[(s.stage == "pruned")], budget)
    rows = []
    for (method, sparsity), g in t.groupby(["method", "sparsity"], sort=True):
        cells = []
        for m in metrics:
            r = g[g.metric == m]
            cells.append(ci(r.iloc[0]) if len(r) else "–")
        r0 = g[g.metric == metrics[0]].iloc[0]
        cells.append(pct(r0.of_teacher))
        rows.append([method, f"{100 * sparsity:g}%", int(r0.seeds), *cells])
    rows.sort(key=lambda r: (r[1], r[0]))
    return md_table(
        ["method", "sparsity", "seeds", *[f"{m} [95% CI]" for m in metrics], f"% of teacher ({metrics[0]})"], rows
    )


def signed_ci(row) -> str:
    if math.isnan(row["above_low"]):
        return "– (no stored predictions)"
    return f"{100 * row['above']:+.1f} [{100 * row['above_low']:+.1f}, {100 * row['above_high']:+.1f}]"


def separation_section(s: pd.DataFrame, metrics: list[str], budget: float) -> str:
    """Each method's score minus the constant answer's, paired on the same dev-example draws, and the
    sparsities at which that difference excludes 0."""
    t = at_budget(s[s.stage == "pruned"], budget)
    lines = [
        "### Separation from the constant answer\n",
        "Score minus the constant answer's, both scored on the same resampled dev examples "
        "(`evidence.summary`'s paired `above` interval): a student that mostly gives the majority class "
        "moves with the drawn label mix as the constant answer does, so the pairing is tighter than "
        "comparing its own interval with the constant's value.\n",
    ]
    rows = []
    for (method, sparsity), g in t.groupby(["method", "sparsity"], sort=True):
        cells = [signed_ci(g[g.metric == m].iloc[0]) if len(g[g.metric == m]) else "–" for m in metrics]
        rows.append([method, f"{100 * sparsity:g}%", *cells])
    rows.sort(key=lambda r: (r[0], float(r[1][:-1])))
    lines.append(md_table(["method", "sparsity", *[f"{m} − constant [95% CI]" for m in metrics]], rows) + "\n")
    for method in THREE:
        g = t[t.method == method]
        if g.empty:
            continue
        parts = []
        for m in metrics:
            gm = g[(g.metric == m) & g.above_low.notna()]
            if gm.empty:
                parts.append("not tested (no stored predictions)")
                continue
            sep = sorted(evidence.separated(gm, m).sparsity)
            rest = sorted(set(gm.sparsity) - set(sep))
            says = f"above at {', '.join(f'{100 * x:g}%' for x in sep) or 'no measured sparsity'}"
            parts.append(says + (f" (not at {', '.join(f'{100 * x:g}%' for x in rest)})" if rest and sep else ""))
        lines.append(f"- {method}: " + "; ".join(f"{m} {p}" for m, p in zip(metrics, parts, strict=True)) + ".")
    return "\n".join(lines) + "\n"


def budget_section(s: pd.DataFrame, metric: str) -> str:
    t = s[(s.stage == "pruned") & s.budget.notna() & s.method.isin(THREE) & (s.metric == metric)]
    if t.empty:
        return "No budget units done yet.\n"
    out = []
    for sp, g in t.groupby("sparsity"):
        budgets = sorted(g.budget.unique())
        rows = []
        for method in THREE:
            gm = g[g.method == method].set_index("budget")
            cells = [ci(gm.loc[b]) if b in gm.index else "–" for b in budgets]
            rows.append([method, *cells])
        seen = g.groupby("budget").examples_seen.mean()
        secs = g.groupby(["budget", "method"]).train_seconds.mean().unstack()
        rows.append(["examples seen", *[f"{seen.get(b, math.nan):,.0f}" for b in budgets]])
        for method in THREE:
            if method in secs:
                rows.append([f"wall s ({method})", *[f"{secs[method].get(b, math.nan):.0f}" for b in budgets]])
        out.append(f"**{100 * sp:g}% sparsity**, {metric} [95% CI] by student budget (epochs):\n")
        out.append(md_table(["", *[f"{b:g}" for b in budgets]], rows) + "\n")
        for base in ("gradual-magnitude", "small-dense"):
            if not ((g.method == base).any() and (g.method == "knowledge-aware").any()):
                out.append(f"- knowledge-aware vs {base} at {100 * sp:g}%: not measured")
                continue
            b = evidence.overtakes(t, "knowledge-aware", base, sp, metric)
            out.append(
                f"- knowledge-aware vs {base} at {100 * sp:g}% (means): "
                + (
                    f"ahead from a budget of {b:g} epochs on (at every budget measured after it)"
                    if b is not None
                    else "not ahead at the largest budget measured, or behind (or unmeasured) at one before it"
                )
            )
        out.append("")
    return "\n".join(out)


def goal_check(
    s: pd.DataFrame, metric: str, sparsity: float, budget: float | None, run=None, n_boot: int = 2000
) -> list[str]:
    t = s[(s.metric == metric) & np.isclose(s.sparsity, sparsity) & s.method.isin(THREE)]
    t = at_budget(t[t.stage == "pruned"], budget).set_index("method")
    if "knowledge-aware" not in t.index:
        return [f"- knowledge-aware at {100 * sparsity:g}% is not done yet."]
    ka = t.loc["knowledge-aware"]
    if math.isnan(ka.of_teacher):
        verdict = "not known (no teacher score)"
    else:  # two decimals where one would round across the line
        kept = f"{100 * ka.of_teacher:.{2 if round(100 * ka.of_teacher, 1) == 97.0 else 1}f}"
        share = (
            evidence.share_of_teacher(run, "knowledge-aware", sparsity, budget, metric, n_boot=n_boot) if run else None
        )
        if share is not None:  # the share's own interval: student and teacher on the same dev draws
            kept += f"% [{100 * share[1]:.1f}, {100 * share[2]:.1f}]"
            kept += ", the whole interval above 97" if share[1] >= 0.97 else ", the interval reaching below 97"
        else:
            kept += "%"
        verdict = f"keeps {kept}: **{'holds' if ka.of_teacher >= 0.97 else 'does not hold'}**"
    told = f", {budget:g} epochs" if budget is not None else ""
    lines = [
        f"- knowledge-aware at {100 * sparsity:g}% ({int(ka.seeds)} seed{'s' * (int(ka.seeds) != 1)}{told}), "
        f"share of the teacher's {metric}, goal ≥ 97%: {verdict}."
    ]
    for base in ("gradual-magnitude", "small-dense"):
        if base not in t.index:
            lines.append(f"- {base} at {100 * sparsity:g}% is not done yet.")
            continue
        b = t.loc[base]
        if math.isnan(ka.low) or math.isnan(b.low):
            verdict = "has no interval to compare (no stored dev predictions)"
        elif ka.low > b.high:
            verdict = "beats it with non-overlapping intervals"
        elif ka["mean"] > b["mean"]:
            verdict = "is ahead on the mean but the intervals overlap"
        else:
            verdict = "does not beat it"
        paired = ""
        got = None
        if run is not None:
            got = evidence.difference(run, "knowledge-aware", base, sparsity, budget, metric, n_boot=n_boot)
        if got is not None:
            d, lo, hi, ka_seeds, base_seeds = got
            where = "excludes 0: the difference is outside noise" if lo > 0 or hi < 0 else "includes 0: within noise"
            paired = (
                f" Paired difference (the same dev-example draws for both; {ka_seeds} vs {base_seeds} seeds "
                f"with predictions): {100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}], which {where}."
            )
        lines.append(f"- vs {base} ({ci(b)}): knowledge-aware ({ci(ka)}) {verdict}.{paired}")
    return lines


def diagnosis_section(diags: list[pd.DataFrame]) -> str:
    """The causes side by side: teacher headroom, capacity, budget and loss balance of every
    three-method row (every budget), and the paper's MRPC checkpoints beside them."""
    d = pd.concat(diags, ignore_index=True) if diags else pd.DataFrame(columns=diagnosis.COLUMNS)
    rows = []
    for _, r in d.sort_values(["task", "metric", "sparsity", "examples_seen", "method"]).iterrows():
        shares, pulls = (
            "/".join("–" if math.isnan(r[f"{c}_{t}"]) else f"{100 * r[f'{c}_{t}']:.0f}" for t in diagnosis.LOSS_TERMS)
            for c in ("share", "grad")
        )
        rows.append([
            r.task, r.metric, r.method, f"{100 * r.sparsity:g}%", f"{r.nonzero_encoder / 1e6:.2f}M",
            f"{r.examples_seen:,.0f}", f"{100 * r.headroom:.1f}", f"{pct(r['mean'])} ({r.seeds})",
            f"{r.gain_kept:.2f}", shares, pulls,
        ])  # fmt: skip
    for m in ("accuracy", "f1"):
        t, st = PAPER_MRPC["teacher"][m], PAPER_MRPC["student"][m]
        const = evidence.constant_answer(m, np.array([1] * 279 + [0] * 129))[0]  # MRPC dev: 279 of 408 positive
        rows.append([
            "mrpc (paper, BERT-base)", m, "knowledge-aware", "95%", f"{PAPER_NONZERO / 1e6:.2f}M",
            f"{PAPER_EXAMPLES:,}", f"{100 * (t - const):.1f}", pct(st), f"{diagnosis.gain_kept(st, t, const):.2f}", "–", "–",
        ])  # fmt: skip
    header = ["task", "metric", "method", "sparsity", "non-zero encoder weights", "examples seen",
              "teacher − constant (points)", "score (seeds)", "gain kept", "loss att/hid/pred %", "gradient att/hid/pred %"]  # fmt: skip
    return (
        "Per row: the encoder weights the student keeps (capacity), the examples it saw (budget), how far "
        "its teacher stands above the constant answer (teacher quality), its score, the fraction of the "
        "teacher's gain over the constant answer it keeps ((score − constant) / (teacher − constant)), and "
        f"the shares of the distillation loss's terms over the last {100 * diagnosis.TAIL:.0f}% of its steps "
        "(attention / hidden states / prediction; – for cross-entropy training) and of their gradients on "
        "the trained student's kept weights (64 training examples; – where the unit's weights were not kept). "
        "The paper's row is its "
        "released MRPC checkpoints (../shared/PAPER.md); their examples are the official command's "
        "TinyBERT-augmented pairs (12 epochs of 7,051 steps of 32).\n\n" + md_table(header, rows) + "\n"
    )


def report(runs_dir: Path, n_boot: int) -> None:
    store = RunStore(runs_dir)
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows, epochs, diags, md = [], [], [], ["# Evidence at an adequate budget (issue 10)", ""]
    md.append(
        "Generated by `python benchmarks/evidence.py --report-only`. Scores ×100 on the GLUE dev set; "
        f"[95% CI] = percentile bootstrap over dev examples and seeds ({n_boot} resamples); "
        "'constant' = the best constant answer on the same dev set. Model: the packaged all-MiniLM-L6-v2 "
        "(6 layers, 384 wide); float32. With 1-3 seeds a group's interval is mostly the dev set's noise: "
        "resampling 3 seeds says little about seed-to-seed spread (the seeds' own scores are listed where "
        "it matters), and the many intervals here are not corrected for multiple comparisons.\n"
    )
    for task, name in CONFIGS.items():
        try:
            run = store.open_run(name)
        except StoreError:
            md.append(f"## {name}\n\nNot run yet.\n")
            continue
        for u in run.units().query("status == 'done' and method == 'knowledge-aware'").unit:
            if not run.has_unit_table(u, diagnosis.GRADIENTS):  # needs its weights: the runs, not the shipped copy
                diagnosis.store_gradient_shares(run, u)
        res = evidence.unit_results(run)
        rows.append(res)
        ep = teacher_epochs(run)
        if not ep.empty:
            epochs.append(ep)
        s = evidence.summary(run, n_boot=n_boot)
        metrics = ["accuracy"] if task == "sst2" else ["accuracy", "f1"]
        cfg = run.config
        md.append(f"## {name}: {task.upper()}\n")
        md.append(
            f"Config `benchmarks/configs/{name}.yaml`: student budget {cfg['pruning']['epochs']:g} epochs "
            f"(batch {cfg['training']['batch_size']}, lr {cfg['pruning']['learning_rate']:g}, "
            f"{cfg['pruning']['mask_updates']} mask updates), max length {cfg['task']['max_length']}. "
            f"{provenance(run)}.\n"
        )
        md.append(teacher_section(run, ep, metrics))
        if s.empty:
            continue
        fin = s[s.stage == "finetuned"]
        consts = ", ".join(
            f"{m} {pct(fin[fin.metric == m].constant.iloc[0])}" for m in metrics if len(fin[fin.metric == m])
        )
        teach = ", ".join(f"{m} {ci(fin[fin.metric == m].iloc[0])}" for m in metrics if len(fin[fin.metric == m]))
        md.append(f"Teacher: {teach}. Constant answer: {consts}.\n")
        budget = main_budget(cfg)  # None: pruning.max_steps sets it in steps
        diags += [diagnosis.diagnosis(run, s[s.method.isin(THREE)], m) for m in metrics]  # every budget
        told = f"{budget:g} epochs" if budget is not None else f"{cfg['pruning']['max_steps']} steps"
        md.append(f"Students at the main budget ({told}; one-shot magnitude does not train):\n")
        md.append(grid_section(s, metrics, budget) + "\n")
        if task == "sst2":
            md.append("### Budget curves\n")
            md.append(budget_section(s, "accuracy"))
            md.append("### The paper's claim on SST-2 at 95%\n")
            md += goal_check(s, "accuracy", 0.95, budget, run, n_boot=n_boot)
            ka = s[(s.stage == "pruned") & (s.method == "knowledge-aware") & np.isclose(s.sparsity, 0.95)]
            for longer in sorted(b for b in ka.budget.dropna().unique() if budget is not None and b > budget):
                md.append(f"\nAt a budget of {longer:g} epochs, beyond the main one:\n")
                md += goal_check(s, "accuracy", 0.95, longer, run, n_boot=n_boot)
            md.append("")
        else:
            md.append(separation_section(s, metrics, budget))
    md.append("## What decides how much a student keeps\n")
    md.append(diagnosis_section(diags))
    if diags:
        pd.concat(diags, ignore_index=True).to_csv(RESULTS / "evidence-diagnosis.csv", index=False)
    if rows:
        pd.concat(rows, ignore_index=True).to_csv(RESULTS / "evidence.csv", index=False)
    if epochs:
        pd.concat(epochs, ignore_index=True).to_csv(RESULTS / "evidence-teacher-epochs.csv", index=False)
    (RESULTS / "evidence.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    print((RESULTS / "evidence.md").read_text())


def ship(runs_dir: Path) -> None:
    """Tables-only copies in assets/runs (replacing older copies and the retired replication runs);
    the SST-2 showcase is featured."""
    assets = RunStore(ROOT / "assets" / "runs")
    for old in RETIRED:
        if assets.has_run(old):
            assets.delete_run(old)
    for name in CONFIGS.values():
        src = RunStore(runs_dir)
        if not src.has_run(name):
            continue
        if assets.has_run(name):
            assets.delete_run(name)
        copy = src.open_run(name).copy_to(assets.root, texts=False)  # GLUE's sentences are not ours to ship
        copy.set_featured(name == FEATURED)
        if copy.status == "running":  # a snapshot of a run that goes on elsewhere: nothing runs it here
            copy.set_status("interrupted")
        print(f"shipped {name} -> {copy.path}" + (" (featured)" if name == FEATURED else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    ap.add_argument("--runs", default=str(ROOT / "runs"), help="runs folder (default ./runs)")
    ap.add_argument("--report-only", action="store_true", help="no training: tables from the runs as they are")
    ap.add_argument("--ship", action="store_true", help="copy the runs, tables only, to assets/runs")
    ap.add_argument("--unit-parallel", type=int, default=1, metavar="N", help="processes (torchrun), whole units each")
    ap.add_argument("--set", action="append", default=[], help="passed to kaviz run (e.g. training.num_threads=1)")
    ap.add_argument("--boot", type=int, default=2000, help="bootstrap resamples")
    a = ap.parse_args()
    runs = Path(a.runs)
    if not a.report_only:
        for task in a.tasks:
            run_config(task, runs, a.unit_parallel, a.set)
    report(runs, a.boot)
    if a.ship:
        ship(runs)
    shutil.rmtree(RESULTS / "__pycache__", ignore_errors=True)


if __name__ == "__main__":
    main()
