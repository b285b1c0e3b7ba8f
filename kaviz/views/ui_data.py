"""Tables the app shows, built from a run's stored tables; plain pandas, no streamlit, no I/O
beyond :class:`~kaviz.store.RunStore` listings.

Pages call these through cached wrappers and hand the results to :mod:`kaviz.views.plots`.  Every
function returns a new frame and leaves its arguments untouched.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import pandas as pd

from kaviz.core import schema
from kaviz.core.config import main_budget
from kaviz.core.registry import STAGE_LABELS
from kaviz.store import LIST_COLUMNS, RunStore

TASK_METRICS = schema.TASK_METRICS
#: Stage rows of the headline table, with the labels shown for them.
ENV_RUNS = "KAVIZ_RUNS"
DEMO_RUNS = Path(__file__).resolve().parents[2] / "assets" / "runs"  # the repository root
USER_RUNS = "runs"


# ----- runs folders and listings ------------------------------------------------------------------


def runs_folders(env: str | None = None, cwd: str | Path | None = None, extra: Iterable[str] = ()) -> list[str]:
    """Folders to look for runs in, absolute, without duplicates, in order.

    ``env`` (the ``KAVIZ_RUNS`` value, comma-separated) replaces the defaults, which are the demo
    runs shipped in ``assets/runs`` and ``runs/`` in ``cwd``; ``extra`` folders are appended.
    Relative paths are taken from ``cwd`` (default: the current directory).
    """
    base = Path(cwd) if cwd is not None else Path.cwd()
    given = [p.strip() for p in env.split(",")] if env is not None and env.strip() else []
    folders = given or [str(DEMO_RUNS), USER_RUNS]
    out: list[str] = []
    for f in [*folders, *[e.strip() for e in extra]]:
        if not f:
            continue
        path = Path(f).expanduser()
        path = str((path if path.is_absolute() else base / path).resolve())
        if path not in out:
            out.append(path)
    return out


def folders_from_environ(extra: Iterable[str] = ()) -> list[str]:
    """:func:`runs_folders` with ``KAVIZ_RUNS`` read from the environment."""
    return runs_folders(os.environ.get(ENV_RUNS), extra=extra)


def list_runs(folders: Sequence[str]) -> pd.DataFrame:
    """Runs in all ``folders``: RunStore.list_runs rows plus ``folder``; featured runs (showcases,
    :meth:`kaviz.store.Run.set_featured`) first, then newest first over all folders, unreadable runs
    (status ``"unreadable"``, reason in ``error``) last.

    A folder that does not exist lists nothing.
    """
    frames = [df.assign(folder=f) for f in folders if len(df := RunStore(f).list_runs())]
    if not frames:
        return pd.DataFrame(columns=[*LIST_COLUMNS, "folder"])
    df = pd.concat(frames, ignore_index=True)
    df = df.assign(_bad=df["status"].eq("unreadable"), _plain=~df["featured"].fillna(False).astype(bool))
    df = df.sort_values(["_bad", "_plain", "created"], ascending=[True, True, False], na_position="last", kind="stable")
    return df.drop(columns=["_bad", "_plain"]).reset_index(drop=True)


def filter_runs(
    runs: pd.DataFrame, tasks: Sequence[str] = (), models: Sequence[str] = (), methods: Sequence[str] = ()
) -> pd.DataFrame:
    """The rows of a run listing (:func:`list_runs`) whose task is one of ``tasks``, model one of
    ``models`` and methods include any of ``methods`` (an empty filter keeps everything)."""
    keep = pd.Series(True, index=runs.index)
    if tasks:
        keep &= runs["task"].isin(list(tasks))
    if models:
        keep &= runs["model"].isin(list(models))
    if methods:
        listed = runs["methods"].fillna("").astype(str).str.split(r",\s*")
        keep &= listed.map(lambda ms: bool(set(ms) & set(methods)))
    return runs[keep].reset_index(drop=True)


def run_methods(runs: pd.DataFrame) -> list[str]:
    """Every method named in a run listing, in first-appearance order."""
    names = runs["methods"].dropna().astype(str).str.split(r",\s*").explode()
    return [m for m in dict.fromkeys(names) if m]


def run_origin(row: pd.Series | dict) -> str:
    """``"shipped"`` for the runs that come with kaviz (assets/runs), else ``"yours: <folder name>"``."""
    folder = Path(str(row["folder"])).expanduser()
    try:
        shipped = folder.resolve() == DEMO_RUNS.resolve()
    except OSError:
        shipped = False
    return "shipped" if shipped else f"yours: {folder.name or folder}"


def run_label(row: pd.Series | dict) -> str:
    """``"★ showcase-sst2 · shipped"``, ``"demo-tiny · runs"``: how the run picker names a run, short
    enough for the sidebar (its status is :func:`run_state`, shown under the picker)."""
    featured = row.get("featured")
    star = "★ " if featured is not None and pd.notna(featured) and bool(featured) else ""
    origin = run_origin(row)
    return f"{star}{row['run_id']} · {origin.removeprefix('yours: ')}"


def run_state(row: pd.Series | dict) -> str:
    """``"complete · 22/22 units · yours: runs"``: the picked run's status, units and origin."""
    done, total = row.get("n_done"), row.get("n_units")
    units = f" · {done}/{total} units" if pd.notna(done) and pd.notna(total) else ""
    return f"{row['status']}{units} · {run_origin(row)}"


# ----- metrics tables ------------------------------------------------------------------------------


def at_main_budget(df: pd.DataFrame, config: dict) -> pd.DataFrame:
    """:func:`kaviz.core.schema.at_budget` at the run's main student budget (read off its config)."""
    return schema.at_budget(df, main_budget(config))


def task_metrics(metrics: pd.DataFrame) -> list[str]:
    """The task metrics present in a tidy metrics table, in TASK_METRICS order."""
    present = set(metrics["metric"].dropna().unique())
    return [m for m in TASK_METRICS if m in present]


def _check_metric(metrics: pd.DataFrame, metric: str) -> None:
    present = sorted(metrics["metric"].dropna().unique())
    if metric not in present:
        raise ValueError(f"metric {metric!r} is not in the metrics table; present: {', '.join(present) or 'none'}")


def unit_values(metrics: pd.DataFrame, metric: str = "score") -> dict[str, float]:
    """unit -> value of ``metric`` (units without it are left out)."""
    rows = metrics[metrics["metric"] == metric]
    return {str(u): float(v) for u, v in zip(rows["unit"], rows["value"])}


def _unit_values(metrics: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per unit: stage, method, target sparsity, seed, value of ``metric``, measured sparsity."""
    keys = ["unit", "stage", "method", "sparsity", "seed"]
    value = metrics.loc[metrics["metric"] == metric, [*keys, "value"]]
    measured = metrics.loc[metrics["metric"] == "encoder_sparsity", ["unit", "value"]]
    measured = measured.rename(columns={"value": "measured_sparsity"}).drop_duplicates("unit")
    return value.merge(measured, on="unit", how="left")


def sparsity_curve_table(
    metrics: pd.DataFrame, metric: str = "score", spread: Literal["std", "range"] = "std"
) -> pd.DataFrame:
    """Mean and spread over seeds of ``metric`` per (stage, method, target sparsity).

    Columns: stage, method, sparsity (target), measured_sparsity (mean over seeds of the measured
    encoder sparsity; the target where none was measured), mean, lo, hi (mean ± sample std, or
    min and max for ``spread="range"``), n_seeds.  Rows: pretrained, finetuned, then methods in
    order of first appearance, each by target sparsity.
    """
    if spread not in ("std", "range"):
        raise ValueError(f"spread {spread!r} is not 'std' or 'range'")
    _check_metric(metrics, metric)
    per_unit = _unit_values(metrics, metric)
    per_unit["measured_sparsity"] = per_unit["measured_sparsity"].fillna(per_unit["sparsity"])
    out = schema.over_seeds(per_unit, ["stage", "method", "sparsity"], also=["measured_sparsity"])
    if spread == "std":
        std = out["std"].fillna(0.0)
        out["lo"], out["hi"] = out["mean"] - std, out["mean"] + std
    stage_rank = out["stage"].map({"pretrained": 0, "finetuned": 1}).fillna(2)
    method_rank = out["method"].map({m: i for i, m in enumerate(dict.fromkeys(out["method"]))})
    out = out.assign(_s=stage_rank, _m=method_rank).sort_values(["_s", "_m", "sparsity"], kind="stable")
    cols = ["stage", "method", "sparsity", "measured_sparsity", "mean", "lo", "hi", "n_seeds"]
    return out[cols].reset_index(drop=True)


def with_intervals(curve: pd.DataFrame, intervals: pd.DataFrame) -> pd.DataFrame:
    """``curve`` (:func:`sparsity_curve_table`) with ``lo``/``hi`` replaced by confidence intervals:
    ``intervals`` has stage, method, sparsity, low, high (e.g. :func:`kaviz.analysis.evidence.summary`
    rows of one metric and budget). Points without an interval keep lo = hi = the mean."""
    keys = ["stage", "method", "sparsity"]
    iv = intervals[[*keys, "low", "high"]].drop_duplicates(keys)
    out = curve.drop(columns=["lo", "hi"]).merge(iv, on=keys, how="left")
    out["lo"] = out["low"].fillna(out["mean"])
    out["hi"] = out["high"].fillna(out["mean"])
    return out.drop(columns=["low", "high"])[list(curve.columns)]


def headline_table(metrics: pd.DataFrame, metric: str = "score") -> pd.DataFrame:
    """Rows: pre-trained, fine-tuned teacher, then each method; columns: ``dense <metric>`` and,
    per target sparsity, ``<target> <metric>`` and ``<target> sparsity`` (measured).  Means over
    seeds; empty cells are NaN.  The row labels are the index (named ``model``).
    """
    curve = sparsity_curve_table(metrics, metric)
    dense_col = f"dense {metric}"
    rows: dict[str, dict[str, float]] = {}
    for stage, label in STAGE_LABELS.items():
        for _, r in curve[curve["stage"] == stage].iterrows():
            rows[label] = {dense_col: r["mean"]}
    pruned = curve[~curve["stage"].isin(list(STAGE_LABELS))]
    targets = sorted(pruned["sparsity"].dropna().unique())
    for _, r in pruned.iterrows():
        row = rows.setdefault(str(r["method"]), {})
        row[f"{_pct(r['sparsity'])} {metric}"] = r["mean"]
        row[f"{_pct(r['sparsity'])} sparsity"] = r["measured_sparsity"]
    columns = [dense_col] + [f"{_pct(t)} {q}" for t in targets for q in (metric, "sparsity")]
    out = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=columns).astype("float64")
    out.index.name = "model"
    return out


def _pct(s: float) -> str:
    return f"{100 * s:g}%"


def unit_status_table(units: pd.DataFrame) -> pd.DataFrame:
    """Run.units() trimmed for display: unit, stage, method, sparsity, seed, status, seconds,
    attempts, and the first line of any error."""
    cols = ["unit", "stage", "method", "sparsity", "seed", "status", "seconds", "attempts", "error"]
    out = units.reindex(columns=cols).copy()
    out["error"] = out["error"].map(lambda e: str(e).splitlines()[0] if isinstance(e, str) and e else None)
    return out


def units_with(table: pd.DataFrame, units: pd.DataFrame | None = None) -> list[str]:
    """Units that have rows in a per-unit table, in the run's planned order when ``units`` is given."""
    present = list(dict.fromkeys(table["unit"])) if "unit" in table.columns else []
    if units is None:
        return present
    order = [u for u in units["unit"] if u in set(present)]
    return order + [u for u in present if u not in set(order)]


def latex_table(df: pd.DataFrame, *, caption: str | None = None, float_format: str = "%.3f") -> str:
    """``df`` as a LaTeX tabular (booktabs), NaN shown as ``--``, special characters escaped."""
    index = df.index.name is not None or not isinstance(df.index, pd.RangeIndex)
    return df.to_latex(index=index, float_format=float_format, na_rep="--", escape=True, caption=caption)
