"""Attention per head: how far a unit's attention moved from a reference model's (pruned heads
hatched), the change in attention entropy, and both models' maps for one sentence (needs checkpoints)."""

import streamlit as st

from kaviz.core import schema
from kaviz.views import plots_attention as pa
from kaviz.views import plots_knowledge as pk
from pages._common import (
    figure,
    pick,
    read,
    require_knowledge,
    require_run,
    run_knowledge,
)
from pages._models import attention_maps, last_with_weights, models_or_info

TYPED = "Type a sentence…"

st.title("Attention")
key = require_run()
k = require_knowledge(key)
heads = schema.compared(schema.head_rows(k))
if heads.empty:
    st.info("No per-head attention comparison in this run's knowledge tables.")
    st.stop()
units = list(dict.fromkeys(heads["unit"]))
c = st.columns([2, 1, 1])
unit = pick("Unit", units, "attention_unit", container=c[0], index=last_with_weights(key, units))
mine = heads[heads["unit"] == unit]
refs = sorted(set(mine["reference"]), key=lambda r: r != "finetuned")
ref = pick("Against", refs, "attention_reference", container=c[1], format_func=pk.REFERENCE_NAMES.get)
metric = pick(
    "Metric",
    list(dict.fromkeys(mine["metric"])),
    "attention_metric",
    container=c[2],
    help="js: Jensen-Shannon divergence, kl: KL(student ‖ reference), cosine: similarity of the maps; per head, "
    "pooled over the probe set's real query tokens",
)
ref_name = pk.REFERENCE_NAMES.get(ref, ref)
table = pa.head_table(k, unit, metric, ref)
fig = pa.head_heatmap(table, title=f"{metric}: {unit} vs {ref_name}", label=metric)
figure(fig, table, f"{unit}_{metric}_{ref}", "attention_heads")

st.subheader("Entropy change")
ent = pa.entropy_change_table(k, unit, ref)
if ent.empty or ent["change"].isna().all():
    st.info(f"No attention entropies for both {unit} and the {ref_name}.")
else:
    fig = pa.head_heatmap(
        ent, "change", title=f"entropy: {unit} − {ref_name}", colorscale="RdBu_r", zmid=0.0, label="Δ nats"
    )
    figure(fig, ent, f"{unit}_entropy_change_{ref}", "attention_entropy")
    st.caption("Nats, per head at the reference layer it is compared with; > 0: the student attends more diffusely.")

st.subheader("Attention maps")
examples = list(dict.fromkeys(read(run_knowledge, *key, "attribution").get("text", [])))
c = st.columns([4, 1, 1])
choice = pick("Probe example", [*examples, TYPED], "attention_example", container=c[0])
text = choice if choice != TYPED else c[0].text_input("Sentence", "the film was great", key="attention_text")
if models_or_info(key, [ref, unit], "Attention maps") and text.strip():
    student, teacher = read(attention_maps, *key, unit, text), read(attention_maps, *key, ref, text)
    layer = pick("Layer", list(range(1, len(student.maps) + 1)), "attention_layer", container=c[1])
    head = pick("Head", list(range(student.maps[0].shape[0])), "attention_head", container=c[2])
    row = table[table["layer"] == layer]["ref_layer"]
    ref_layer = int(row.iloc[0]) if len(row) and row.notna().iloc[0] else layer
    s_map, t_map = student.maps[layer - 1][head], teacher.maps[ref_layer - 1][head]
    names = (f"{ref_name}, layer {ref_layer}", f"{unit}, layer {layer}")
    fig = pa.attention_pair(student.tokens, t_map, s_map, names)
    table = pa.attention_pair_table(student.tokens, t_map, s_map)
    figure(fig, table, f"{unit}_attention_l{layer}_h{head}", "attention_maps")
