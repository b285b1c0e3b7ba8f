"""Knowledge figures: the tables of :mod:`kaviz.analysis.analyzer` in, plotly Figures out.

No I/O, no streamlit, arguments never modified.  ``knowledge`` is
``kaviz.analysis.analyzer.knowledge_table(run)`` (unit, stage, method, sparsity, seed, reference, layer,
ref_layer, head, metric, value, pruned); ``cka`` is ``knowledge_table(run, "cka_matrix")``.  Each
figure has a ``*_table`` function that returns the numbers it draws (for the CSV download).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from kaviz.core import schema
from kaviz.core.registry import STAGE_COLORS, STAGE_NAMES
from kaviz.core.schema import REFERENCE_NAMES
from kaviz.views.plots import method_color
from kaviz.views.plots_sparsity import stage_levels, value_over_sparsity

#: Line styles that tell the sparsities of one method apart (the colour tells the method).
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
_STAGE_RANK = {"pretrained": 0, "finetuned": 1, "pruned": 2}
_SUMMARY = ["stage", "method", "sparsity", "label"]


def unit_label(stage: str, method: str, sparsity: float) -> str:
    """``"fine-tuned"``, ``"pre-trained"`` or ``"<method> <sparsity>%"``."""
    return STAGE_NAMES.get(stage) or f"{method} {100 * float(sparsity):g}%"


def select_rows(
    knowledge: pd.DataFrame,
    metric: str,
    reference: str | None = None,
    *,
    per_head: bool = False,
    methods: Sequence[str] | None = None,
    sparsities: Sequence[float] | None = None,
) -> pd.DataFrame:
    rows = knowledge[knowledge["metric"] == metric]
    if reference is not None:
        rows = rows[rows["reference"] == reference]
    rows = schema.whole_or_heads(rows, per_head)
    pruned = rows["stage"] == "pruned"
    keep = pd.Series(True, index=rows.index)
    if methods is not None:
        keep &= ~pruned | rows["method"].isin(list(methods))
    if sparsities is not None:
        keep &= ~pruned | rows["sparsity"].isin(list(sparsities))
    return rows[keep]


def _summarise(rows: pd.DataFrame, knowledge: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean, std, min, max and count of ``value`` over seeds, stages first, methods in run order."""
    cols = [*_SUMMARY, *by[3:], "mean", "std", "lo", "hi", "n_seeds"]
    if rows.empty:
        return pd.DataFrame(columns=cols)
    out = schema.over_seeds(rows, by)
    order = {m: i for i, m in enumerate(dict.fromkeys(knowledge["method"]))}
    out["label"] = [unit_label(*r) for r in zip(out["stage"], out["method"], out["sparsity"])]
    rank = out["stage"].map(_STAGE_RANK).fillna(3) * 1e6 + out["method"].map(order).fillna(0) * 1e3
    out = out.assign(_rank=rank).sort_values(["_rank", *by[2:]], kind="stable")
    return out[cols].reset_index(drop=True)


# ----- per-layer lines ----------------------------------------------------------------------------


def layer_table(
    knowledge: pd.DataFrame,
    metric: str,
    reference: str,
    *,
    methods: Sequence[str] | None = None,
    sparsities: Sequence[float] | None = None,
) -> pd.DataFrame:
    """A per-layer metric averaged over seeds: stage, method, sparsity, label, layer, mean, std, lo, hi, n_seeds.

    ``layer`` is a hidden-state index (0 = embeddings): the reference model's for comparisons (so
    a shallower small-dense student lines up with its teacher layers), the model's own for
    ``reference=schema.SELF`` (probes).  ``methods``/``sparsities`` filter pruned units; the
    pre-trained and fine-tuned stages are always kept.
    """
    rows = select_rows(knowledge, metric, reference, methods=methods, sparsities=sparsities)
    rows = rows[rows["layer"] >= 0]
    if not schema.is_self(reference):
        rows = rows.assign(layer=pd.to_numeric(rows["ref_layer"]).fillna(rows["layer"]).astype("int64"))
    return _summarise(rows, knowledge, ["stage", "method", "sparsity", "layer"])


def layer_lines(
    knowledge: pd.DataFrame,
    metric: str,
    reference: str,
    *,
    methods: Sequence[str] | None = None,
    sparsities: Sequence[float] | None = None,
) -> go.Figure:
    """One line per stage / (method, sparsity) over layers: the colour is the method, the dash the sparsity.

    With ``reference`` "finetuned" or "pretrained" this is the knowledge-flow view (similarity to
    that model per layer); with schema.SELF it draws per-model scores such as the linear probe.
    """
    table = layer_table(knowledge, metric, reference, methods=methods, sparsities=sparsities)
    pruned = table[table["stage"] == "pruned"]
    known = list(dict.fromkeys(pruned["method"]))
    levels = sorted(pruned["sparsity"].unique())
    fig = go.Figure()
    for label, d in table.groupby("label", sort=False):
        stage, method, s = d["stage"].iloc[0], d["method"].iloc[0], d["sparsity"].iloc[0]
        color = STAGE_COLORS.get(stage) or method_color(method, known)
        dash = "solid" if stage != "pruned" else DASHES[levels.index(s) % len(DASHES)]
        fig.add_trace(
            go.Scatter(
                x=d["layer"].tolist(),
                y=d["mean"].tolist(),
                mode="lines+markers",
                name=label,
                legendgroup=method,
                line={"color": color, "dash": dash, "width": 2.5 if stage != "pruned" else 2},
                customdata=d[["std", "n_seeds"]].to_numpy(),
                hovertemplate=f"<b>{label}</b><br>layer %{{x}}: {metric} %{{y:.4f}}"
                " (std %{customdata[0]:.4f}, %{customdata[1]} seeds)<extra></extra>",
            )
        )
    whose = "" if schema.is_self(reference) else f" of the {REFERENCE_NAMES.get(reference, reference)}"
    fig.update_layout(
        xaxis={"title": f"layer{whose} (0 = embeddings)", "dtick": 1},
        yaxis={
            "title": metric if schema.is_self(reference) else f"{metric} vs {REFERENCE_NAMES.get(reference, reference)}"
        },
        legend={"title": "model"},
        hovermode="closest",
        margin={"t": 30},
    )
    return fig


# ----- one number per model over sparsity ---------------------------------------------------------


def sparsity_table(knowledge: pd.DataFrame, metric: str, reference: str | None = None) -> pd.DataFrame:
    """A whole-model metric (general probe, attribution agreement) averaged over seeds:
    stage, method, sparsity, label, mean, std, lo, hi, n_seeds."""
    return _summarise(select_rows(knowledge, metric, reference), knowledge, ["stage", "method", "sparsity"])


def metric_vs_sparsity(knowledge: pd.DataFrame, metric: str, reference: str | None = None) -> go.Figure:
    """``metric`` of each method over target sparsity (band: min to max over seeds), the pre-trained
    and fine-tuned models as dotted / dashed reference lines where they have the metric
    (:func:`kaviz.views.plots_sparsity.value_over_sparsity`)."""
    table = sparsity_table(knowledge, metric, reference)
    return value_over_sparsity(table, metric, x="target", levels=stage_levels(table))


# ----- heatmaps -----------------------------------------------------------------------------------


def cka_matrix_table(cka: pd.DataFrame, unit: str, reference: str) -> pd.DataFrame:
    """Linear CKA of every (layer, ref_layer) pair of ``unit`` vs ``reference``: layer rows x ref_layer columns."""
    rows = cka[(cka["unit"] == unit) & (cka["reference"] == reference)]
    if rows.empty:
        raise ValueError(f"no CKA matrix for unit {unit!r} against {reference!r}")
    grid = rows.pivot_table(index="layer", columns="ref_layer", values="value", aggfunc="mean").sort_index()
    return grid.reindex(columns=sorted(grid.columns))


def cka_heatmap(cka: pd.DataFrame, unit: str, reference: str) -> go.Figure:
    """Layer x layer linear CKA of ``unit`` (rows) against ``reference`` (columns), 0 = embeddings.

    Colours run from the matrix's smallest value to 1 so that its structure shows even when all
    values are high; the cells print the values."""
    grid = cka_matrix_table(cka, unit, reference)
    ref_name = REFERENCE_NAMES.get(reference, reference)
    z = grid.to_numpy(dtype=float)
    low = float(np.nanmin(z)) if np.isfinite(z).any() else 0.0
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[int(c) for c in grid.columns],
            y=[int(i) for i in grid.index],
            zmin=low if low < 1.0 else 0.0,
            zmax=1.0,
            colorscale="Viridis",
            colorbar={"title": "linear CKA"},
            texttemplate="%{z:.2f}",
            hovertemplate=f"{unit} layer %{{y}} vs {ref_name} layer %{{x}}: %{{z:.4f}}<extra></extra>",
            name=unit,
        )
    )
    fig.update_layout(
        title=f"linear CKA: {unit} vs {ref_name}",
        xaxis={"title": f"layer of the {ref_name}", "dtick": 1},
        yaxis={"title": "layer", "dtick": 1, "autorange": "reversed"},
        height=max(300, 40 * len(grid) + 160),
        margin={"t": 60},
    )
    return fig
