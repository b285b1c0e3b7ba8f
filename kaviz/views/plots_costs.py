"""What pruning buys: score against measured speedup and size, from a run's metrics and
``inference`` tables (:mod:`kaviz.analysis.costs`). DataFrame in, plotly Figure out; no I/O.

One point per (unit, variant) at one batch size: x the measured speedup over the dense teacher
(log scale; below 1 is slower, and drawn as such) or the size on disk relative to the teacher's,
y the task score; the teacher sits at (1, its score); the Pareto front (no other point is both
faster and better) is a grey step line through the points on it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from kaviz.views.plots import method_color

XAxis = Literal["speedup", "size_ratio"]
X_TITLES = {
    "speedup": "measured speedup over the dense teacher (x, log scale)",
    "size_ratio": "size on disk relative to the dense teacher (log scale)",
}
VARIANT_SYMBOLS = {"dense": "circle", "sparse": "diamond", "shrunk": "square", "semi-structured": "star"}
TABLE_COLUMNS = ["unit", "stage", "method", "sparsity", "variant", "batch_size", "score", "median_s", "speedup",
                 "size_ratio", "disk_bytes", "peak_bytes", "note"]  # fmt: skip


def cost_table(metrics: pd.DataFrame, inference: pd.DataFrame, batch_size: int) -> pd.DataFrame:
    """One row per (unit, variant) measured at ``batch_size``: unit, stage, method, sparsity,
    variant, batch_size, score, median_s, speedup, size_ratio, disk_bytes, peak_bytes, note; rows
    that could not be timed (a variant that does not apply) are left out."""
    if inference.empty:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    score = metrics[metrics["metric"] == "score"][["unit", "stage", "method", "sparsity", "value"]]
    rows = inference[(inference["batch_size"] == batch_size) & inference["median_s"].notna()]
    out = rows.merge(score.rename(columns={"value": "score"}), on="unit", how="inner")
    for c in TABLE_COLUMNS:
        if c not in out.columns:
            out[c] = np.nan
    return out[TABLE_COLUMNS].reset_index(drop=True)


#: Columns where a larger x is better on a score-vs-cost plot (others: smaller is better).
HIGHER_IS_BETTER = ("speedup", "sparsity", "measured_sparsity")


def pareto_front(table: pd.DataFrame, x: str) -> pd.DataFrame:
    """The rows no other row beats on both counts: a higher score, and a higher ``x`` for
    :data:`HIGHER_IS_BETTER` columns (speedup, sparsity) or a lower one (size, non-zero
    parameters). Sorted along ``x``."""
    t = table.dropna(subset=[x, "score"])
    better_x = (lambda a, b: a >= b) if x in HIGHER_IS_BETTER else (lambda a, b: a <= b)
    keep = []
    for i, r in t.iterrows():
        dominated = (
            better_x(t[x], r[x]) & (t["score"] >= r["score"]) & ((t[x] != r[x]) | (t["score"] != r["score"]))
        ).any()
        if not dominated:
            keep.append(i)
    return t.loc[keep].sort_values(x)


def add_front(fig: go.Figure, table: pd.DataFrame, x: str) -> None:
    """Draw :func:`pareto_front` of ``table`` along ``x`` as a grey step line (when it has 2+ points)."""
    front = pareto_front(table, x)
    if len(front) > 1:
        fig.add_trace(
            go.Scatter(
                x=front[x].tolist(),
                y=front["score"].tolist(),
                mode="lines",
                name="Pareto front",
                line={"color": "#999999", "width": 1, "shape": "hv" if x in HIGHER_IS_BETTER else "vh"},
                hoverinfo="skip",
            )
        )


def score_vs_cost(table: pd.DataFrame, x: XAxis = "speedup") -> go.Figure:
    """Score against speedup (or size) for every (unit, variant) of ``table`` (:func:`cost_table`):
    colour by method, marker by variant; the teacher as a dashed cross at x = 1; the Pareto front."""
    if x not in X_TITLES:
        raise ValueError(f"x {x!r} is not one of {', '.join(X_TITLES)}")
    fig = go.Figure()
    pruned = table[table["stage"] == "pruned"]
    methods = list(dict.fromkeys(pruned["method"]))
    for (method, variant), d in pruned.groupby(["method", "variant"], sort=False):
        color = method_color(method, methods)
        fig.add_trace(
            go.Scatter(
                x=d[x].tolist(),
                y=d["score"].tolist(),
                mode="markers",
                name=f"{method} · {variant}",
                legendgroup=method,
                marker={"color": color, "size": 10, "symbol": VARIANT_SYMBOLS.get(variant, "circle")},
                customdata=d[["sparsity", "median_s", "speedup", "size_ratio"]].to_numpy(),
                hovertemplate=(
                    f"<b>{method}</b> · {variant}<br>target %{{customdata[0]:.0%}}<br>score %{{y:.4f}}"
                    "<br>%{customdata[1]:.4f} s per batch, %{customdata[2]:.2f}x the teacher's speed"
                    "<br>size %{customdata[3]:.2f}x the teacher's<extra></extra>"
                ),
            )
        )
    teacher = table[(table["stage"] == "finetuned") & (table["variant"] == "dense")]
    if len(teacher):
        y = float(teacher["score"].iloc[0])
        fig.add_trace(
            go.Scatter(
                x=[1.0],
                y=[y],
                mode="markers",
                name="fine-tuned teacher (dense)",
                marker={"color": "#222222", "size": 13, "symbol": "x"},
                hovertemplate="fine-tuned teacher: score %{y:.4g}, 1x<extra></extra>",
            )
        )
        fig.add_vline(x=1.0, line={"dash": "dot", "color": "#999999", "width": 1})
    add_front(fig, table[table["stage"].isin(["pruned", "finetuned"])], x)  # the candidates
    fig.update_layout(
        xaxis={"title": X_TITLES[x], "type": "log"},
        yaxis={"title": "score"},
        legend={"title": "method · variant"},
        hovermode="closest",
        margin={"t": 30},
    )
    from kaviz.views.plots_sparsity import clamp_score_axis

    return clamp_score_axis(fig, "score")
