"""Where knowledge is lost: per-layer similarity to the fine-tuned teacher and to the pre-trained
model, the layer x layer CKA matrix of one unit, the linear probe per layer and the general probe."""

import streamlit as st

from kaviz.core import schema
from kaviz.views import plots_knowledge as pk
from kaviz.views.ui_data import units_with
from pages._common import figure, pick, read, require_knowledge, require_run, run_knowledge, run_units

st.title("Knowledge flow")
key = require_run()
k = require_knowledge(key)
run_id = key[1]
layered = schema.layer_rows(k)
compared = schema.compared(layered)
pruned = k[k["stage"] == "pruned"]
ref_name = schema.REFERENCE_NAMES.get
pct = "{:.0%}".format

st.subheader("Similarity per layer")
c = st.columns([1, 1, 2, 2])
metrics = list(dict.fromkeys(compared["metric"]))
refs = [r for r in ("finetuned", "pretrained") if r in set(compared["reference"])]
methods = pick("Methods", list(dict.fromkeys(pruned["method"])), "knowledge_methods", many=True, container=c[2])
sparsities = pick(
    "Sparsities",
    sorted(pruned["sparsity"].unique()),
    "knowledge_sparsities",
    many=True,
    container=c[3],
    format_func=pct,
)
if not metrics:
    st.info("No per-layer comparison in this run's knowledge tables.")
else:
    metric = pick("Metric", metrics, "knowledge_metric", container=c[0], help="representation similarity per layer")
    ref = pick("Reference", refs, "knowledge_reference", container=c[1], format_func=ref_name)
    fig = pk.layer_lines(k, metric, ref, methods=methods, sparsities=sparsities)
    table = pk.layer_table(k, metric, ref, methods=methods, sparsities=sparsities)
    figure(fig, table, f"{run_id}_{metric}_vs_{ref}", "knowledge_flow")
    st.caption(
        "Mean over seeds; colour = method, dash = sparsity. A drop between two layers is where the "
        "student's representations part from the reference."
    )

st.subheader("Layer × layer CKA")
cka = read(run_knowledge, *key, "cka_matrix")
with_cka = units_with(cka, read(run_units, *key))
if not with_cka:
    st.info("No CKA matrices in this run's knowledge tables.")
else:
    c = st.columns(2)
    unit = pick("Unit", with_cka, "knowledge_cka_unit", container=c[0], index=len(with_cka) - 1)
    mine = sorted(set(cka.loc[cka["unit"] == unit, "reference"]), key=lambda r: r != "finetuned")
    cref = pick("Against", mine, "knowledge_cka_reference", container=c[1], format_func=ref_name)
    figure(pk.cka_heatmap(cka, unit, cref), pk.cka_matrix_table(cka, unit, cref), f"{unit}_cka_{cref}", "knowledge_cka")

st.subheader("Linear probe per layer")
probes = schema.probe_metrics(layered)
if not probes:
    st.info("No linear-probe scores in this run's knowledge tables.")
else:
    probe = pick("Probe score", probes, "knowledge_probe")
    table = pk.layer_table(k, probe, schema.SELF, methods=methods, sparsities=sparsities)
    fig = pk.layer_lines(k, probe, schema.SELF, methods=methods, sparsities=sparsities)
    figure(fig, table, f"{run_id}_{probe}", "knowledge_probe")
    st.caption("A logistic (or ridge) probe trained on each layer's sentence features: task knowledge per layer.")

st.subheader("General knowledge")
general = schema.general_metrics(k)
if not general:
    st.info("No general-knowledge probe in this run's knowledge tables.")
else:
    g = pick("Probe", general, "knowledge_general", help="general_mlm_loss: lower is better")
    figure(pk.metric_vs_sparsity(k, g), pk.sparsity_table(k, g), f"{run_id}_{g}", "knowledge_general")
    st.caption("What pruning keeps of the pre-trained model's general knowledge, per method over sparsity.")
