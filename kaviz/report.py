"""A run as one file: a self-contained HTML page with the findings, every figure (interactive,
plotly.js inlined once, no request leaves the machine), the headline tables, the config and the
provenance (kaviz version, where and how each unit was trained).

    kaviz report runs/showcase-sst2 -o report.html

Built from the run's tables only (no model is loaded), with the same table and figure builders as
the app (:mod:`kaviz.views`), so the page shows what the app shows.
"""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import yaml

from kaviz import __version__
from kaviz.analysis.analyzer import knowledge_table
from kaviz.analysis.evidence import reference_levels
from kaviz.analysis.findings import findings
from kaviz.core import schema
from kaviz.core.config import main_budget
from kaviz.store import Run
from kaviz.views import plots_costs, plots_knowledge, plots_maps, plots_sparsity, ui_data
from kaviz.views.plots_budget import budget_curve_table, budget_curves, has_budget_axis

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0; } .sub { color: #666; margin-top: .2rem; }
.finding { margin: .3rem 0; } table { border-collapse: collapse; font-size: .9rem; }
td, th { border: 1px solid #ddd; padding: .25rem .5rem; text-align: right; }
th:first-child, td:first-child { text-align: left; } pre { background: #f6f6f6; padding: .8rem; overflow-x: auto; }
"""


def _figures(run: Run, metrics: pd.DataFrame, knowledge: pd.DataFrame) -> list[tuple[str, go.Figure]]:
    """(title, figure) of every figure the run's tables can draw, in reading order."""
    out: list[tuple[str, go.Figure]] = []
    preds = run.unit_table("predictions")

    def levels(table: pd.DataFrame) -> dict[str, float]:  # scores as shown: ×100, like every figure's
        return {k: schema.shown_score(v) for k, v in reference_levels(table, preds, "score").items()}

    raw, metrics = metrics, schema.shown_scores(metrics)
    if "score" in set(metrics["metric"]):
        constant = levels(raw).get("constant answer")
        out.append(("Score vs sparsity", plots_sparsity.accuracy_vs_sparsity(metrics, constant=constant)))
    layered = schema.compared(schema.layer_rows(knowledge)) if len(knowledge) else knowledge
    if len(layered):
        metric = "linear_cka" if "linear_cka" in set(layered["metric"]) else layered["metric"].iloc[0]
        out.append((f"{metric} to the teacher per layer", plots_knowledge.layer_lines(knowledge, metric, "finetuned")))
        try:
            out.append((f"Knowledge-loss map ({metric} to the teacher)", plots_maps.loss_map(knowledge, None, metric)))
        except ValueError:
            pass
    general = schema.general_metrics(knowledge) if len(knowledge) else []
    if general:
        out.append((f"General knowledge ({general[0]})", plots_knowledge.metric_vs_sparsity(knowledge, general[0])))
        try:
            out.append(("Task vs general knowledge", plots_maps.plane(metrics, knowledge, general[0])))
        except ValueError:
            pass
    every = run.metrics()
    if has_budget_axis(every):
        refs = levels(every)
        out.append(
            ("Score vs student budget", budget_curves(budget_curve_table(schema.shown_scores(every)), refs=refs))
        )
    inference = run.unit_table("inference")
    if len(inference):
        sizes = sorted(inference["batch_size"].unique())
        table = plots_costs.cost_table(metrics, inference, int(sizes[-1]))
        if len(table):
            out.append((f"What pruning buys (batch {int(sizes[-1])})", plots_costs.score_vs_cost(table)))
    return out


def _provenance(run: Run) -> pd.DataFrame:
    units = run.units()
    rows = []
    for u in units.to_dict("records"):
        info = u.get("info") or {}
        rows.append(
            {
                "unit": u["unit"],
                "status": u.get("status"),
                "seconds": u.get("seconds"),
                "device": info.get("device", ""),
                "precision": info.get("precision", ""),
                "source": info.get("source", ""),
            }
        )
    return pd.DataFrame(rows)


def _score(v: float) -> str:
    return "" if pd.isna(v) else format(v, schema.SCORE_FORMAT)


def _percent(v: float) -> str:
    return "" if pd.isna(v) else f"{100 * v:.1f}%"


def build(run: Run) -> str:
    """The report of ``run`` as one HTML string."""
    metrics = ui_data.at_main_budget(run.metrics(), run.config)
    knowledge = knowledge_table(run)
    knowledge = ui_data.at_main_budget(knowledge, run.config) if len(knowledge) else knowledge
    found = findings(
        metrics,
        knowledge,
        run.unit_table("predictions"),
        run.unit_table("inference"),
        main_budget=main_budget(run.config),
    )
    texts = json.dumps([f.text for f in found]).replace("</", "<\\/")  # safe inside <script>
    parts = [
        f"<h1>kaviz report: {html.escape(run.run_id)}</h1>",
        f"<p class='sub'>kaviz {__version__}, written {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}; "
        f"run status {html.escape(str(run.status))}</p>",
        "<h2>Findings</h2>",
        *[f"<p class='finding'>{html.escape(f.text)}</p>" for f in found],
        *([] if found else ["<p>No finding: the run has too few finished units.</p>"]),
    ]
    if "score" in set(metrics["metric"]):
        head = ui_data.headline_table(schema.shown_scores(metrics)).reset_index()
        formats = {c: _percent if c.endswith("sparsity") else _score for c in head.columns if c != "model"}
        parts += ["<h2>Headline</h2>", head.to_html(index=False, formatters=formats, na_rep="")]
    first = True
    for title, fig in _figures(run, metrics, knowledge):
        parts.append(f"<h2>{html.escape(title)}</h2>")
        parts.append(fig.to_html(full_html=False, include_plotlyjs=first, config={"displaylogo": False}))
        first = False
    parts += [
        "<h2>Units</h2>",
        _provenance(run).to_html(index=False, float_format=lambda v: f"{v:.1f}", na_rep=""),
        "<h2>Config</h2>",
        f"<pre>{html.escape(yaml.safe_dump(run.config, sort_keys=False))}</pre>",
        f"<script type='application/json' id='kaviz-findings'>{texts}</script>",
    ]
    body = "\n".join(parts)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>kaviz report: {html.escape(run.run_id)}</title>"
        f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )


def write(run: Run, path: str | Path) -> Path:
    """Write :func:`build`'s page to ``path`` (parent folders created); returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build(run), encoding="utf-8")
    return out
