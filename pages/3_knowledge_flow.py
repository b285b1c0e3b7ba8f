"""Where knowledge is lost: per-layer similarity to the fine-tuned teacher and to the pre-trained
model, the knowledge-loss map (layer x sparsity per method), the layer x layer CKA matrix of one
unit, the linear probe per layer, the general probe and the task-vs-general knowledge plane."""

import pandas as pd
import streamlit as st

from kaviz.core import schema
from kaviz.views import plots_knowledge as pk
from kaviz.views import plots_maps as pm
from kaviz.views.ui_data import units_with
from pages._common import figure, pick, read, require_knowledge, require_run, run_knowledge, run_metrics, run_units

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

st.subheader("Knowledge-loss map")
heads = schema.head_rows(schema.compared(k))
head_metrics = [m for m in ("js", "kl", "cosine") if m in set(heads["metric"])]
map_methods = methods or list(dict.fromkeys(pruned["method"]))
if not metrics or not map_methods:
    st.info("No per-layer comparison of pruned students in this run's knowledge tables.")
else:
    c = st.columns([1, 1, 2])
    kinds = ["representations", *(["attention"] if head_metrics else [])]
    kind = c[0].radio("Map", kinds, horizontal=True, key="knowledge_map_kind")
    mref = pick("Against", refs, "knowledge_map_reference", container=c[1], format_func=ref_name)
    if kind == "attention":
        mmetric = pick("Head metric", head_metrics, "knowledge_map_head_metric", container=c[2])
        make, draw = pm.attention_loss_map_table, pm.attention_loss_map
    else:
        mmetric = metric
        make, draw = pm.loss_map_table, pm.loss_map
    try:
        fig = draw(k, map_methods, mmetric, mref)
        table = pd.concat({m: make(k, m, mmetric, mref) for m in map_methods}, names=["method"])
    except ValueError as e:
        st.info(str(e))
    else:
        figure(fig, table.reset_index(), f"{run_id}_{kind}_loss_map_{mmetric}_vs_{mref}", "knowledge_map")
        st.caption(
            f"{mmetric} per layer (rows, 0 = embeddings) and target sparsity (columns), mean over seeds, one panel "
            "per method: where (which layer) and when (which sparsity) the students part from the "
            f"{ref_name(mref)}. Dark = lost."
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

st.subheader("Task vs general knowledge")
if not general:
    st.info("The plane needs a general-knowledge probe (analysis.general_probe).")
else:
    run_m = read(run_metrics, *key)
    try:
        fig, table = pm.plane(run_m, k, g), pm.plane_table(run_m, k, g)
    except ValueError as e:
        st.info(str(e))
    else:
        figure(fig, table, f"{run_id}_task_vs_general_{g}", "knowledge_plane")
        st.caption(
            "x: task score kept (score / the fine-tuned teacher's); y: general knowledge kept (probe / the "
            "pre-trained model's); one line per method along sparsity. Fine-tuning moves the model right and "
            "(often) down; pruning moves it left and down: the paper's loss of task (L) and general (D) knowledge."
        )
