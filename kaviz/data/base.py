"""What every task shares: the task types, the metrics a :class:`TaskSpec` names, the dataset builder
and the readers for delimited text.

:mod:`kaviz.data.tasks` (GLUE, the demo task, encoding) and :mod:`kaviz.data.custom` (CSV/TSV/JSONL) both
build on this module; :mod:`kaviz.data.tasks` re-exports its public names.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from kaviz.core.errors import KavizError


class TaskError(KavizError, ValueError):
    """Data that cannot make a task; the message names the file, column and value, and what was expected."""


@dataclass(frozen=True)
class TaskSpec:
    """What a task is: pair or single sentence, label space, and the metrics reported (main first)."""

    name: str
    pair: bool
    num_labels: int
    is_regression: bool
    metrics: tuple[str, ...]
    main_metric: str
    label_names: tuple[str, ...] | None = None


@dataclass
class TaskData:
    """A task's spec with its train and dev splits (columns ``text_a``, [``text_b``], ``label``)."""

    spec: TaskSpec
    train: datasets.Dataset
    dev: datasets.Dataset


MISSING = frozenset({"", "nan", "na", "n/a", "null", "none"})  # label values read as "no label"
INT_RE = re.compile(r"\s*[-+]?\d+\s*")


def make_dataset(
    text_a: Sequence[str], text_b: Sequence[str] | None, labels: Sequence[float], *, regression: bool
) -> datasets.Dataset:
    """Columns ``text_a``, [``text_b``], ``label`` with the standard dtypes (int64, or float32 for regression)."""
    cols: dict[str, Any] = {"text_a": list(text_a)}
    feats: dict[str, Any] = {"text_a": datasets.Value("string")}
    if text_b is not None:
        cols["text_b"], feats["text_b"] = list(text_b), datasets.Value("string")
    cols["label"] = list(labels)
    feats["label"] = datasets.Value("float32" if regression else "int64")
    return datasets.Dataset.from_dict(cols, features=datasets.Features(feats))


def read_text(path: Path) -> str:
    """The file as text (UTF-8, BOM dropped); TaskError naming the file and line when it is not UTF-8."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TaskError(f"cannot read {path}: {e.strerror or e}") from e
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise TaskError(
            f"{path}: not UTF-8 text (byte {data[e.start]:#04x} on line {line}); re-save the file as UTF-8"
        ) from e


def read_delimited(path: Path, delimiter: str, quoting: int) -> list[tuple[int, list[str]]]:
    """(line number, fields) for each non-blank row; TaskError when the file has no rows at all."""
    reader = csv.reader(io.StringIO(read_text(path), newline=""), delimiter=delimiter, quoting=quoting)
    rows: list[tuple[int, list[str]]] = []
    try:
        for row in reader:
            if row and any(f.strip() for f in row):
                rows.append((reader.line_num, row))
    except csv.Error as e:
        raise TaskError(f"{path}, line {reader.line_num}: cannot parse: {e}") from e
    if not rows:
        raise TaskError(f"{path}: the file is empty (no rows)")
    return rows


def few(items: list[str], k: int = 5) -> str:
    """The first ``k`` messages joined with "; ", and how many more were left out."""
    more = f" (and {len(items) - k} more)" if len(items) > k else ""
    return "; ".join(items[:k]) + more


# ----- metrics --------------------------------------------------------------------------------------------


def _accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(pred == y))


def _f1(pred: np.ndarray, y: np.ndarray) -> float:
    tp = float(np.sum((pred == 1) & (y == 1)))
    fp = float(np.sum((pred == 1) & (y != 1)))
    fn = float(np.sum((pred != 1) & (y == 1)))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def _matthews(pred: np.ndarray, y: np.ndarray) -> float:
    if np.unique(pred).size < 2 or np.unique(y).size < 2:
        return 0.0
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(y, pred))


def _correlation(kind: str) -> Callable[[np.ndarray, np.ndarray], float]:
    def corr(pred: np.ndarray, y: np.ndarray) -> float:
        if not (np.all(np.isfinite(pred)) and np.all(np.isfinite(y))):
            return math.nan
        if len(pred) < 2 or np.ptp(pred) == 0 or np.ptp(y) == 0:
            return 0.0
        from scipy import stats

        res = stats.pearsonr(pred, y) if kind == "pearson" else stats.spearmanr(pred, y)
        return float(res.statistic)

    corr.__name__ = f"_{kind}"
    return corr


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": _accuracy,
    "f1": _f1,
    "matthews": _matthews,
    "pearson": _correlation("pearson"),
    "spearman": _correlation("spearman"),
}


def compute_metrics(spec: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Every metric in ``spec.metrics``, as floats in 0..1 (correlations in -1..1).

    ``predictions``: logits (n, num_labels) or class ids (n,) for classification; scores (n,) or
    (n, 1) for regression.  ``labels``: (n,).  f1 is binary with class 1 as positive; matthews,
    pearson and spearman are 0.0 for a constant prediction; correlations are NaN if any score is.
    """
    pred = np.asarray(predictions)
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if spec.is_regression:
        if pred.ndim == 2 and pred.shape[1] == 1:
            pred = pred[:, 0]
        if pred.ndim != 1:
            raise ValueError(f"regression predictions must have shape (n,) or (n, 1), got {pred.shape}")
        pred, y = pred.astype(np.float64), y.astype(np.float64)
    elif pred.ndim == 2:
        if pred.shape[1] != spec.num_labels:
            raise ValueError(f"logits have {pred.shape[1]} columns but task {spec.name!r} has {spec.num_labels} labels")
        pred = pred.argmax(axis=-1)
    elif pred.ndim != 1:
        raise ValueError(f"predictions must be logits (n, {spec.num_labels}) or class ids (n,), got {pred.shape}")
    if y.ndim != 1 or len(pred) != len(y):
        raise ValueError(f"predictions {pred.shape} and labels {y.shape} do not match: expected (n, ...) and (n,)")
    if len(y) == 0:
        raise ValueError("cannot compute metrics on zero examples")
    unknown = [m for m in spec.metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {', '.join(METRICS)}")
    return {m: METRICS[m](pred, y) for m in spec.metrics}
