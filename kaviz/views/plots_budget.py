"""Budget curves: what each method reaches for the student budget it was given.

Tables and figures from a run's metrics (and knowledge) tables, for runs whose grid has a budget
axis (``extra_units`` with ``budgets``): score, and per-layer CKA to the teacher, against examples
seen or wall seconds of training, one panel per sparsity. No I/O, no streamlit.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from kaviz.core import schema
from kaviz.views.plots import method_color
from kaviz.views.plots_sparsity import CONSTANT, LEVEL_STYLES, TEACHER, clamp_score_axis, seed_band

XAxis = Literal["examples_seen", "train_seconds", "budget"]
X_TITLES = {"examples_seen": "examples seen", "train_seconds": "training wall seconds", "budget": "budget (epochs)"}
_COST = ["examples_seen", "train_seconds"]
CURVE_COLUMNS = ["method", "sparsity", "budget", "seeds", "mean", "lo", "hi", "examples_seen", "train_seconds"]


def has_budget_axis(metrics: pd.DataFrame) -> bool:
    """True when some (method, sparsity) was trained at more than one budget."""
    if "budget" not in metrics.columns:
        return False
    p = metrics[(metrics["stage"] == "pruned") & metrics["budget"].notna()]
    return bool(len(p)) and bool((p.groupby(["method", "sparsity"])["budget"].nunique() > 1).any())


def budget_curve_table(metrics: pd.DataFrame, metric: str = "score") -> pd.DataFrame:
    """One row per (method, sparsity, budget) of the trained students: seeds, mean/min/max of
    ``metric`` over seeds, and the mean examples seen and training seconds. Raises ValueError when
    ``metric`` is not in the table."""
    if metric not in set(metrics["metric"]):
        raise ValueError(f"metric {metric!r} is not in this run's metrics ({', '.join(sorted(set(metrics.metric)))})")
    p = metrics[(metrics["stage"] == "pruned") & metrics["budget"].notna()]
    wide = p.pivot_table(index="unit", columns="metric", values="value", aggfunc="first")
    keys = p.drop_duplicates("unit").set_index("unit")[["method", "sparsity", "budget", "seed"]]
    wide = keys.join(wide, how="inner")
    for c in ("examples_seen", "train_seconds"):
        if c not in wide.columns:
            wide[c] = np.nan
    out = schema.over_seeds(wide, ["method", "sparsity", "budget"], metric, also=["examples_seen", "train_seconds"])
    out = out.join(
        wide.groupby(["method", "sparsity", "budget"])["seed"].nunique().rename("seeds"),
        on=["method", "sparsity", "budget"],
    )
    return out[CURVE_COLUMNS].sort_values(["sparsity", "method", "budget"]).reset_index(drop=True)


def with_intervals(table: pd.DataFrame, intervals: pd.DataFrame) -> pd.DataFrame:
    """``table`` (:func:`budget_curve_table`) with ``lo``/``hi`` replaced by confidence intervals:
    ``intervals`` has method, sparsity, budget, low, high (e.g. pruned rows of one metric of
    :func:`kaviz.analysis.evidence.summary`, on the table's scale). Points without one keep lo = hi =
    the mean, so no band is drawn there."""
    keys = ["method", "sparsity", "budget"]
    iv = intervals[intervals["budget"].notna()][[*keys, "low", "high"]].copy()
    for k in ("sparsity", "budget"):
        iv[k] = iv[k].astype(float).round(9)
    out = table.assign(_s=table["sparsity"].astype(float).round(9), _b=table["budget"].astype(float).round(9))
    iv = iv.rename(columns={"sparsity": "_s", "budget": "_b"}).drop_duplicates(["method", "_s", "_b"])
    out = out.merge(iv, on=["method", "_s", "_b"], how="left")
    out["lo"] = out["low"].fillna(out["mean"])
    out["hi"] = out["high"].fillna(out["mean"])
    return out[list(table.columns)]


def _method_line(x: list, y: list, method: str, color: str, first: bool, size: int, custom, hover: str) -> go.Scatter:
    """One method's line in one panel (its legend entry only in the first panel)."""
    return go.Scatter(
        x=x,
        y=y,
        mode="lines+markers",
        name=method,
        legendgroup=method,
        showlegend=first,
        line={"color": color},
        marker={"color": color, "size": size},
        customdata=custom,
        hovertemplate=hover,
    )


def _refs(fig: go.Figure, refs: dict[str, float], cols: int) -> None:
    kinds = {TEACHER: "teacher", CONSTANT: "constant"}
    for label, y in refs.items():
        if y is None or not np.isfinite(y):
            continue
        color, dash, width = LEVEL_STYLES[kinds[label]] if label in kinds else ("#555555", "dashdot", 1.2)
        for c in range(1, cols + 1):
            fig.add_hline(y=y, line={"dash": dash, "color": color, "width": width}, row=1, col=c)
        fig.add_trace(  # a legend entry for the line
            go.Scatter(x=[None], y=[None], mode="lines", name=f"{label} ({y:.3g})", line={"dash": dash, "color": color})
        )


def budget_curves(
    table: pd.DataFrame,
    *,
    x: XAxis = "examples_seen",
    metric: str = "score",
    refs: dict[str, float] | None = None,
    log_x: bool = True,
    band: str = "spread",
) -> go.Figure:
    """``metric`` against budget, one panel per sparsity, one line per method with ``lo``..``hi``
    shaded where it is wider than a point (the seed range of :func:`budget_curve_table`, or the
    intervals of :func:`with_intervals`: ``band`` names it); ``refs`` (label -> value: the teacher,
    the constant answer) as horizontal lines."""
    if x not in X_TITLES:
        raise ValueError(f"x {x!r} is not one of {', '.join(X_TITLES)}")
    sparsities = sorted(table["sparsity"].unique())
    cols = max(1, len(sparsities))
    fig = make_subplots(
        rows=1, cols=cols, shared_yaxes=True, subplot_titles=[f"{100 * s:g}% sparse" for s in sparsities]
    )
    methods = list(dict.fromkeys(table["method"]))
    for c, sp in enumerate(sparsities, start=1):
        for method in methods:
            d = table[(table["method"] == method) & (table["sparsity"] == sp)].sort_values(x)
            if d.empty:
                continue
            color = method_color(method, methods)
            if (d["hi"] > d["lo"]).any():
                fig.add_trace(seed_band(d[x], d["lo"], d["hi"], color, f"{method} {band}", method), row=1, col=c)
            hover = (
                f"<b>{method}</b>, {100 * sp:g}%<br>budget %{{customdata[0]:g}} epochs, "
                "%{customdata[1]:,.0f} examples, %{customdata[2]:.0f} s"
                f"<br>{metric} %{{y:.4f}} (%{{customdata[3]}} seeds)<extra></extra>"
            )
            custom = d[["budget", "examples_seen", "train_seconds", "seeds"]].to_numpy()
            line = _method_line(d[x].tolist(), d["mean"].tolist(), method, color, c == 1, 8, custom, hover)
            fig.add_trace(line, row=1, col=c)
        fig.update_xaxes(title_text=X_TITLES[x], type="log" if log_x else "linear", row=1, col=c)
    _refs(fig, refs or {}, cols)
    fig.update_yaxes(title_text=metric, row=1, col=1)
    fig.update_layout(legend={"title": "method"}, hovermode="closest", margin={"t": 40})
    ref_values = [v for v in (refs or {}).values() if v is not None and np.isfinite(v)]
    return clamp_score_axis(fig, metric, ref_values)


def cka_budget_table(knowledge: pd.DataFrame, metrics: pd.DataFrame, kind: str = "linear_cka") -> pd.DataFrame:
    """Per-layer ``kind`` similarity to the fine-tuned teacher of every budget unit, mean over seeds:
    method, sparsity, budget, layer, value, examples_seen, train_seconds."""
    k = schema.layer_rows(knowledge)
    k = k[(k["stage"] == "pruned") & k["budget"].notna() & (k["reference"] == "finetuned") & (k["metric"] == kind)]
    if k.empty:
        return pd.DataFrame(columns=["method", "sparsity", "budget", "layer", "value", *_COST])
    cost = metrics[metrics["metric"].isin(["examples_seen", "train_seconds"])].pivot_table(
        index="unit", columns="metric", values="value", aggfunc="first"
    )
    k = k.join(cost, on="unit")
    for c in ("examples_seen", "train_seconds"):
        if c not in k.columns:
            k[c] = np.nan
    out = schema.over_seeds(k, ["method", "sparsity", "budget", "layer"], also=["examples_seen", "train_seconds"])
    out = out.rename(columns={"mean": "value"})[["method", "sparsity", "budget", "layer", "value", *_COST]]
    return out.sort_values(["sparsity", "method", "layer", "budget"]).reset_index(drop=True)


def cka_vs_budget(table: pd.DataFrame, sparsity: float, *, x: XAxis = "examples_seen", log_x: bool = True) -> go.Figure:
    """Similarity to the teacher per layer (one panel each: 0 = embeddings) against budget at one
    sparsity, one line per method: where the student's representations catch up with the teacher's."""
    if x not in X_TITLES:
        raise ValueError(f"x {x!r} is not one of {', '.join(X_TITLES)}")
    t = table[np.isclose(table["sparsity"], sparsity)]
    layers = sorted(t["layer"].unique())
    fig = make_subplots(
        rows=1,
        cols=max(1, len(layers)),
        shared_yaxes=True,
        subplot_titles=[("embeddings" if layer == 0 else f"layer {layer}") for layer in layers],
        horizontal_spacing=0.02,
    )
    methods = list(dict.fromkeys(t["method"]))
    for c, layer in enumerate(layers, start=1):
        for method in methods:
            d = t[(t["method"] == method) & (t["layer"] == layer)].sort_values(x)
            color = method_color(method, methods)
            hover = (
                f"<b>{method}</b>, layer {layer}<br>budget %{{customdata[0]:g}} epochs"
                "<br>CKA to teacher %{y:.3f}<extra></extra>"
            )
            custom = d[["budget"]].to_numpy()
            line = _method_line(d[x].tolist(), d["value"].tolist(), method, color, c == 1, 6, custom, hover)
            fig.add_trace(line, row=1, col=c)
        fig.update_xaxes(type="log" if log_x else "linear", showticklabels=False, row=1, col=c)
    fig.update_yaxes(title_text="CKA to the teacher", range=[0, 1.02], row=1, col=1)
    fig.update_layout(
        legend={"title": "method"},
        margin={"t": 40, "b": 40},
        title={"text": f"{100 * sparsity:g}% sparse: per-layer similarity to the teacher ({X_TITLES[x]} →)"},
    )
    return fig
