"""Maps of where knowledge goes: per-layer loss maps (layer x sparsity, one panel per method) and
the task-vs-general knowledge plane.  DataFrame in, plotly Figure out; no I/O, no streamlit,
arguments never modified.  Each figure has a ``*_table`` function that returns the numbers it draws.

``knowledge`` is ``kaviz.analysis.analyzer.knowledge_table(run)``, ``metrics`` is ``Run.metrics()``.

Budgets: a run with budget curves holds students of one (method, sparsity) trained for several
budgets; averaging them as if they were seeds would mix different models.  Pass tables at one
budget (the pages' readers already are: :func:`kaviz.views.ui_data.at_main_budget`), or give
``main_budget`` and the functions keep that budget (:func:`kaviz.core.schema.at_budget`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from kaviz.core import schema
from kaviz.core.registry import METHOD_INFO, STAGE_COLORS, STAGE_NAMES
from kaviz.core.schema import REFERENCE_NAMES
from kaviz.views.plots import method_color
from kaviz.views.plots_knowledge import select_rows, unit_label
from kaviz.views.plots_sparsity import markers_only

#: The fixed colour range of each metric (None: up to the largest value drawn).  Similarities are
#: in [0, 1]; Procrustes is a distance in [0, 2]; Jensen-Shannon is in nats, [0, ln 2].
_UNIT_RANGE = ("linear_cka", "rbf_cka", "unbiased_cka", "minibatch_cka", "procrustes_similarity", "svcca", "pwcca")
METRIC_RANGES: dict[str, tuple[float, float | None]] = dict.fromkeys([*_UNIT_RANGE, "cosine"], (0.0, 1.0)) | {
    "procrustes": (0.0, 2.0),
    "js": (0.0, math.log(2.0)),
    "kl": (0.0, None),
}
#: Metrics where a higher value means further apart (their colour scale is reversed, so that lost
#: knowledge is dark in every map).
DIVERGENCES = ("procrustes", "js", "kl")
X_TITLE = "task knowledge kept (score / teacher)"
Y_TITLE = "general knowledge kept (probe / pre-trained)"
PLANE_COLUMNS = ["stage", "method", "sparsity", "label", "score", "general", "x", "y", "n_seeds"]


def _students(table: pd.DataFrame) -> pd.Series:
    """True for rows of students (not the pre-trained or fine-tuned model)."""
    return ~table["stage"].isin(list(STAGE_NAMES))


def _one_budget(table: pd.DataFrame, main_budget: float | None) -> pd.DataFrame:
    """``table`` as given (None: already at one budget) or at ``main_budget``."""
    return table if main_budget is None else schema.at_budget(table, main_budget)


# ----- loss maps ----------------------------------------------------------------------------------


def _of_method(rows: pd.DataFrame, method: str, knowledge: pd.DataFrame, what: str) -> pd.DataFrame:
    """The students' rows of ``method``; ValueError (naming the methods present) when there is none."""
    mine = rows[_students(rows) & (rows["method"] == method)]
    if mine.empty:
        present = list(dict.fromkeys(knowledge.loc[_students(knowledge), "method"]))
        raise ValueError(f"no {what} rows for method {method!r}; methods present: {', '.join(present) or 'none'}")
    return mine


def _grid(per_unit: pd.DataFrame, layers: range) -> pd.DataFrame:
    """Mean over seeds of ``value`` per (sparsity, layer): ``layers`` rows x sparsity columns (ascending)."""
    mean = schema.over_seeds(per_unit, ["sparsity", "layer"])
    grid = mean.pivot_table(index="layer", columns="sparsity", values="mean", aggfunc="mean", dropna=False)
    grid = grid.reindex(index=list(layers), columns=sorted(grid.columns)).astype("float64")
    grid.index.name, grid.columns.name = "layer", "sparsity"
    return grid


def _on_ref_layers(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows placed at the reference model's layer (a shallower student lines up with its teacher)."""
    return rows.assign(layer=pd.to_numeric(rows["ref_layer"]).fillna(rows["layer"]).astype("int64"))


def _last_layer(knowledge: pd.DataFrame, metric: str, reference: str, per_head: bool) -> int:
    """The deepest layer of the reference model among every row of ``metric`` vs ``reference``."""
    rows = select_rows(knowledge, metric, reference, per_head=per_head)
    rows = _on_ref_layers(schema.head_rows(rows) if per_head else schema.layer_rows(rows))
    return int(rows["layer"].max()) if len(rows) else 0


def loss_map_table(
    knowledge: pd.DataFrame,
    method: str,
    metric: str = "linear_cka",
    reference: str = "finetuned",
    *,
    main_budget: float | None = None,
) -> pd.DataFrame:
    """Similarity of each layer of ``method``'s students to ``reference`` (``"finetuned"`` or
    ``"pretrained"``), averaged over seeds: layers 0..L (rows, 0 = embeddings, the reference
    model's layers) x target sparsity (columns, ascending).  Whole-layer rows of students only;
    a layer a student does not have is NaN.  Raises ValueError when there is none."""
    k = _one_budget(knowledge, main_budget)
    rows = schema.layer_rows(select_rows(k, metric, reference))
    rows = _on_ref_layers(_of_method(rows, method, knowledge, f"whole-layer {metric!r} vs {reference!r}"))
    return _grid(rows, range(0, _last_layer(k, metric, reference, per_head=False) + 1))


def attention_loss_map_table(
    knowledge: pd.DataFrame,
    method: str,
    metric: str = "js",
    reference: str = "finetuned",
    *,
    main_budget: float | None = None,
) -> pd.DataFrame:
    """A per-head attention metric (``"js"``, ``"kl"``, ``"cosine"``) of ``method``'s students vs
    ``reference``, averaged over the heads of each layer (pruned heads left out) and then over
    seeds: layers 1..L (rows, the reference's layers; embeddings have no attention) x target
    sparsity (columns, ascending).  A layer whose heads are all pruned is NaN.  Raises ValueError
    when there is no row."""
    k = _one_budget(knowledge, main_budget)
    rows = schema.head_rows(select_rows(k, metric, reference, per_head=True))
    rows = _of_method(rows, method, knowledge, f"per-head {metric!r} vs {reference!r}")
    live = _on_ref_layers(rows[~rows["pruned"].astype(bool)])
    per_unit = live.groupby(["unit", "sparsity", "layer"])["value"].mean().reset_index()  # mean over live heads
    last = _last_layer(k, metric, reference, per_head=True)
    grid = _grid(per_unit, range(1, last + 1))
    return grid.reindex(columns=sorted(rows["sparsity"].unique()))  # sparsities whose heads were all pruned stay


def _color_range(metric: str, grids: list[pd.DataFrame]) -> tuple[float, float]:
    """The metric's fixed range (:data:`METRIC_RANGES`); an open end, or an unknown metric, takes
    the values drawn."""
    values = np.concatenate([g.to_numpy(dtype=float).ravel() for g in grids])
    values = values[np.isfinite(values)]
    seen = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
    lo, hi = METRIC_RANGES.get(metric, seen)
    hi = seen[1] if hi is None else hi
    return lo, hi if hi > lo else lo + 1.0


def _map_figure(
    knowledge: pd.DataFrame,
    methods: Sequence[str] | None,
    table: Callable[..., pd.DataFrame],
    metric: str,
    reference: str,
    main_budget: float | None,
    first_layer: int,
) -> go.Figure:
    """One heatmap of ``table`` per method side by side, sharing one fixed colour scale and colour bar."""
    if methods is None:  # every students' method, in run order
        methods = list(dict.fromkeys(knowledge.loc[_students(knowledge), "method"]))
    grids = {m: table(knowledge, m, metric, reference, main_budget=main_budget) for m in methods}
    if not grids:
        raise ValueError("no method to draw")
    names = [METHOD_INFO[m].label if m in METHOD_INFO else m for m in grids]
    widths = [max(len(g.columns), 1) for g in grids.values()]
    fig = make_subplots(
        rows=1,
        cols=len(grids),
        shared_yaxes=True,
        subplot_titles=names,
        column_widths=[w / sum(widths) for w in widths],
        horizontal_spacing=min(0.06, 0.5 / len(grids)),
    )
    ref_name = REFERENCE_NAMES.get(reference, reference)
    for i, (method, grid) in enumerate(grids.items(), start=1):
        fig.add_trace(
            go.Heatmap(
                z=grid.to_numpy(dtype=float),
                x=[f"{100 * float(s):g}%" for s in grid.columns],
                y=[int(x) for x in grid.index],
                coloraxis="coloraxis",
                texttemplate="%{z:.2f}",
                hovertemplate=f"<b>{names[i - 1]}</b> at %{{x}}<br>layer %{{y}}: {metric} vs {ref_name}"
                " %{z:.4f}<extra></extra>",
                name=method,
            ),
            row=1,
            col=i,
        )
        fig.update_xaxes(title_text="target sparsity", type="category", row=1, col=i)
    lo, hi = _color_range(metric, list(grids.values()))
    fig.update_yaxes(autorange="reversed", dtick=1)
    embeddings = " (0 = embeddings)" if first_layer == 0 else ""
    fig.update_yaxes(title_text=f"layer of the {ref_name}{embeddings}", row=1, col=1)
    n_layers = max(len(g) for g in grids.values())
    fig.update_layout(
        coloraxis={
            "cmin": lo,
            "cmax": hi,
            "colorscale": "Viridis_r" if metric in DIVERGENCES else "Viridis",
            "colorbar": {"title": f"{metric}<br>vs {ref_name}"},
        },
        height=max(300, 34 * n_layers + 160),
        margin={"t": 60},
    )
    return fig


def loss_map(
    knowledge: pd.DataFrame,
    methods: Sequence[str] | None = None,
    metric: str = "linear_cka",
    reference: str = "finetuned",
    *,
    main_budget: float | None = None,
) -> go.Figure:
    """Where and when representations part: per method (panels side by side, all students'
    methods in run order when ``methods`` is None) a layer (rows, 0 = embeddings on top) x target
    sparsity heatmap of :func:`loss_map_table`, annotated to 2 decimals, one colour scale fixed
    to the metric's range (:data:`METRIC_RANGES`) and one colour bar.  One trace per method,
    named by it."""
    return _map_figure(knowledge, methods, loss_map_table, metric, reference, main_budget, first_layer=0)


def attention_loss_map(
    knowledge: pd.DataFrame,
    methods: Sequence[str] | None = None,
    metric: str = "js",
    reference: str = "finetuned",
    *,
    main_budget: float | None = None,
) -> go.Figure:
    """:func:`loss_map` for attention: the mean over live heads of a per-head metric per layer
    (:func:`attention_loss_map_table`); divergences (JS, KL) are drawn on a reversed scale so that
    lost knowledge is dark, as in the similarity maps."""
    return _map_figure(knowledge, methods, attention_loss_map_table, metric, reference, main_budget, first_layer=1)


# ----- task vs general knowledge -----------------------------------------------------------------


def _stage_value(per_unit: pd.DataFrame, stage: str, column: str, what: str) -> float:
    value = per_unit.loc[per_unit["stage"] == stage, column].mean()
    if pd.isna(value):
        raise ValueError(f"the {STAGE_NAMES[stage]} model has no {what}; the plane needs it")
    return float(value)


def plane_table(
    metrics: pd.DataFrame,
    knowledge: pd.DataFrame,
    general_metric: str | None = None,
    *,
    metric: str = "score",
    main_budget: float | None = None,
) -> pd.DataFrame:
    """Task knowledge kept against general knowledge kept: columns stage, method, sparsity, label,
    score, general, x, y, n_seeds.

    ``x`` = task ``metric`` / the fine-tuned teacher's; ``y`` = the general-knowledge probe
    (``general_metric``, default the first of :func:`kaviz.core.schema.general_metrics`; the
    model's own whole-model row) / the pre-trained model's.  Rows: the pre-trained anchor
    (y = 1), the fine-tuned anchor (x = 1), then one row per (method, target sparsity) with score
    and probe averaged over seeds (students without both are left out), methods in run order,
    sparsity ascending.  Students of one budget (see the module docstring).  Raises
    ValueError when the probe or the task metric is absent, or a dense stage lacks them.
    """
    present = schema.general_metrics(knowledge)
    if not present:
        raise ValueError("no general-knowledge probe in this run (no 'general_*' metric); the plane needs one")
    general_metric = general_metric or present[0]
    if general_metric not in present:
        raise ValueError(f"general probe {general_metric!r} is not in this run; present: {', '.join(present)}")
    if metric not in set(metrics["metric"]):
        raise ValueError(f"task metric {metric!r} is not in the metrics table")
    scores = _one_budget(metrics[metrics["metric"] == metric], main_budget)
    per_unit = scores.groupby("unit", sort=False).agg(
        stage=("stage", "first"), method=("method", "first"), sparsity=("sparsity", "first"), score=("value", "mean")
    )
    probe = schema.own(schema.model_rows(knowledge))
    probe = probe[probe["metric"] == general_metric].groupby("unit")["value"].mean()
    per_unit = per_unit.join(probe.rename("general")).reset_index()
    teacher = _stage_value(per_unit, "finetuned", "score", f"task {metric!r}")
    base = _stage_value(per_unit, "pretrained", "general", f"general probe {general_metric!r}")
    anchors = pd.DataFrame(
        [
            {"stage": stage, "method": stage, "sparsity": 0.0, "label": STAGE_NAMES[stage]}
            | {
                "score": _stage_value(per_unit, stage, "score", f"task {metric!r}"),
                "general": _stage_value(per_unit, stage, "general", f"general probe {general_metric!r}"),
                "n_seeds": int((per_unit["stage"] == stage).sum()),
            }
            for stage in ("pretrained", "finetuned")
        ]
    )
    students = per_unit[_students(per_unit)].dropna(subset=["score", "general"])
    g = students.groupby(["method", "sparsity"], sort=False)
    points = g[["score", "general"]].mean().join(g.size().rename("n_seeds")).reset_index()
    order = {m: i for i, m in enumerate(dict.fromkeys(students["method"]))}
    points = points.assign(_m=points["method"].map(order)).sort_values(["_m", "sparsity"]).drop(columns="_m")
    points.insert(0, "stage", "pruned")
    points["label"] = [unit_label("pruned", m, s) for m, s in zip(points["method"], points["sparsity"])]
    out = pd.concat([anchors, points], ignore_index=True)
    out["x"] = out["score"] / teacher
    out["y"] = out["general"] / base
    out.loc[out["stage"] == "finetuned", "x"] = 1.0  # exact, not a rounding of teacher / teacher
    out.loc[out["stage"] == "pretrained", "y"] = 1.0
    return out[PLANE_COLUMNS].astype({"n_seeds": "int64"})


def plane(
    metrics: pd.DataFrame,
    knowledge: pd.DataFrame,
    general_metric: str | None = None,
    *,
    metric: str = "score",
    main_budget: float | None = None,
) -> go.Figure:
    """The task-vs-general knowledge plane of :func:`plane_table`: one line per method through
    its sparsities in ascending order (markers labelled with the sparsity; small-dense students
    and single points as markers only), the pre-trained and fine-tuned models as labelled anchor
    markers, and dotted guides at x = 1 (the teacher's task score) and y = 1 (the pre-trained
    model's general knowledge)."""
    table = plane_table(metrics, knowledge, general_metric, metric=metric, main_budget=main_budget)
    probe = general_metric or schema.general_metrics(knowledge)[0]
    points = table[table["stage"] == "pruned"]
    known = list(dict.fromkeys(points["method"]))
    fig = go.Figure()
    hover = (
        "<b>%{customdata[0]}</b><br>task kept %{x:.3f} (" + metric + " %{customdata[1]:.3g})"
        "<br>general kept %{y:.3f} (" + schema.family_label(probe) + " %{customdata[2]:.4f})"
        "<br>%{customdata[3]} seeds<extra></extra>"
    )
    for method in known:
        d = points[points["method"] == method]
        color = method_color(method, known)
        only = markers_only(method, len(d))
        fig.add_trace(
            go.Scatter(
                x=d["x"].tolist(),
                y=d["y"].tolist(),
                mode="markers+text" if only else "lines+markers+text",
                name=method,
                text=[f"{100 * float(s):g}%" for s in d["sparsity"]],
                textposition="top center",
                line={"color": color},
                marker={"color": color, "size": 11 if only else 8, "symbol": "diamond" if only else "circle"},
                customdata=d[["label", "score", "general", "n_seeds"]].to_numpy(dtype=object),
                hovertemplate=hover,
            )
        )
    for stage, symbol in (("pretrained", "star"), ("finetuned", "square")):
        d = table[table["stage"] == stage]
        fig.add_trace(
            go.Scatter(
                x=d["x"].tolist(),
                y=d["y"].tolist(),
                mode="markers+text",
                name=STAGE_NAMES[stage],
                text=d["label"].tolist(),
                textposition="bottom center",
                marker={"color": STAGE_COLORS[stage], "size": 15, "symbol": symbol, "line": {"width": 1}},
                customdata=d[["label", "score", "general", "n_seeds"]].to_numpy(dtype=object),
                hovertemplate=hover,
            )
        )
    guide = {"dash": "dot", "color": "#999999", "width": 1}
    fig.add_vline(x=1.0, line=guide)
    fig.add_hline(y=1.0, line=guide)
    fig.update_layout(
        xaxis={"title": X_TITLE},
        yaxis={"title": Y_TITLE},
        legend={"title": "model"},
        hovermode="closest",
        margin={"t": 30},
    )
    return fig
