"""A value over sparsity: the one figure builder behind the accuracy, knowledge (general probe),
attribution and compare pages.  DataFrame in, plotly Figure out; no I/O, arguments never modified.

Every such figure draws the same things the same way:

- one line per method (per run and method when the table has a ``run`` column), coloured by
  method (:func:`kaviz.views.plots.method_color`), dashed and marked by run;
- small-dense students and single points as markers only (:func:`markers_only`);
- the spread over seeds as a shaded band where a point has several seeds (``lo`` to ``hi``);
- horizontal reference levels across the whole axis (:class:`Level`): the fine-tuned teacher
  (dashed), the pre-trained model (dotted) and the best constant answer (grey dotted), so that a
  score can always be told from the answer that needs no model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import pandas as pd
import plotly.graph_objects as go

from kaviz.core import schema
from kaviz.core.registry import STAGE_COLORS
from kaviz.views.plots import MARKER_METHODS, _rgba, method_color
from kaviz.views.ui_data import sparsity_curve_table, with_intervals

XAxis = Literal["measured", "target"]
RUN_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
RUN_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "star")
#: Style of each kind of reference level: colour, dash, width.
LEVEL_STYLES = {
    "teacher": (STAGE_COLORS["finetuned"], "dash", 1.5),
    "pretrained": (STAGE_COLORS["pretrained"], "dot", 1.5),
    "constant": ("#999999", "dot", 1.2),
}
TEACHER, PRETRAINED, CONSTANT = "fine-tuned teacher", "pre-trained", "constant answer"
_LEVEL_OF_STAGE = {"finetuned": ("teacher", TEACHER), "pretrained": ("pretrained", PRETRAINED)}
CURVE_COLUMNS = ["stage", "method", "sparsity", "mean", "lo", "hi", "n_seeds"]


@dataclass(frozen=True)
class Level:
    """A horizontal reference across the sparsity axis.  ``kind`` picks the style
    (:data:`LEVEL_STYLES`); ``run`` (compare figures) groups it with that run's lines and draws it
    in the run's dash."""

    value: float
    label: str
    kind: Literal["teacher", "pretrained", "constant"] = "teacher"
    run: str | None = None


def markers_only(method: str, n_points: int) -> bool:
    """Small-dense students (separate models of different shapes) and single points are drawn as
    markers, not lines."""
    return method in MARKER_METHODS or n_points == 1


def sparsity_axis_end(xs: pd.Series) -> float:
    """Where the sparsity axis (and the reference lines across it) ends: 1, or the largest x."""
    xs = xs.dropna()
    return max(1.0, float(xs.max())) if len(xs) else 1.0


def run_style(runs: list[str], run: str) -> tuple[str, str]:
    """(dash, symbol) of ``run``, the n-th of ``runs``."""
    i = runs.index(run)
    return RUN_DASHES[i % len(RUN_DASHES)], RUN_SYMBOLS[i % len(RUN_SYMBOLS)]


def stage_levels(curve: pd.DataFrame, *, pretrained: bool = True) -> list[Level]:
    """The teacher's (and, with ``pretrained``, the pre-trained model's) level of each run in a
    curve table, where the table has them."""
    out = []
    runs = list(dict.fromkeys(curve["run"])) if "run" in curve.columns else [None]
    for run in runs:
        rows = curve if run is None else curve[curve["run"] == run]
        for stage in ("finetuned", "pretrained") if pretrained else ("finetuned",):
            row = rows[rows["stage"] == stage]
            if len(row):
                kind, label = _LEVEL_OF_STAGE[stage]
                out.append(Level(float(row["mean"].iloc[0]), label, kind, run))  # type: ignore[arg-type]
    return out


def seed_band(x: pd.Series, lo: pd.Series, hi: pd.Series, color: str, name: str, group: str) -> go.Scatter:
    """The spread over seeds as a shaded band from ``lo`` to ``hi`` along ``x`` (no legend entry of
    its own: it toggles with its line's legend group)."""
    return go.Scatter(
        x=[*x, *x[::-1]],
        y=[*hi, *lo[::-1]],
        mode="lines",  # plotly's default for a few points adds markers, in the colorway's colours
        fill="toself",
        fillcolor=_rgba(color, 0.18),
        line={"width": 0},
        name=name,
        legendgroup=group,
        showlegend=False,
        hoverinfo="skip",
    )


def _check(curve: pd.DataFrame, xcol: str) -> None:
    missing = [c for c in [*CURVE_COLUMNS, xcol] if c not in curve.columns]
    if missing:
        raise ValueError(f"curve table lacks columns {missing}; columns: {list(curve.columns)}")


def _level_trace(level: Level, x_end: float, metric: str, runs: list[str]) -> go.Scatter:
    color, dash, width = LEVEL_STYLES[level.kind]
    name = level.label
    extra: dict = {}
    if level.run is not None:
        name = f"{level.label} · {level.run}"
        if level.kind == "teacher":
            dash = run_style(runs, level.run)[0]
        extra = {"legendgroup": level.run}
    return go.Scatter(
        x=[0.0, x_end],
        y=[level.value, level.value],
        mode="lines",
        name=name,
        **extra,
        line={"color": color, "dash": dash, "width": width},
        hovertemplate=f"{name}: {metric} %{{y:.4g}}<extra></extra>",
    )


def value_over_sparsity(
    curve: pd.DataFrame,
    metric: str,
    *,
    x: XAxis = "measured",
    levels: Sequence[Level] = (),
    band: bool = True,
    y_title: str | None = None,
) -> go.Figure:
    """``metric`` of every method over encoder sparsity, from a curve table.

    ``curve``: one row per (stage, method, target sparsity[, run]) with columns stage, method,
    sparsity, mean, lo, hi, n_seeds, and measured_sparsity for ``x="measured"`` (the measured
    fraction of zero encoder weights); rows of the dense stages are left out of the lines (give
    them as ``levels``, e.g. :func:`stage_levels`).  With a ``run`` column, one line per (run,
    method), dashed and marked by run.  ``band``: shade ``lo``..``hi`` where they differ (a spread
    over seeds, or a confidence interval).  Raises ValueError on an unknown ``x`` or missing columns.
    """
    if x not in ("measured", "target"):
        raise ValueError(f"x {x!r} is not 'measured' or 'target'")
    xcol = "measured_sparsity" if x == "measured" else "sparsity"
    _check(curve, xcol)
    pruned = curve[~curve["stage"].isin(["pretrained", "finetuned"])]
    by_run = "run" in curve.columns
    runs = list(dict.fromkeys(curve["run"])) if by_run else [None]
    methods = list(dict.fromkeys(pruned["method"]))
    fig = go.Figure()
    for run in runs:
        dash, symbol = run_style(runs, run) if by_run else ("solid", "circle")
        for method in methods:
            d = pruned[pruned["method"] == method]
            if by_run:
                d = d[d["run"] == run]
            if d.empty:
                continue
            d = d.sort_values(xcol)
            color = method_color(method, methods)
            name = f"{method} · {run}" if by_run else method
            group = {"legendgroup": run, "legendgrouptitle": {"text": run}} if by_run else {"legendgroup": method}
            if band and ((d["hi"] - d["lo"]).abs() > 1e-12).any():
                fig.add_trace(seed_band(d[xcol], d["lo"], d["hi"], color, f"{name} spread", group["legendgroup"]))
            only = markers_only(method, len(d))
            size = 9 if by_run else (11 if only else 8)
            measured = d["measured_sparsity"] if "measured_sparsity" in d.columns else d["sparsity"]
            custom = pd.DataFrame(
                {"t": d["sparsity"], "m": measured, "n": d["n_seeds"], "lo": d["lo"], "hi": d["hi"]}
            ).to_numpy()
            fig.add_trace(
                go.Scatter(
                    x=d[xcol].tolist(),
                    y=d["mean"].tolist(),
                    mode="markers" if only else "lines+markers",
                    name=name,
                    **group,
                    line={"color": color, "dash": dash},
                    marker={
                        "color": color,
                        "size": size,
                        "symbol": symbol if by_run else ("diamond" if only else "circle"),
                    },
                    customdata=custom,
                    hovertemplate=(
                        f"<b>{name}</b><br>target %{{customdata[0]:.0%}}, measured %{{customdata[1]:.1%}}"
                        f"<br>{metric} %{{y:.4g}} (%{{customdata[3]:.4g}} to %{{customdata[4]:.4g}},"
                        " %{customdata[2]} seeds)<extra></extra>"
                    ),
                )
            )
    x_end = sparsity_axis_end(pruned[xcol])
    for level in levels:
        fig.add_trace(_level_trace(level, x_end, metric, [r for r in runs if r is not None]))
    fig.update_layout(
        xaxis={
            "title": "encoder sparsity (measured)" if x == "measured" else "target encoder sparsity",
            "tickformat": ".0%",
            "range": [-0.02, x_end + 0.02],
        },
        yaxis={"title": y_title or metric},
        legend={"groupclick": "toggleitem"} if by_run else {"title": "method"},
        hovermode="closest",
        margin={"t": 30},
    )
    clamp_score_axis(fig, metric)
    return fig


def clamp_score_axis(fig: go.Figure, metric: str, extra: Sequence[float] = ()) -> go.Figure:
    """Set the y range of a task-score figure around its traces' values (and ``extra``, e.g. the
    reference lines drawn as shapes), inside the metric's bounds (:func:`kaviz.core.schema.score_axis_range`)."""
    values = [y for t in fig.data if getattr(t, "y", None) is not None for y in t.y if isinstance(y, (int, float))]
    span = schema.score_axis_range([*values, *extra], metric)
    if span is not None:
        fig.update_yaxes(range=span)
    return fig


def accuracy_vs_sparsity(
    metrics: pd.DataFrame,
    metric: str = "score",
    *,
    x: XAxis = "measured",
    show_pretrained: bool = False,
    spread: Literal["std", "range"] = "std",
    constant: float | None = None,
    intervals: pd.DataFrame | None = None,
) -> go.Figure:
    """``metric`` of every method over encoder sparsity, from a tidy metrics table (Run.metrics()):
    one line per method, a band of mean ± std (or min-max) over seeds, the fine-tuned teacher and,
    with ``show_pretrained``, the pre-trained model as reference lines, and the best ``constant``
    answer (:func:`kaviz.analysis.evidence.reference_levels`) when given; with ``intervals``
    (:func:`kaviz.views.ui_data.with_intervals`) the band is their confidence interval instead.
    Raises ValueError when ``metric`` is not in the table."""
    curve = sparsity_curve_table(metrics, metric, spread)
    if intervals is not None:
        curve = with_intervals(curve, intervals)
    levels = stage_levels(curve, pretrained=show_pretrained)
    if constant is not None:
        levels.append(Level(constant, CONSTANT, "constant"))
    return value_over_sparsity(curve, metric, x=x, levels=levels)
