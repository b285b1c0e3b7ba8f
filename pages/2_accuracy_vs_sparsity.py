"""Task metric of every pruning method over encoder sparsity, against the fine-tuned teacher."""

import streamlit as st

from kaviz.views import plots_sparsity, ui_data
from pages._common import constant_answer, curve, figure, read, require_run, run_metrics, score_intervals

st.title("Accuracy vs sparsity")
key = require_run()
metrics = read(run_metrics, *key)
options = ui_data.task_metrics(metrics)
if not options:
    st.info("No unit with task metrics has finished yet.")
    st.stop()
if st.session_state.get("accuracy_metric") not in options:
    st.session_state["accuracy_metric"] = options[0]

c = st.columns([2, 2, 2, 1], vertical_alignment="bottom")
metric = c[0].selectbox(
    "Metric", options, key="accuracy_metric", help="score is the task's main metric (as reported in the paper)"
)
x = c[1].radio(
    "Sparsity axis",
    ["measured", "target"],
    horizontal=True,
    key="accuracy_x",
    help="measured: the fraction of encoder linear weights that are zero (small-dense: relative to the teacher)",
)
spread = c[2].radio(
    "Band",
    ["std", "range", "95% CI"],
    horizontal=True,
    key="accuracy_spread",
    help="over seeds: mean ± std, or min to max; 95% CI: percentile bootstrap over dev examples and seeds "
    "(from the units' stored predictions; also for one seed)",
)
show_pretrained = c[3].toggle("pre-trained", key="accuracy_pretrained", help="also draw the pre-trained model")

constant = read(constant_answer, *key, metric)
intervals = read(score_intervals, *key, metric) if spread == "95% CI" else None
if spread == "95% CI" and intervals is None:
    st.info("No stored dev predictions in this run (or a metric without them): showing the spread over seeds.")
seeds = "std" if spread == "95% CI" else spread
fig = plots_sparsity.accuracy_vs_sparsity(
    metrics, metric, x=x, show_pretrained=show_pretrained, spread=seeds, constant=constant, intervals=intervals
)
table = read(curve, *key, metric, seeds)
if intervals is not None:
    table = ui_data.with_intervals(table, intervals)
figure(fig, table, f"{key[1]}_{metric}_vs_sparsity", "accuracy")
if constant is not None:
    st.caption(
        f"Grey dotted: the best constant answer on the same dev set ({constant:.4f}); a student on or "
        "below it has learnt nothing the labels' balance does not give."
    )
st.dataframe(
    table,
    hide_index=True,
    column_config={
        "sparsity": st.column_config.NumberColumn("target sparsity", format="percent"),
        "measured_sparsity": st.column_config.NumberColumn("measured sparsity", format="percent"),
        "mean": st.column_config.NumberColumn(f"{metric} (mean)", format="%.1f"),
        "lo": st.column_config.NumberColumn("low", format="%.1f"),
        "hi": st.column_config.NumberColumn("high", format="%.1f"),
    },
)
