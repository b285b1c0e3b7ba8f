"""Attention and attribution figures: per-head comparisons (pruned heads hatched), attention maps
side by side, Integrated-Gradients token bars. Tables of :mod:`kaviz.analysis.analyzer` in, plotly
Figures out; no I/O, no streamlit, arguments never modified. Each figure has a ``*_table`` function
that returns the numbers it draws.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from kaviz.core import schema
from kaviz.views.plots_knowledge import select_rows


def head_table(knowledge: pd.DataFrame, unit: str, metric: str, reference: str) -> pd.DataFrame:
    """A per-head metric of ``unit`` vs ``reference``: layer, ref_layer, head, value, pruned (value NaN when pruned)."""
    rows = select_rows(knowledge[knowledge["unit"] == unit], metric, reference, per_head=True)
    out = rows[["layer", "ref_layer", "head", "value", "pruned"]].sort_values(["layer", "head"])
    return out.assign(ref_layer=pd.to_numeric(out["ref_layer"])).reset_index(drop=True)


def entropy_change_table(knowledge: pd.DataFrame, unit: str, teacher: str = "finetuned") -> pd.DataFrame:
    """Attention entropy per head of ``unit`` minus that of the ``teacher`` stage's model at the layer it
    is compared with: layer, ref_layer, head, student, teacher, change, pruned."""
    ent = select_rows(knowledge, "attention_entropy", schema.SELF, per_head=True)
    mine = ent[ent["unit"] == unit][["layer", "head", "value", "pruned"]].rename(columns={"value": "student"})
    theirs = ent[ent["stage"] == teacher].groupby(["layer", "head"])["value"].mean()
    pairs = knowledge[(knowledge["unit"] == unit) & (knowledge["reference"] == teacher) & (knowledge["layer"] >= 1)]
    layer_map = dict(zip(pairs["layer"], pd.to_numeric(pairs["ref_layer"])))
    mine = mine.assign(ref_layer=[int(layer_map.get(x, x)) for x in mine["layer"]])
    mine["teacher"] = [theirs.get((r, h), np.nan) for r, h in zip(mine["ref_layer"], mine["head"])]
    mine["change"] = mine["student"] - mine["teacher"]
    cols = ["layer", "ref_layer", "head", "student", "teacher", "change", "pruned"]
    return mine[cols].sort_values(["layer", "head"]).reset_index(drop=True)


def _hatch(cells: list[tuple[int, int]]) -> go.Scatter:
    """Hatched squares over (head, layer) cells, one trace named ``pruned``."""
    xs: list[float | None] = []
    ys: list[float | None] = []
    for h, layer in cells:
        xs += [h - 0.5, h + 0.5, h + 0.5, h - 0.5, h - 0.5, None]
        ys += [layer - 0.5, layer - 0.5, layer + 0.5, layer + 0.5, layer - 0.5, None]
    return go.Scatter(
        x=xs,
        y=ys,
        mode="lines",
        fill="toself",
        fillcolor="rgba(190,190,190,0.8)",
        fillpattern={"shape": "/", "fgcolor": "#555555", "solidity": 0.3},
        line={"color": "#555555", "width": 0.5},
        name="pruned",
        hoverinfo="skip",
    )


def head_heatmap(
    table: pd.DataFrame,
    value: str = "value",
    *,
    title: str = "",
    colorscale: str = "Viridis",
    zmid: float | None = None,
    label: str | None = None,
) -> go.Figure:
    """Layer (rows) x head (columns) heatmap of ``table[value]`` (:func:`head_table`,
    :func:`entropy_change_table`), colour bar titled ``label``; pruned heads are NaN, hatched and
    labelled "pruned"."""
    if table.empty:
        raise ValueError("no per-head rows to draw")
    grid = table.pivot_table(index="layer", columns="head", values=value, aggfunc="mean", dropna=False).sort_index()
    pruned = table[table["pruned"]]
    grid = grid.astype("float64")
    for layer, h in zip(pruned["layer"], pruned["head"]):
        grid.loc[layer, h] = np.nan
    cells = set(zip(pruned["head"].astype(int), pruned["layer"].astype(int)))
    text = [[("pruned" if (h, layer) in cells else "") for h in grid.columns] for layer in grid.index]
    fig = go.Figure(
        go.Heatmap(
            z=grid.to_numpy(),
            x=[int(h) for h in grid.columns],
            y=[int(i) for i in grid.index],
            text=text,
            colorscale=colorscale,
            zmid=zmid,
            colorbar={"title": label or value},
            hovertemplate="layer %{y}, head %{x}: %{z:.4f} %{text}<extra></extra>",
            name=value,
        )
    )
    if cells:
        fig.add_trace(_hatch(sorted(cells)))
    for h, layer in sorted(cells):
        fig.add_annotation(x=h, y=layer, text="pruned", showarrow=False, bgcolor="white", font={"size": 10})
    fig.update_layout(
        title=title,
        xaxis={"title": "head", "dtick": 1},
        yaxis={"title": "layer", "dtick": 1, "autorange": "reversed"},
        height=max(280, 40 * len(grid) + 140),
        showlegend=bool(cells),
        legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.02, "yanchor": "bottom"},
        plot_bgcolor="rgba(0,0,0,0)",
    )
    return fig


# ----- attention maps and token attributions ------------------------------------------------------


def attention_pair_table(tokens: Sequence[str], teacher: np.ndarray, student: np.ndarray) -> pd.DataFrame:
    """Two (T, T) attention maps in long form: query_pos, query, key_pos, key, teacher, student."""
    t = len(tokens)
    if np.shape(teacher) != (t, t) or np.shape(student) != (t, t):
        raise ValueError(
            f"maps must both be ({t}, {t}) for {t} tokens, got {np.shape(teacher)} and {np.shape(student)}"
        )
    q, k = np.meshgrid(np.arange(t), np.arange(t), indexing="ij")
    toks = np.asarray(tokens, dtype=object)
    return pd.DataFrame(
        {
            "query_pos": q.ravel(),
            "query": toks[q.ravel()],
            "key_pos": k.ravel(),
            "key": toks[k.ravel()],
            "teacher": np.asarray(teacher, dtype=float).ravel(),
            "student": np.asarray(student, dtype=float).ravel(),
        }
    )


def attention_pair(
    tokens: Sequence[str], teacher: np.ndarray, student: np.ndarray, names: tuple[str, str] = ("teacher", "student")
) -> go.Figure:
    """Two attention maps (query rows x key columns) side by side on one colour scale (0 to the larger max)."""
    attention_pair_table(tokens, teacher, student)  # checks the shapes
    pos = list(range(len(tokens)))
    zmax = float(max(np.max(teacher), np.max(student), 1e-9))
    fig = make_subplots(rows=1, cols=2, subplot_titles=list(names), shared_yaxes=True, horizontal_spacing=0.06)
    for col, (name, z) in enumerate(zip(names, (teacher, student)), 1):
        fig.add_trace(
            go.Heatmap(
                z=np.asarray(z, dtype=float),
                x=pos,
                y=pos,
                coloraxis="coloraxis",
                name=name,
                customdata=np.array([[(tq, tk) for tk in tokens] for tq in tokens], dtype=object),
                hovertemplate=f"{name}: %{{customdata[0]}} → %{{customdata[1]}}: %{{z:.3f}}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(tickvals=pos, ticktext=list(tokens), tickangle=-60, title="key", row=1, col=col)
    fig.update_yaxes(tickvals=pos, ticktext=list(tokens), autorange="reversed")
    fig.update_yaxes(title="query", row=1, col=1)
    fig.update_layout(
        coloraxis={"colorscale": "Blues", "cmin": 0.0, "cmax": zmax, "colorbar": {"title": "attention"}},
        height=max(380, 18 * len(tokens) + 200),
    )
    return fig


def attribution_bars_table(tokens: pd.DataFrame, *, normalize: bool = True) -> pd.DataFrame:
    """Token attributions of one example (:class:`kaviz.measure.attribution.AttributionTable` ``tokens`` rows):
    position, token, teacher, student; with ``normalize`` each model's scores divided by their sum of |a|."""
    out = tokens.sort_values("position")[["position", "token", "teacher", "student"]].reset_index(drop=True)
    if normalize:
        for c in ("teacher", "student"):
            total = out[c].abs().sum()
            out[c] = out[c] / total if total > 0 else out[c]
    return out


def attribution_bars(
    tokens: pd.DataFrame, *, normalize: bool = True, names: tuple[str, str] = ("teacher", "student")
) -> go.Figure:
    """Teacher and student token attributions side by side: one horizontal bar per token, first token on top."""
    table = attribution_bars_table(tokens, normalize=normalize)
    pos = table["position"].tolist()
    fig = make_subplots(rows=1, cols=2, subplot_titles=list(names), shared_yaxes=True, horizontal_spacing=0.04)
    for col, (name, c) in enumerate(zip(names, ("teacher", "student")), 1):
        values = table[c].to_numpy()
        fig.add_trace(
            go.Bar(
                x=values.tolist(),
                y=pos,
                orientation="h",
                name=name,
                marker={"color": np.where(values >= 0, "#EF553B", "#636EFA").tolist()},
                customdata=table["token"].to_numpy(),
                hovertemplate=f"{name}: %{{customdata}} %{{x:.4f}}<extra></extra>",
            ),
            row=1,
            col=col,
        )
    fig.update_yaxes(tickvals=pos, ticktext=table["token"].tolist(), autorange="reversed")
    fig.update_xaxes(title="share of |attribution|" if normalize else "attribution", zeroline=True)
    fig.update_layout(showlegend=False, height=max(300, 22 * len(table) + 120), margin={"t": 40})
    return fig
