"""Results with their uncertainty: scores per unit, bootstrap intervals over dev examples and seeds,
the constant answer, and where one method overtakes another along the budget axis.

Every trained unit stores its dev predictions (``predictions`` table: example, label, prediction);
an interval for a group of units (one method, sparsity and budget, one or more seeds) resamples
both the dev examples (the same draw for every seed of a replicate) and the seeds:

    for b in 1..B:  idx ~ n examples with replacement;  seeds ~ k seeds with replacement
                    stat_b = mean over the drawn seeds of metric(pred_s[idx], label[idx])

and reports the percentile interval of ``stat_b`` (level 95% by default) around the mean over
seeds on all examples. With one seed it is the plain bootstrap over examples (Efron & Tibshirani
1993, ch. 13). ``test_evidence.py`` checks the vectorised metrics against :mod:`kaviz.data.base`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

from kaviz.data.base import METRICS

#: Columns of :func:`unit_results`: one row per unit and task metric.
RESULT_COLUMNS = ["task", "metric", "method", "sparsity", "seed", "budget", "value"]
CLASS_METRICS = ("accuracy", "f1", "matthews")


# ----- metrics over many resamples at once ------------------------------------------------------------


def _batched(metric: str, binary: bool = True) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``f(pred, y) -> (B,)`` for ``pred``, ``y`` of shape (B, n): the metric of every resample row.
    F1 and MCC are vectorised for two classes (1 positive); ``binary=False`` takes the reference
    implementation of :mod:`kaviz.data.base` row by row."""

    def accuracy(p: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (p == y).mean(axis=1)

    def counts(p: np.ndarray, y: np.ndarray):
        tp = ((p == 1) & (y == 1)).sum(axis=1).astype(np.float64)
        fp = ((p == 1) & (y != 1)).sum(axis=1).astype(np.float64)
        fn = ((p != 1) & (y == 1)).sum(axis=1).astype(np.float64)
        tn = ((p != 1) & (y != 1)).sum(axis=1).astype(np.float64)
        return tp, fp, fn, tn

    def f1(p: np.ndarray, y: np.ndarray) -> np.ndarray:
        tp, fp, fn, _ = counts(p, y)
        den = 2 * tp + fp + fn
        return np.divide(2 * tp, den, out=np.zeros_like(den), where=den > 0)

    def matthews(p: np.ndarray, y: np.ndarray) -> np.ndarray:
        tp, fp, fn, tn = counts(p, y)
        den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        return np.divide(tp * tn - fp * fn, den, out=np.zeros_like(den), where=den > 0)

    fast = {"accuracy": accuracy, "f1": f1, "matthews": matthews}
    if metric == "accuracy" or (metric in fast and binary):
        return fast[metric]
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    one = METRICS[metric]
    return lambda p, y: np.array([one(pi, yi) for pi, yi in zip(p, y, strict=True)])


def _binary(*arrays: np.ndarray) -> bool:
    """True when every value is 0 or 1 (the vectorised F1 and MCC hold there)."""
    return all(np.isin(np.unique(a), (0, 1)).all() for a in arrays)


def metric_value(metric: str, pred: np.ndarray, y: np.ndarray) -> float:
    """The metric of one prediction vector (the same numbers as :mod:`kaviz.data.base`)."""
    pred, y = np.asarray(pred), np.asarray(y)
    return float(_batched(metric, _binary(y, pred))(pred[None, :], y[None, :])[0])


def constant_answer(metric: str, labels: np.ndarray) -> tuple[float, float]:
    """(value, class) of the best constant prediction for a classification metric: every class tried,
    the best kept (majority class for accuracy; "always positive" for F1)."""
    y = np.asarray(labels)
    best = (-math.inf, math.nan)
    for c in np.unique(y):
        v = metric_value(metric, np.full_like(y, c), y)
        if v > best[0]:
            best = (v, float(c))
    return best


def score_metric(metrics: pd.DataFrame) -> str | None:
    """The task metric that ``score`` (the task's main metric) is, read off a tidy metrics table:
    the one equal to ``score`` on every unit; None when none is."""
    wide = metrics.pivot_table(index="unit", columns="metric", values="value", aggfunc="first")
    if "score" not in wide:
        return None
    for m in ("accuracy", "f1", "matthews", "pearson", "spearman"):
        if m in wide and np.allclose(wide[m], wide["score"], equal_nan=True):
            return m
    return None


def reference_levels(metrics: pd.DataFrame, predictions: pd.DataFrame, metric: str) -> dict[str, float]:
    """{"fine-tuned teacher": value, "constant answer": value} of ``metric`` (``"score"`` allowed)
    for score figures: the teacher from the metrics table, the best constant answer from the dev
    labels in a ``predictions`` unit table (classification metrics only)."""
    out: dict[str, float] = {}
    teacher = metrics[(metrics["stage"] == "finetuned") & (metrics["metric"] == metric)]
    if len(teacher):
        out["fine-tuned teacher"] = float(teacher["value"].iloc[0])
    name = score_metric(metrics) if metric == "score" else metric
    if len(predictions) and name in CLASS_METRICS:
        first = predictions[predictions["unit"] == predictions["unit"].iloc[0]].sort_values("example")
        out["constant answer"] = constant_answer(name, first["label"].to_numpy())[0]
    return out


def bootstrap(
    preds: list[np.ndarray], labels: np.ndarray, metric: str, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """(mean over seeds, low, high): the percentile interval of the seed-mean of ``metric`` over
    resampled dev examples and seeds. ``preds``: one prediction vector (n,) per seed, all against
    ``labels`` (n,)."""
    if not preds:
        raise ValueError("bootstrap needs at least one prediction vector")
    y = np.asarray(labels)
    p = np.stack([np.asarray(x) for x in preds])  # (k, n)
    if p.shape[1] != len(y):
        raise ValueError(f"predictions have {p.shape[1]} examples but there are {len(y)} labels")
    f = _batched(metric, _binary(y, p))
    point = float(f(p, np.broadcast_to(y, p.shape)).mean())
    rng = np.random.default_rng(seed)
    k, n = p.shape
    stats = np.zeros(n_boot)
    chunk = max(1, 2_000_000 // max(1, n * k))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(b, n))  # (b, n) example draws, shared by the seeds of a replicate
        picks = rng.integers(0, k, size=(b, k))  # (b, k) seed draws
        yy = y[idx]  # (b, n)
        per_seed = np.stack([f(p[picks[:, j][:, None], idx], yy) for j in range(k)], axis=1)  # (b, k)
        stats[start : start + b] = per_seed.mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    return point, float(lo), float(hi)


def _paired_draws(
    preds_a: list[np.ndarray], preds_b: list[np.ndarray], labels: np.ndarray, metric: str, n_boot: int, seed: int
) -> tuple[float, float, np.ndarray, np.ndarray]:
    """(point A, point B, A's and B's seed-mean ``metric`` on ``n_boot`` shared example draws):
    both sides are scored on the *same* resampled dev examples, each side's seeds resampled on its own."""
    if not preds_a or not preds_b:
        raise ValueError("a paired comparison needs at least one prediction vector on each side")
    y = np.asarray(labels)
    pa = np.stack([np.asarray(x) for x in preds_a])  # (ka, n)
    pb = np.stack([np.asarray(x) for x in preds_b])  # (kb, n)
    if pa.shape[1] != len(y) or pb.shape[1] != len(y):
        raise ValueError(f"predictions have {pa.shape[1]} and {pb.shape[1]} examples but there are {len(y)} labels")
    f = _batched(metric, _binary(y, pa, pb))
    points = [float(f(p, np.broadcast_to(y, p.shape)).mean()) for p in (pa, pb)]
    rng = np.random.default_rng(seed)
    n = len(y)
    stats = np.zeros((2, n_boot))
    chunk = max(1, 2_000_000 // max(1, n * (len(pa) + len(pb))))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(b, n))  # (b, n): one example draw for both sides
        yy = y[idx]
        for side, p in enumerate((pa, pb)):
            picks = rng.integers(0, len(p), size=(b, len(p)))  # (b, k) seed draws of this side
            per_seed = np.stack([f(p[picks[:, j][:, None], idx], yy) for j in range(len(p))], axis=1)  # (b, k)
            stats[side, start : start + b] = per_seed.mean(axis=1)
    return points[0], points[1], stats[0], stats[1]


def _paired_interval(preds_a, preds_b, labels, metric: str, combine, n_boot: int, level: float, seed: int):
    """(combine(A, B), low, high) over the shared draws of :func:`_paired_draws`."""
    a, b, sa, sb = _paired_draws(preds_a, preds_b, labels, metric, n_boot, seed)
    alpha = (1 - level) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        lo, hi = np.quantile(combine(sa, sb), [alpha, 1 - alpha])
        point = float(combine(np.float64(a), np.float64(b)))
    return point, float(lo), float(hi)


def paired_difference(
    preds_a: list[np.ndarray],
    preds_b: list[np.ndarray],
    labels: np.ndarray,
    metric: str,
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(difference, low, high) of seed-mean ``metric`` of A minus B, both scored on the *same*
    resampled dev examples (paired: a hard example counts against both), each side's seeds resampled
    on their own. An interval that excludes 0 separates the two; one that includes it does not."""
    return _paired_interval(preds_a, preds_b, labels, metric, np.subtract, n_boot, level, seed)


def paired_ratio(preds_a, preds_b, labels, metric: str, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0):
    """(ratio, low, high) of seed-mean ``metric`` of A over B on the same resampled dev examples (as
    :func:`paired_difference`), e.g. the share of its teacher's accuracy a student keeps (B: the
    teacher's one prediction vector); inf or NaN where B scores 0."""
    return _paired_interval(preds_a, preds_b, labels, metric, np.divide, n_boot, level, seed)


# ----- a run's units ---------------------------------------------------------------------------------


def _task_name(run) -> str:
    return str((run.config.get("task") or {}).get("name", "?"))


def unit_results(run, metrics: tuple[str, ...] = ("accuracy", "f1", "matthews", "pearson", "spearman")) -> pd.DataFrame:
    """One row per done unit and task metric it has: RESULT_COLUMNS plus stage, unit,
    examples_seen, train_seconds (NaN where a unit did not train)."""
    m = run.metrics()
    if m.empty:
        return pd.DataFrame(columns=[*RESULT_COLUMNS, "stage", "unit", "examples_seen", "train_seconds"])
    extra = m[m.metric.isin(["examples_seen", "train_seconds"])].pivot_table(
        index="unit", columns="metric", values="value", aggfunc="first"
    )
    rows = m[m.metric.isin(metrics)].copy()
    rows["task"] = _task_name(run)
    rows = rows.join(extra, on="unit")
    for c in ("examples_seen", "train_seconds"):
        if c not in rows:
            rows[c] = np.nan
    return rows[[*RESULT_COLUMNS, "stage", "unit", "examples_seen", "train_seconds"]].reset_index(drop=True)


def _same_labels(pred: pd.DataFrame | None, labels: np.ndarray | None) -> bool:
    """True when a unit's predictions table scores the same dev examples, in the same order, as
    ``labels``; a unit whose table does not is treated as one without predictions."""
    return pred is not None and labels is not None and np.array_equal(pred.label.to_numpy(), labels)


def _predictions(run) -> dict[str, pd.DataFrame]:
    t = run.unit_table("predictions")
    if t.empty:
        return {}
    return {u: df.sort_values("example") for u, df in t.groupby("unit")}


def summary(
    run,
    metrics: tuple[str, ...] | None = None,
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (stage, method, sparsity, budget) and metric: seeds (how many), mean over seeds,
    low/high (bootstrap over dev examples and seeds), the teacher's value and the constant answer
    on the same dev set, the mean as a fraction of the teacher's, and ``above`` / ``above_low`` /
    ``above_high``: the :func:`paired_difference` of the group against the best constant predictor,
    both scored on the same resampled dev examples (classification metrics; NaN otherwise).

    The pairing matters on a small, unbalanced dev set: the constant answer's own score moves with
    the drawn label mix, and so does that of a student that mostly gives the majority class. On
    MRPC's 408 pairs a student at 72.1 [67.6, 76.2] accuracy, whose interval includes the constant
    68.4, is +3.7 [+1.2, +6.4] above it paired.

    Needs the units' ``predictions`` tables (runs made before they were stored give NaN intervals),
    all on the dev examples of the first: a unit whose table holds other labels or another order
    counts as one without (its stored score is shown, with no interval).
    """
    res = unit_results(run)
    if res.empty:
        return pd.DataFrame()
    metrics = tuple(metrics or [x for x in res.metric.unique() if x in CLASS_METRICS] or res.metric.unique())
    preds = _predictions(run)
    labels = next((df.label.to_numpy() for df in preds.values()), None)
    teacher = res[res.stage == "finetuned"].set_index("metric").value
    out = []
    keys = ["stage", "method", "sparsity", "budget"]
    for (stage, method, sparsity, budget), g in res.groupby(keys, dropna=False, sort=False):
        for metric in metrics:
            gm = g[g.metric == metric]
            if gm.empty:
                continue
            units = list(dict.fromkeys(gm.unit))
            have = [preds[u].prediction.to_numpy() for u in units if _same_labels(preds.get(u), labels)]
            if len(have) == len(units) and labels is not None:
                mean, lo, hi = bootstrap(have, labels, metric, n_boot=n_boot, level=level, seed=seed)
            else:
                mean, lo, hi = float(gm.value.mean()), math.nan, math.nan
            const, above = math.nan, (math.nan, math.nan, math.nan)
            if labels is not None and metric in CLASS_METRICS:
                const, cls = constant_answer(metric, labels)
                if len(have) == len(units):
                    fixed = [np.full(len(labels), cls, dtype=np.asarray(labels).dtype)]
                    above = paired_difference(have, fixed, labels, metric, n_boot=n_boot, level=level, seed=seed)
            t = float(teacher.get(metric, math.nan))
            out.append(
                {
                    "task": _task_name(run),
                    "stage": stage,
                    "method": method,
                    "sparsity": sparsity,
                    "budget": budget,
                    "metric": metric,
                    "seeds": len(units),
                    "mean": mean,
                    "low": lo,
                    "high": hi,
                    "teacher": t,
                    "constant": const,
                    "of_teacher": mean / t if t else math.nan,
                    "above": above[0],
                    "above_low": above[1],
                    "above_high": above[2],
                    "examples_seen": float(g.examples_seen.mean()),
                    "train_seconds": float(g.train_seconds.mean()),
                }
            )
    return pd.DataFrame(out)


def _unit_preds(
    res: pd.DataFrame,
    preds: dict,
    labels: np.ndarray,
    stage: str,
    method: str | None,
    sparsity: float | None,
    budget: float | None,
) -> list[np.ndarray]:
    """The stored prediction vectors of the done units of one grid cell (on ``labels``' dev examples)."""
    g = res[res.stage == stage]
    if method is not None:
        g = g[(g.method == method) & np.isclose(g.sparsity, sparsity)]
        g = g[g.budget.isna()] if budget is None else g[np.isclose(g.budget, budget)]
    units = [u for u in dict.fromkeys(g.unit) if _same_labels(preds.get(u), labels)]
    return [preds[u].prediction.to_numpy() for u in units]


def difference(
    run, method_a: str, method_b: str, sparsity: float, budget: float | None, metric: str, *, n_boot: int = 2000
) -> tuple[float, float, float, int, int] | None:
    """(difference, low, high, seeds of A, seeds of B): :func:`paired_difference` of two methods'
    pruned units at one sparsity and budget (None: a main-budget row without a budget) from their
    stored predictions; None when either side has no unit with predictions."""
    res = unit_results(run, (metric,))
    preds = _predictions(run)
    if not preds:
        return None
    labels = next(iter(preds.values())).label.to_numpy()
    sides = [_unit_preds(res, preds, labels, "pruned", m, sparsity, budget) for m in (method_a, method_b)]
    if not all(sides):
        return None
    d, lo, hi = paired_difference(sides[0], sides[1], labels, metric, n_boot=n_boot)
    return d, lo, hi, len(sides[0]), len(sides[1])


def share_of_teacher(
    run, method: str, sparsity: float, budget: float | None, metric: str, *, n_boot: int = 2000
) -> tuple[float, float, float, int] | None:
    """(share, low, high, seeds): :func:`paired_ratio` of a method's pruned units at one sparsity and
    budget over the fine-tuned teacher, on the same resampled dev examples; None without predictions."""
    res = unit_results(run, (metric,))
    preds = _predictions(run)
    if not preds:
        return None
    labels = next(iter(preds.values())).label.to_numpy()
    student = _unit_preds(res, preds, labels, "pruned", method, sparsity, budget)
    teacher = _unit_preds(res, preds, labels, "finetuned", None, None, None)
    if not student or not teacher:
        return None
    r, lo, hi = paired_ratio(student, teacher, labels, metric, n_boot=n_boot)
    return r, lo, hi, len(student)


def overtakes(table: pd.DataFrame, method: str, baseline: str, sparsity: float, metric: str) -> float | None:
    """The smallest budget from which ``method``'s mean beats ``baseline``'s at that budget and at
    every larger budget either was measured at (a budget only one of them has ends the streak: it
    cannot say who leads there), from a :func:`summary` table; None if it never does. Means only:
    each budget's interval is the table's to show."""
    t = table[(table.metric == metric) & np.isclose(table.sparsity, sparsity) & table.budget.notna()]
    a = t[t.method == method].set_index("budget")["mean"]
    b = t[t.method == baseline].set_index("budget")["mean"]
    first = None
    for bud in sorted(set(a.index) | set(b.index)):
        ahead = bud in a.index and bud in b.index and a[bud] > b[bud]
        first = (bud if first is None else first) if ahead else None
    return first


def separated(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rows of a :func:`summary` table that beat the constant answer: their paired difference against
    the constant predictor (``above_low``) excludes 0."""
    t = table[table.metric == metric]
    return t[t.above_low > 0]
