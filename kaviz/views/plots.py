"""Figures: DataFrame in, plotly Figure out.  No I/O, no streamlit, arguments never modified.

Colours are fixed per method and per unit status so that every page draws them the same way.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from kaviz.core.registry import METHOD_INFO, STAGE_NAMES

METHOD_COLORS = {name: info.color for name, info in METHOD_INFO.items()}
STATUS_COLORS = {"done": "#2CA02C", "running": "#1F77B4", "pending": "#C7C7C7", "failed": "#D62728"}
#: Methods whose points are separate models of different shapes, drawn as markers, not lines.
MARKER_METHODS = tuple(name for name, info in METHOD_INFO.items() if info.markers_only)
#: Encoder matrices per layer in display order (kaviz.core.structure.ROLES; repeated here so that
#: plotting does not import torch).
ROLE_ORDER = ("query", "key", "value", "attn_out", "ffn_gate", "ffn_in", "ffn_out")


def method_color(method: str, known: list[str] | None = None) -> str:
    """The fixed colour of a method; other labels (imported students) get palette colours in order."""
    if method in METHOD_COLORS:
        return METHOD_COLORS[method]
    palette = qualitative.Dark24
    others = [m for m in (known or [method]) if m not in METHOD_COLORS]
    idx = others.index(method) if method in others else len(others)
    return palette[idx % len(palette)]


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


# ----- stage diagram ------------------------------------------------------------------------------

_BOX_W, _BOX_H = 0.9, 0.6


def _cell_status(statuses: list[str]) -> str:
    if "failed" in statuses:
        return "failed"
    if "running" in statuses:
        return "running"
    if statuses and all(s == "done" for s in statuses):
        return "done"
    return "pending"


def stage_diagram(units: pd.DataFrame, scores: dict[str, float] | None = None, score_format: str = ".1f") -> go.Figure:
    """Pre-trained -> fine-tuned -> pruned (methods x target sparsities) as coloured boxes.

    ``units`` is Run.units() (unit, stage, method, sparsity, seed, status, ...).  A box's colour
    is its status (STATUS_COLORS); a pruned cell with several seeds is failed if any failed,
    running if any runs, done when all are done, else pending, and reads ``k/n``.  ``scores``
    (unit -> value, as shown: task scores ×100) adds the value, averaged over seeds and printed with
    ``score_format``, to done boxes.  Each status is one
    filled trace (named by the status) and the labels one text trace named ``labels``.
    """
    scores = scores or {}
    boxes: list[dict] = []  # x, y (centres), status, text, hover
    pruned = units[units["stage"] == "pruned"]
    methods = list(dict.fromkeys(pruned["method"]))
    targets = sorted(pruned["sparsity"].dropna().unique())
    mid = -(len(methods) - 1) / 2 if methods else 0.0

    def box(x: float, y: float, rows: pd.DataFrame, title: str) -> None:
        statuses = rows["status"].tolist()
        status = _cell_status(statuses)
        n_done = statuses.count("done")
        lines = [title] if title else []
        if len(statuses) > 1:
            lines.append(f"{n_done}/{len(statuses)} seeds done")
        vals = [scores[u] for u in rows["unit"] if u in scores]
        if vals and n_done:
            lines.append(format(sum(vals) / len(vals), score_format))
        elif len(statuses) == 1:
            lines.append(status)
        hover = "<br>".join(f"{u}: {s}" for u, s in zip(rows["unit"], statuses))
        boxes.append({"x": x, "y": y, "status": status, "text": "<br>".join(lines), "hover": hover})

    for x, stage, title in (
        (0.0, "pretrained", STAGE_NAMES["pretrained"]),
        (1.4, "finetuned", STAGE_NAMES["finetuned"]),
    ):
        rows = units[units["stage"] == stage]
        if len(rows):
            box(x, mid, rows, title)
    x0 = 3.0
    for i, method in enumerate(methods):
        for j, t in enumerate(targets):
            rows = pruned[(pruned["method"] == method) & (pruned["sparsity"] == t)]
            if len(rows):
                box(x0 + j, -float(i), rows, "")

    fig = go.Figure()
    for status, color in STATUS_COLORS.items():
        mine = [b for b in boxes if b["status"] == status]
        if not mine:
            continue
        xs: list[float | None] = []
        ys: list[float | None] = []
        for b in mine:
            x0b, x1b, lo, hi = b["x"] - _BOX_W / 2, b["x"] + _BOX_W / 2, b["y"] - _BOX_H / 2, b["y"] + _BOX_H / 2
            xs += [x0b, x1b, x1b, x0b, x0b, None]
            ys += [lo, lo, hi, hi, lo, None]
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines",
                fill="toself",
                fillcolor=_rgba(color, 0.22),  # light fills: the dark labels stay readable on every status
                line={"color": color, "width": 1},
                name=status,
                hoverinfo="skip",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=[b["x"] for b in boxes],
            y=[b["y"] for b in boxes],
            mode="text",
            text=[b["text"] for b in boxes],
            hovertext=[b["hover"] for b in boxes],
            hoverinfo="text",
            textfont={"size": 11, "color": "#1a1a1a"},
            name="labels",
            showlegend=False,
        )
    )
    arrows = []
    if (units["stage"] == "pretrained").any() and (units["stage"] == "finetuned").any():
        arrows.append((0.0 + _BOX_W / 2, 1.4 - _BOX_W / 2, mid, mid, "fine-tune"))
    if methods:
        arrows.append((1.4 + _BOX_W / 2, x0 - _BOX_W / 2 - 0.05, mid, mid, "prune"))
    for xa, xb, ya, yb, label in arrows:
        fig.add_annotation(
            x=xb, y=yb, ax=xa, ay=ya, xref="x", yref="y", axref="x", ayref="y", text="", showarrow=True, arrowhead=2
        )
        fig.add_annotation(
            x=(xa + xb) / 2, y=ya + 0.1, text=label, showarrow=False, yanchor="bottom", font={"size": 10}
        )
    for j, t in enumerate(targets):
        fig.add_annotation(x=x0 + j, y=_BOX_H / 2 + 0.05, text=f"{100 * t:g}%", showarrow=False, yanchor="bottom")
    for i, method in enumerate(methods):
        fig.add_annotation(x=x0 + len(targets) - 0.5 + 0.05, y=-float(i), text=method, showarrow=False, xanchor="left")
    n_rows = max(len(methods), 1)
    x_max = x0 + max(len(targets), 1) + 1.6
    fig.update_layout(
        xaxis={"visible": False, "range": [-0.6, x_max], "fixedrange": True},
        yaxis={"visible": False, "range": [-n_rows + 0.3, 0.9], "fixedrange": True},
        height=max(220, 70 * n_rows + 110),
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        legend={"orientation": "h", "y": -0.02, "yanchor": "top", "title": "status"},
        plot_bgcolor="rgba(0,0,0,0)",
    )
    return fig


# ----- per-matrix sparsity ------------------------------------------------------------------------


def layer_role_grid(df: pd.DataFrame, value: str, *, dropna: bool = True) -> tuple[pd.DataFrame, list[str]]:
    """``value`` averaged per layer (rows, ascending) and matrix role (columns, in ROLE_ORDER first)."""
    grid = df.pivot_table(index="layer", columns="role", values=value, aggfunc="mean", dropna=dropna)
    roles = [r for r in ROLE_ORDER if r in grid.columns] + [r for r in grid.columns if r not in ROLE_ORDER]
    return grid.reindex(columns=roles).sort_index(), roles


def sparsity_heatmap(sparsity_table: pd.DataFrame, unit: str | None = None) -> go.Figure:
    """Measured sparsity of each encoder matrix, layer (rows, layer 0 on top) x role (columns).

    ``sparsity_table`` has columns layer, role, sparsity (Run.unit_table("sparsity") or
    kaviz.train.pruning.sparsity_table); with a ``unit`` column, ``unit`` picks its rows.
    """
    df = sparsity_table
    if "unit" in df.columns:
        if unit is None:
            units = list(dict.fromkeys(df["unit"]))
            if len(units) > 1:
                raise ValueError(f"the table holds {len(units)} units; pass unit= one of {', '.join(units)}")
        else:
            df = df[df["unit"] == unit]
    if df.empty:
        raise ValueError(f"no sparsity rows for unit {unit!r}")
    grid, roles = layer_role_grid(df, "sparsity")
    fig = go.Figure(
        go.Heatmap(
            z=grid.to_numpy(),
            x=roles,
            y=[f"layer {int(i)}" for i in grid.index],
            zmin=0.0,
            zmax=1.0,
            colorscale="Viridis",
            colorbar={"title": "sparsity", "tickformat": ".0%"},
            texttemplate="%{z:.0%}",
            hovertemplate="%{y}, %{x}: %{z:.2%} zero<extra></extra>",
            name=unit or "sparsity",
        )
    )
    fig.update_layout(
        title=f"measured sparsity per matrix{f': {unit}' if unit else ''}",
        xaxis={"title": "matrix"},  # at the bottom: on top its title ran into the figure title
        yaxis={"title": "", "autorange": "reversed"},
        height=max(250, 36 * len(grid) + 120),
        margin={"t": 80},
    )
    return fig


# ----- training loss ------------------------------------------------------------------------------

LOSS_COMPONENTS = ("loss", "att", "hid", "pred")


def loss_curves(
    history: pd.DataFrame, components: tuple[str, ...] | list[str] = ("loss",), *, log_y: bool = False
) -> go.Figure:
    """Training-loss curves over steps: one line per unit (``unit`` column, optional) and component.

    ``history`` is Run.unit_table("history") (unit, step, loss and, for distillation, att, hid,
    pred).  Components missing from the table, or all NaN for a unit, are skipped; a trace is named by its unit, by its
    component when there is a single unit, or ``"<unit> · <component>"`` otherwise.
    """
    if "step" not in history.columns:
        raise ValueError(f"history table lacks a 'step' column; columns: {list(history.columns)}")
    comps = [c for c in components if c in history.columns]
    if not comps:
        raise ValueError(f"none of the components {list(components)} is in the history table ({list(history.columns)})")
    units = list(dict.fromkeys(history["unit"])) if "unit" in history.columns else [None]
    dashes = ("solid", "dash", "dot", "dashdot")
    palette = qualitative.Plotly
    fig = go.Figure()
    for n, u in enumerate(units):
        d = history if u is None else history[history["unit"] == u]
        d = d.sort_values("step")
        for k, comp in enumerate(comps):
            if d[comp].isna().all():  # e.g. no distillation terms for the teacher
                continue
            if u is None or len(units) == 1:
                name = comp if len(comps) > 1 or u is None else str(u)
            else:
                name = str(u) if len(comps) == 1 else f"{u} · {comp}"
            fig.add_trace(
                go.Scatter(
                    x=d["step"].tolist(),
                    y=d[comp].tolist(),
                    mode="lines",
                    name=name,
                    legendgroup=str(u),
                    line={"dash": dashes[k % len(dashes)], "color": palette[n % len(palette)]},
                )
            )
    fig.update_layout(
        xaxis={"title": "step"},
        yaxis={"title": "loss", "type": "log" if log_y else "linear"},
        hovermode="x unified",
        margin={"t": 30},
    )
    return fig
