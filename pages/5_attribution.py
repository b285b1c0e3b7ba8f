"""Attribution agreement: how far a student's Integrated-Gradients token attributions agree with the
teacher's, over sparsity and per probe example, and both side by side for one sentence (needs checkpoints)."""

import streamlit as st

from kaviz.views import plots_attention as pa
from kaviz.views import plots_knowledge as pk
from kaviz.views.ui_data import units_with
from pages._common import (
    downloads,
    figure,
    pick,
    read,
    require_knowledge,
    require_run,
    run_knowledge,
    run_units,
)
from pages._models import last_with_weights, models_or_info, token_attributions

TYPED = "Type a sentence…"
NAMES = {"attribution_spearman": "Spearman of |attribution|", "attribution_topk_overlap": "top-k token overlap"}

st.title("Attribution")
key = require_run()
k = require_knowledge(key)
run_id = key[1]
att = read(run_knowledge, *key, "attribution")
metrics = [m for m in NAMES if m in set(k["metric"])]
if not metrics or att.empty:
    st.info(
        "This run's analysis has no attribution agreement: it was made with `analysis.attribution_examples: 0` "
        "or without a fine-tuned teacher. Runs analysed with examples > 0 show it here."
    )
    st.stop()

metric = st.radio("Agreement", metrics, horizontal=True, key="attribution_metric", format_func=NAMES.get)
figure(
    pk.metric_vs_sparsity(k, metric, "finetuned"),
    pk.sparsity_table(k, metric, "finetuned"),
    f"{run_id}_{metric}",
    "attribution_agreement",
)
st.caption(
    "Student vs fine-tuned teacher, mean over the probe examples (and seeds), for the teacher's predicted class."
)

st.subheader("Per example")
units = units_with(att, read(run_units, *key))
unit = pick("Unit", units, "attribution_unit", index=last_with_weights(key, units))
shown = [c for c in ("example", "text", "target", "spearman", "topk_overlap", "k") if c in att.columns]
rows = att[att["unit"] == unit][shown]
fmt = {c: st.column_config.NumberColumn(format="%.3f") for c in ("spearman", "topk_overlap")}
st.dataframe(rows, hide_index=True, column_config=fmt)
downloads(rows, f"{unit}_attribution", "attribution_examples")

st.subheader("Token attributions")
teacher = next(iter(k.loc[k["stage"] == "finetuned", "unit"]), "finetuned")
c = st.columns([4, 1], vertical_alignment="bottom")
choice = pick("Sentence", [*dict.fromkeys(rows.get("text", [])), TYPED], "attribution_example", container=c[0])
text = choice if choice != TYPED else c[0].text_input("Sentence", "the film was great", key="attribution_text")
normalize = c[1].toggle(
    "share of |a|", value=True, key="attribution_normalize", help="divide by each model's sum of |a|"
)
if models_or_info(key, [teacher, unit], "Token attributions") and text.strip():
    tokens = read(token_attributions, *key, teacher, unit, text)
    fig = pa.attribution_bars(tokens, normalize=normalize, names=("fine-tuned teacher", unit))
    figure(fig, pa.attribution_bars_table(tokens, normalize=normalize), f"{unit}_tokens", "attribution_tokens")
    st.caption("Layer Integrated Gradients on the embeddings, for the teacher's predicted class, in both models.")
