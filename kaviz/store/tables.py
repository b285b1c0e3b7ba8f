"""The tables a run holds, as data: the tidy metric rows, their dtypes, and parquet in and out.

:mod:`kaviz.store` decides which file each table lives in; this module reads and writes the paths
it is handed (atomically, via :mod:`kaviz.store.atomic`) and shapes the frames.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from kaviz.core.schema import METRIC_COLUMNS
from kaviz.store import atomic
from kaviz.store.manifest import StoreError

_STR_COLUMNS = ("run", "stage", "method", "unit", "metric")
_PANDAS3 = int(pd.__version__.split(".")[0]) >= 3


def _str_col(s: pd.Series) -> pd.Series:
    if _PANDAS3:
        return s.astype("str")  # missing values stay missing
    return s.astype(object).where(s.notna(), None).map(lambda v: v if v is None else str(v))


def _typed_metrics(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for c in _STR_COLUMNS:
        out[c] = _str_col(out[c])
    out["sparsity"] = pd.to_numeric(out["sparsity"]).astype("float64")
    out["seed"] = pd.to_numeric(out["seed"]).astype("Int64")
    out["budget"] = pd.to_numeric(out["budget"]).astype("float64")
    out["value"] = pd.to_numeric(out["value"]).astype("float64")
    return out


def read_parquet(path: Path) -> pd.DataFrame:
    """The parquet file at ``path``; StoreError naming it when it cannot be read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError, ValueError) as e:
        raise StoreError(f"{path}: not a readable parquet file ({e}); delete it or redo the unit") from e


def write_parquet(path: Path, df: pd.DataFrame, what: str) -> None:
    """Write ``df`` to ``path`` atomically; StoreError naming ``what`` when it is not a writable DataFrame."""
    import pyarrow as pa

    if not isinstance(df, pd.DataFrame):
        raise StoreError(f"{what}: expected a pandas DataFrame, got {type(df).__name__}")
    try:
        atomic.write_parquet(path, df)
    except (pa.ArrowException, TypeError, ValueError) as e:
        raise StoreError(f"{what}: cannot be written as parquet ({e})") from e


def metric_rows(run_id: str, unit: str, u: dict[str, Any], metrics: pd.DataFrame | list[dict]) -> pd.DataFrame:
    """``metrics`` (columns metric, value, extras) stamped with the run and the unit's manifest entry ``u``."""
    df = metrics.copy() if isinstance(metrics, pd.DataFrame) else pd.DataFrame(list(metrics))
    if len(df.columns) == 0 and len(df) == 0:
        df = pd.DataFrame({"metric": [], "value": []})
    missing = [c for c in ("metric", "value") if c not in df.columns]
    if missing:
        raise StoreError(f"metrics of unit {unit!r} lack column(s) {missing}; got {list(df.columns)}")
    df = df.reset_index(drop=True)
    fill = {"run": run_id, "stage": u["stage"], "method": u.get("method"), "unit": unit}
    for col, val in fill.items():
        df[col] = val
    df["sparsity"] = float("nan") if u.get("sparsity") is None else float(u["sparsity"])
    df["seed"] = pd.array([u.get("seed")] * len(df), dtype="Int64")
    df["budget"] = float("nan") if u.get("budget") is None else float(u["budget"])
    try:
        df["value"] = pd.to_numeric(df["value"])
    except (TypeError, ValueError) as e:
        raise StoreError(f"metrics of unit {unit!r}: 'value' must be numeric ({e})") from None
    extras = [c for c in df.columns if c not in METRIC_COLUMNS]
    return _typed_metrics(df[METRIC_COLUMNS + extras])


def read_metrics(paths: list[Path]) -> pd.DataFrame:
    """The metric tables at ``paths``, concatenated, METRIC_COLUMNS first (sparsity float64, seed Int64)."""
    frames = []
    for path in paths:
        df = read_parquet(path)
        if "budget" not in df.columns and "seed" in df.columns:  # written before budgets were a grid axis
            df.insert(list(df.columns).index("seed") + 1, "budget", float("nan"))
        missing = [c for c in METRIC_COLUMNS if c not in df.columns]
        if missing:
            raise StoreError(f"{path}: metrics table lacks column(s) {missing}")
        frames.append(df)
    frames = [f for f in frames if len(f)] or frames[:1]
    if not frames:
        return _typed_metrics(pd.DataFrame({c: [] for c in METRIC_COLUMNS}))
    df = pd.concat(frames, ignore_index=True)
    return _typed_metrics(df[METRIC_COLUMNS + [c for c in df.columns if c not in METRIC_COLUMNS]])


def read_unit_tables(files: list[tuple[str, Path]]) -> pd.DataFrame:
    """The (unit id, path) tables, concatenated, with a leading ``unit`` column."""
    frames = []
    for uid, path in files:
        df = read_parquet(path)
        df = df.drop(columns="unit", errors="ignore")
        df.insert(0, "unit", uid)
        frames.append(df)
    frames = [f for f in frames if len(f)] or frames[:1]
    if not frames:
        return pd.DataFrame({"unit": pd.Series(dtype="str" if _PANDAS3 else object)})
    return pd.concat(frames, ignore_index=True)
