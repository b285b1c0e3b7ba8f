"""Figures that compare runs: DataFrame in, plotly Figure out.  No I/O, no streamlit.

Methods keep their colours from :mod:`kaviz.views.plots`; runs are told apart by line dash and marker
symbol, in the order they appear in the table.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from kaviz.views.plots import layer_role_grid, method_color
from kaviz.views.plots_costs import add_front
from kaviz.views.plots_sparsity import (
    CONSTANT,
    Level,
    XAxis,
    clamp_score_axis,
    run_style,
    stage_levels,
    value_over_sparsity,
)


def _check(df: pd.DataFrame, cols: list[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{what} table lacks columns {missing}; columns: {list(df.columns)}")


def accuracy_compare(
    curves: pd.DataFrame,
    metric: str = "score",
    *,
    x: XAxis = "measured",
    constants: dict[str, float] | None = None,
) -> go.Figure:
    """``metric`` over encoder sparsity for several runs on one set of axes.

    ``curves`` is :func:`kaviz.analysis.compare.stack` of :func:`kaviz.views.ui_data.sparsity_curve_table` frames
    (run, stage, method, sparsity, measured_sparsity, mean, lo, hi, n_seeds).  One trace per
    (run, method), coloured by method, dashed and marked by run; each run's fine-tuned teacher as a
    grey horizontal line in the run's dash and, from ``constants`` (run -> value), its best
    constant answer (:func:`kaviz.views.plots_sparsity.value_over_sparsity`).
    """
    _check(curves, ["run"], "curves")
    levels = stage_levels(curves, pretrained=False)
    levels += [Level(v, CONSTANT, "constant", run) for run, v in (constants or {}).items()]
    return value_over_sparsity(curves, metric, x=x, levels=levels)


def knowledge_compare(curves: pd.DataFrame, metric: str, reference: str) -> go.Figure:
    """Per-layer knowledge curves of several runs: ``value`` over ``layer`` (0 = embeddings), one
    line per (run, method), coloured by method and dashed by run.

    ``curves`` is :func:`kaviz.analysis.compare.knowledge_curves` (run, method, sparsity, layer, value, n_seeds).
    """
    _check(curves, ["run", "method", "layer", "value"], "knowledge curves")
    runs = list(dict.fromkeys(curves["run"]))
    methods = list(dict.fromkeys(curves["method"]))
    fig = go.Figure()
    for run in runs:
        dash, symbol = run_style(runs, run)
        for method in methods:
            d = curves[(curves["run"] == run) & (curves["method"] == method)].sort_values("layer")
            if d.empty:
                continue
            color = method_color(method, methods)
            fig.add_trace(
                go.Scatter(
                    x=d["layer"].tolist(),
                    y=d["value"].tolist(),
                    mode="lines+markers",
                    name=f"{method} · {run}",
                    legendgroup=run,
                    line={"color": color, "dash": dash},
                    marker={"color": color, "symbol": symbol, "size": 7},
                    hovertemplate=f"<b>{method}</b> · {run}<br>layer %{{x}}: {metric} %{{y:.4f}}<extra></extra>",
                )
            )
    fig.update_layout(
        xaxis={"title": "layer (0 = embeddings)", "dtick": 1},
        yaxis={"title": f"{metric} vs {reference}"},
        hovermode="closest",
        margin={"t": 30},
    )
    return fig


def difference_heatmap(diff: pd.DataFrame, names: tuple[str, str], metric: str = "score") -> go.Figure:
    """``names[0]`` minus ``names[1]`` per method (rows) and target sparsity (columns), a diverging
    scale centred on zero.  ``diff`` is :func:`kaviz.analysis.compare.score_difference`."""
    _check(diff, ["method", "sparsity", "difference"], "difference")
    grid = diff.pivot_table(index="method", columns="sparsity", values="difference", aggfunc="mean", sort=False)
    grid = grid.reindex(columns=sorted(grid.columns))
    z = grid.to_numpy()
    bound = float(abs(diff["difference"]).max()) if len(diff) else 1.0
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[f"{100 * s:g}%" for s in grid.columns],
            y=list(grid.index),
            zmid=0.0,
            zmin=-(bound or 1.0),
            zmax=bound or 1.0,
            colorscale="RdBu",
            colorbar={"title": "difference"},
            texttemplate="%{z:+.3f}",
            hovertemplate=f"%{{y}} at %{{x}}: {names[0]} − {names[1]} = %{{z:+.4f}}<extra></extra>",
            name="difference",
        )
    )
    fig.update_layout(
        title=f"{metric}: {names[0]} − {names[1]}",
        xaxis={"title": "target sparsity", "type": "category"},
        yaxis={"title": "", "autorange": "reversed"},
        height=max(250, 45 * len(grid) + 130),
        margin={"t": 60},
    )
    return fig


def mask_overlap_heatmap(overlap: pd.DataFrame, title: str = "") -> go.Figure:
    """Jaccard overlap of kept weights per matrix, layer (rows) x role (columns), 0 to 1.

    ``overlap`` is :func:`kaviz.analysis.compare.mask_overlap` (layer, role, jaccard, ...)."""
    _check(overlap, ["layer", "role", "jaccard"], "mask overlap")
    grid, roles = layer_role_grid(overlap, "jaccard", dropna=False)
    fig = go.Figure(
        go.Heatmap(
            z=grid.to_numpy(),
            x=roles,
            y=[f"layer {int(i)}" for i in grid.index],
            zmin=0.0,
            zmax=1.0,
            colorscale="Viridis",
            colorbar={"title": "Jaccard"},
            texttemplate="%{z:.2f}",
            hovertemplate="%{y}, %{x}: %{z:.3f} of the weights kept by either are kept by both<extra></extra>",
            name="jaccard",
        )
    )
    fig.update_layout(
        title=title or "kept-weight overlap (Jaccard)",
        xaxis={"title": "matrix"},  # at the bottom: on top its title ran into the figure title
        yaxis={"title": "", "autorange": "reversed"},
        height=max(250, 36 * len(grid) + 130),
        margin={"t": 90},
    )
    return fig


def surviving_heads_heatmap(heads: pd.DataFrame, labels: dict[str, str] | None = None) -> go.Figure:
    """Fraction of non-zero Q/K/V weights per head, layer (rows) x head (columns), one panel per
    ``unit`` value (titled by ``labels``).  ``heads`` is :func:`kaviz.analysis.compare.surviving_heads`
    output with a ``unit`` column (:func:`kaviz.analysis.compare.unit_masks`)."""
    _check(heads, ["unit", "layer", "head", "nonzero"], "surviving heads")
    units = list(dict.fromkeys(heads["unit"]))
    labels = labels or {}
    fig = make_subplots(rows=1, cols=len(units), subplot_titles=[labels.get(u, u) for u in units])
    n_layers = 0
    for k, unit in enumerate(units):
        grid = heads[heads["unit"] == unit].pivot_table(index="layer", columns="head", values="nonzero").sort_index()
        n_layers = max(n_layers, len(grid))
        fig.add_trace(
            go.Heatmap(
                z=grid.to_numpy(),
                x=[f"h{int(h)}" for h in grid.columns],
                y=[f"layer {int(i)}" for i in grid.index],
                zmin=0.0,
                zmax=1.0,
                colorscale="Viridis",
                showscale=k == 0,
                colorbar={"title": "non-zero", "tickformat": ".0%"},
                texttemplate="%{z:.0%}",
                hovertemplate=f"{labels.get(unit, unit)}<br>%{{y}}, %{{x}}: %{{z:.1%}} of Q/K/V non-zero<extra></extra>",
                name=labels.get(unit, unit),
            ),
            row=1,
            col=k + 1,
        )
        fig.update_yaxes(autorange="reversed", row=1, col=k + 1)
    fig.update_layout(height=max(250, 36 * n_layers + 120), margin={"t": 60})
    return fig


# ----- many runs at once --------------------------------------------------------------------------

OVERLAY_X = {
    "sparsity": "target encoder sparsity",
    "nonzero_params": "non-zero encoder weights (log scale)",
    "speedup": "measured speedup over the run's dense teacher (log scale)",
}


def overlay(points: pd.DataFrame, x: str = "sparsity") -> go.Figure:
    """Score of every (run, method, sparsity) of ``points`` (:func:`kaviz.analysis.compare.overlay_points`)
    against ``x``: colour by method, marker by run (runs beyond the symbol list reuse them), and the
    Pareto front across all runs (:func:`kaviz.views.plots_costs.pareto_front`) as a grey step line."""
    if x not in OVERLAY_X:
        raise ValueError(f"x {x!r} is not one of {', '.join(OVERLAY_X)}")
    _check(points, ["run", "method", "sparsity", "score", x], "overlay points")
    runs = list(dict.fromkeys(points["run"]))
    methods = list(dict.fromkeys(points["method"]))
    fig = go.Figure()
    for method in methods:
        d = points[(points["method"] == method) & points[x].notna()]
        if d.empty:
            continue
        fig.add_trace(
            go.Scatter(
                x=d[x].tolist(),
                y=d["score"].tolist(),
                mode="markers",
                name=method,
                marker={
                    "color": method_color(method, methods),
                    "size": 9,
                    "symbol": [run_style(runs, r)[1] for r in d["run"]],
                },
                customdata=d[["run", "sparsity"]].to_numpy(),
                hovertemplate=(
                    f"<b>{method}</b> · %{{customdata[0]}}<br>target %{{customdata[1]:.0%}}"
                    "<br>score %{y:.4f}<extra></extra>"
                ),
            )
        )
    add_front(fig, points, x)
    axis = {"title": OVERLAY_X[x]}
    if x == "sparsity":
        axis["tickformat"] = ".0%"
    else:
        axis["type"] = "log"
    fig.update_layout(xaxis=axis, yaxis={"title": "score"}, legend={"title": "method"}, margin={"t": 30})
    clamp_score_axis(fig, "score")
    return fig
