"""Overview of one run: status, config, stages, headline numbers, per-matrix sparsity, losses."""

import json

import streamlit as st
import yaml

from kaviz.views import plots, ui_data
from pages._common import (
    RUN,
    downloads,
    figure,
    headline,
    read,
    require_run,
    run_config,
    run_findings,
    run_metrics,
    run_report,
    run_unit_table,
    run_units,
)

st.title("Overview")
key = require_run()
folder, run_id, _ = key
units, metrics, config = read(run_units, *key), read(run_metrics, *key), read(run_config, *key)
status = st.session_state[RUN]["status"]
st.caption(f"Run **{run_id}** in `{folder}`")

done = int((units["status"] == "done").sum())
c = st.columns(4)
c[0].metric("Status", status)
c[1].metric("Units done", f"{done}/{len(units)}")
c[2].metric("Task", str((config.get("task") or {}).get("name")))
c[3].metric("Model", str((config.get("model") or {}).get("name_or_path")))
status_table = ui_data.unit_status_table(units)
failed = status_table[status_table["status"] == "failed"]
if len(failed):
    st.error(f"{len(failed)} unit(s) failed, first {failed['unit'].iloc[0]}: {failed['error'].iloc[0]}")
with st.expander("Config"):
    st.code(yaml.safe_dump(config, sort_keys=False), language="yaml")
    st.download_button(
        "config.json",
        json.dumps(config, indent=2),
        file_name=f"{run_id}.json",
        key="overview_config",
        on_click="ignore",
    )

st.subheader("Findings")
found = read(run_findings, *key)
if not found:
    st.info("No findings yet: they appear as units finish (and `kaviz analyze` adds the knowledge ones).")
for f in found:
    c = st.columns([12, 2], vertical_alignment="center")
    (c[0].warning if f.severity else c[0].markdown)(f.text)
    c[1].page_link(f.page, label="figure", icon=":material/arrow_forward:")
st.download_button(
    "Report (one HTML file)",
    lambda: run_report(*key),
    file_name=f"{run_id}-report.html",
    mime="text/html",
    key="overview_report",
    on_click="ignore",
    help="findings, every figure (interactive, works offline), headline tables, units and config",
)

st.subheader("Stages and units")
stages = plots.stage_diagram(units, ui_data.unit_values(metrics))
st.plotly_chart(stages, width="stretch", key="overview_stages_chart")
st.dataframe(status_table, hide_index=True, height=min(400, 35 * len(status_table) + 38))
downloads(status_table, f"{run_id}_units", "overview_units", stages)

st.subheader("Headline")
if "score" not in ui_data.task_metrics(metrics):
    st.info("No unit with a score has finished yet; numbers appear here as units complete.")
else:
    table = read(headline, *key)
    fmt = {c: st.column_config.NumberColumn(format="percent" if c.endswith("sparsity") else "%.1f") for c in table}
    st.dataframe(table, column_config=fmt)
    st.caption(
        "Scores ×100, means over seeds. *sparsity*: measured encoder sparsity (small-dense: relative to the teacher)."
    )
    downloads(table, f"{run_id}_headline", "overview_headline")

st.subheader("Sparsity per matrix")
sparsity = read(run_unit_table, *key, "sparsity")
with_sparsity = ui_data.units_with(sparsity, units)
if not with_sparsity:
    st.info("No per-matrix sparsity table yet.")
else:
    if st.session_state.get("overview_heatmap_unit") not in with_sparsity:
        st.session_state.pop("overview_heatmap_unit", None)
    targets = units.set_index("unit")["sparsity"].reindex(with_sparsity).fillna(0.0)
    unit = st.selectbox("Unit", with_sparsity, index=int(targets.to_numpy().argmax()), key="overview_heatmap_unit")
    rows = sparsity[sparsity["unit"] == unit]
    figure(plots.sparsity_heatmap(rows, unit), rows, f"{run_id}_{unit}_sparsity", "overview_heatmap")

st.subheader("Training loss")
history = read(run_unit_table, *key, "history")
with_history = ui_data.units_with(history, units)
if not with_history:
    st.info("No training history yet (pre-trained and imported models are not trained).")
else:
    if not set(st.session_state.get("overview_loss_units", [])) <= set(with_history):
        st.session_state.pop("overview_loss_units", None)
    c = st.columns([3, 2, 1])
    chosen = c[0].multiselect("Units", with_history, default=with_history[:3], key="overview_loss_units")
    present = [k for k in plots.LOSS_COMPONENTS if k in history.columns]
    if not set(st.session_state.get("overview_loss_components", [])) <= set(present):
        st.session_state.pop("overview_loss_components", None)
    comps = c[1].multiselect("Components", present, default=present[:1], key="overview_loss_components")
    log_y = c[2].toggle("log y", key="overview_loss_log")
    if chosen and comps:
        rows = history[history["unit"].isin(chosen)]
        figure(plots.loss_curves(rows, comps, log_y=log_y), rows, f"{run_id}_history", "overview_loss")
    else:
        st.caption("Pick at least one unit and one component.")
