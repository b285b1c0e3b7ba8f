"""The tables a run holds, as a schema: their columns, the kinds of row in the knowledge tables,
the references, the metric families, and the selectors every reader uses.

The knowledge table (``kaviz.analysis.analyzer.knowledge_table``) holds three kinds of row in one
tidy frame; their special values are defined here and nowhere else:

- per layer: ``head == WHOLE_LAYER`` (-1), ``layer >= 0`` (0 = embeddings);
- per head: ``head >= 0``;
- per model: ``layer == WHOLE_MODEL`` (-1), e.g. the general-knowledge probe and attribution agreement.

``reference`` is the model a row compares with: ``"finetuned"`` (the teacher), ``"pretrained"``,
or ``SELF`` (the model on its own: attention entropy, linear probes, general probe). Metric names
carry a family prefix: ``probe_`` (linear probe per layer), ``general_`` (general-knowledge probe),
``attribution_`` (Integrated-Gradients agreement). Pages and views call the selectors below and
never compare against these values themselves.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

#: Columns of a run's metrics table (one row per unit and metric).
METRIC_COLUMNS = ["run", "stage", "method", "sparsity", "seed", "budget", "unit", "metric", "value"]
#: Columns of a unit's knowledge table as stored (the reader joins the unit's keys in front).
KNOWLEDGE_COLUMNS = ["reference", "layer", "ref_layer", "head", "metric", "value", "pruned"]
#: The unit keys joined in front of every per-unit analysis table.
UNIT_KEYS = ["unit", "stage", "method", "sparsity", "seed", "budget"]

WHOLE_LAYER = -1  # ``head`` of a row about a whole layer
WHOLE_MODEL = -1  # ``layer`` of a row about the whole model
SELF = "self"  # ``reference`` of a row about the model on its own
REFERENCES = ("finetuned", "pretrained", SELF)
REFERENCE_NAMES = {"finetuned": "fine-tuned teacher", "pretrained": "pre-trained model", SELF: "itself"}

PROBE, GENERAL, ATTRIBUTION = "probe_", "general_", "attribution_"

#: Task metrics in the order the app offers them; "score" is the task's main metric.
TASK_METRICS = ("score", "accuracy", "f1", "matthews", "pearson", "spearman")
#: Task scores are stored as fractions (and exported so) but shown ×100 everywhere a person reads
#: them, app, report, findings and README alike, as GLUE and the paper report them (89.3, not 0.893).
SCORE_SCALE = 100.0
SCORE_FORMAT = ".1f"  # how a shown score is printed (plotly/format-spec syntax)


def shown_scores(metrics: pd.DataFrame, columns: Sequence[str] = ("value",)) -> pd.DataFrame:
    """A tidy metrics table with its task-score rows (``TASK_METRICS``) ×``SCORE_SCALE`` in ``columns``;
    other rows (sparsity, parameter counts, seconds) unchanged.  Display only: tables stay fractions."""
    out = metrics.copy()
    if out.empty or "metric" not in out:
        return out
    rows = out["metric"].isin(TASK_METRICS)
    for c in columns:
        if c in out:
            out[c] = out[c].astype(float)
            out.loc[rows, c] = out.loc[rows, c] * SCORE_SCALE
    return out


def score_bounds(metric: str) -> tuple[float, float] | None:
    """The range a shown task score can take (accuracy and F1 0..100; MCC, correlations and the
    task's ``score``, which may be one of them, -100..100); None for other metrics."""
    if metric not in TASK_METRICS:
        return None
    return (0.0, SCORE_SCALE) if metric in ("accuracy", "f1") else (-SCORE_SCALE, SCORE_SCALE)


def score_axis_range(values: Sequence[float], metric: str) -> list[float] | None:
    """A y range around ``values`` (padded by 5% of their spread, at least one point) that never
    leaves the metric's bounds (:func:`score_bounds`), e.g. not -50..150 for one accuracy of 89.3;
    None for metrics without bounds or without finite values."""
    bounds = score_bounds(metric)
    finite = [float(v) for v in values if v is not None and pd.notna(v)]
    if bounds is None or not finite:
        return None
    lo, hi = min(finite), max(finite)
    if lo >= 0:  # nothing below zero: the axis need not go there (MCC / correlations may)
        bounds = (max(bounds[0], 0.0), bounds[1])
    pad = max(0.05 * (hi - lo), 1.0)
    return [max(bounds[0], lo - pad), min(bounds[1], hi + pad)]


def shown_score(value: float | None) -> float | None:
    """One task score (a fraction) as shown: ×``SCORE_SCALE``; None stays None."""
    return None if value is None else float(value) * SCORE_SCALE


# ----- kinds of row ---------------------------------------------------------------------------------


def layer_rows(k: pd.DataFrame) -> pd.DataFrame:
    """Rows about a whole layer (not a head, not the whole model)."""
    return k[(k["head"] == WHOLE_LAYER) & (k["layer"] >= 0)]


def head_rows(k: pd.DataFrame) -> pd.DataFrame:
    """Rows about one attention head."""
    return k[k["head"] >= 0]


def model_rows(k: pd.DataFrame) -> pd.DataFrame:
    """Rows about the whole model (general probe, attribution agreement)."""
    return k[k["layer"] == WHOLE_MODEL]


def is_self(reference: str) -> bool:
    """True for the reference of rows about a model on its own."""
    return reference == SELF


def compared(k: pd.DataFrame) -> pd.DataFrame:
    """Rows that compare a model with another (teacher or pre-trained)."""
    return k[k["reference"] != SELF]


def own(k: pd.DataFrame) -> pd.DataFrame:
    """Rows about a model on its own."""
    return k[k["reference"] == SELF]


def whole_or_heads(k: pd.DataFrame, per_head: bool) -> pd.DataFrame:
    """Head rows (``per_head``) or whole-layer and whole-model rows."""
    return k[k["head"] >= 0] if per_head else k[k["head"] == WHOLE_LAYER]


# ----- budgets ---------------------------------------------------------------------------------------


def at_budget(df: pd.DataFrame, main_budget: float | None) -> pd.DataFrame:
    """Rows of units at ``main_budget`` (student epochs) and of units without a budget (dense stages,
    one-shot methods, imports): one model per (method, sparsity, seed), as every by-sparsity table
    and figure needs (budget-curve units are left to the budget views). ``main_budget=None`` (a run
    budgeted in steps) keeps the rows without a budget. A table without ``budget`` is returned as is.
    The one place this filter is written (``kaviz.views.ui_data.at_main_budget`` reads the config)."""
    if df.empty or "budget" not in df.columns:
        return df
    b = pd.to_numeric(df["budget"], errors="coerce")
    keep = b.isna() if main_budget is None else (b.isna() | ((b - main_budget).abs() < 1e-9))
    return df[keep].reset_index(drop=True)


# ----- averaging over seeds ----------------------------------------------------------------------------


def over_seeds(rows: pd.DataFrame, keys: list[str], value: str = "value", *, also: Sequence[str] = ()) -> pd.DataFrame:
    """One row per ``keys`` group (first-appearance order, NaN keys kept): ``keys`` + mean, std
    (sample; NaN for one seed), lo (min), hi (max), n_seeds (rows in the group) of ``value``, and
    the plain mean of each column in ``also`` (e.g. the measured sparsity, examples seen). The one
    place seeds are averaged for tables and figures."""
    g = rows.groupby(keys, sort=False, dropna=False)
    out = g[value].agg(["mean", "std", "min", "max", "count"])
    out = out.rename(columns={"min": "lo", "max": "hi", "count": "n_seeds"})
    if also:
        out = g[list(also)].mean().join(out)
    return out.reset_index()


# ----- metric families ------------------------------------------------------------------------------


def _family(k: pd.DataFrame, prefix: str) -> list[str]:
    return [m for m in dict.fromkeys(k["metric"]) if str(m).startswith(prefix)]


def probe_metrics(k: pd.DataFrame) -> list[str]:
    """Linear-probe metric names present, in table order."""
    return _family(k, PROBE)


def general_metrics(k: pd.DataFrame) -> list[str]:
    """General-knowledge probe metric names present (e.g. ``general_sts_spearman``)."""
    return _family(k, GENERAL)


def attribution_metrics(k: pd.DataFrame) -> list[str]:
    """Attribution-agreement metric names present."""
    return _family(k, ATTRIBUTION)


def family_label(metric: str) -> str:
    """A metric name without its family prefix (``general_sts_spearman`` -> ``sts_spearman``)."""
    for prefix in (PROBE, GENERAL, ATTRIBUTION):
        if metric.startswith(prefix):
            return metric[len(prefix) :]
    return metric
