"""Score and per-layer similarity to the teacher against the student budget (examples seen, seconds)."""

import numpy as np
import streamlit as st

from kaviz.views import plots_budget, ui_data
from pages._common import (
    budget_intervals,
    figure,
    pick,
    read,
    reference_levels,
    require_run,
    run_knowledge,
    run_metrics_all,
)

st.title("Budget curves")
key = require_run()
metrics = read(run_metrics_all, *key)
if not plots_budget.has_budget_axis(metrics):
    st.info(
        "This run trained each student at one budget. Add a budget axis with `extra_units`, e.g.\n\n"
        "```yaml\nextra_units:\n  - {methods: [knowledge-aware, gradual-magnitude], budgets: [0.25, 0.5, 1]}\n```\n\n"
        "(see `benchmarks/configs/showcase-sst2.yaml`; the shipped **showcase-sst2** run has one)."
    )
    st.stop()

options = ui_data.task_metrics(metrics)
c = st.columns([2, 3, 2, 1], vertical_alignment="bottom")
metric = pick("Metric", options, "budget_metric", container=c[0])
x = c[1].radio(
    "Budget axis",
    list(plots_budget.X_TITLES),
    format_func=plots_budget.X_TITLES.get,
    horizontal=True,
    key="budget_x",
    help="examples seen = optimizer steps x batch size; wall seconds of training on the device the run used",
)
band = c[2].radio(
    "Band",
    ["95% CI", "seed range"],
    horizontal=True,
    key="budget_band",
    help="95% CI: percentile bootstrap over dev examples and seeds (from the units' stored predictions; "
    "also for one seed); seed range: lowest to highest score over seeds",
)
log_x = c[3].toggle("log x", value=True, key="budget_logx")

table = plots_budget.budget_curve_table(metrics, metric)
intervals = read(budget_intervals, *key, metric) if band == "95% CI" else None
if band == "95% CI" and intervals is None:
    st.info("No stored dev predictions in this run (or a metric without them): showing the seed range.")
if intervals is not None:
    table = plots_budget.with_intervals(table, intervals)
else:
    band = "seed range"
refs = read(reference_levels, *key, metric)
fig = plots_budget.budget_curves(table, x=x, metric=metric, refs=refs, log_x=log_x, band=band)
figure(fig, table, f"{key[1]}_{metric}_vs_budget", "budget")
st.caption(
    f"Mean over seeds; the band: {band}. Dashed: the fine-tuned teacher; dotted: the best constant answer "
    "on the same dev set (a score there means the student has learnt nothing)."
)

st.subheader("Per-layer similarity to the teacher")
knowledge = read(run_knowledge, *key, "knowledge", True)
cka = plots_budget.cka_budget_table(knowledge, metrics) if len(knowledge) else knowledge
if cka.empty:
    st.info("No knowledge tables for the budget units yet: run `kaviz analyze` on this run.")
    st.stop()
sparsities = sorted(cka.sparsity.unique())
sp = pick("Sparsity", sparsities, "budget_sparsity", format_func=lambda s: f"{100 * s:g}%")
fig2 = plots_budget.cka_vs_budget(cka, float(sp), x=x, log_x=log_x)
figure(fig2, cka[np.isclose(cka.sparsity, sp)], f"{key[1]}_cka_vs_budget_{sp:g}", "budget_cka")
