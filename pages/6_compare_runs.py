"""Compare runs: accuracy over sparsity, knowledge per layer, score differences, configs and masks."""

from pathlib import Path

import streamlit as st

from kaviz.analysis import compare
from kaviz.views import plots_compare, ui_data
from pages._common import (
    RUN,
    all_runs,
    constant_answer,
    curve,
    downloads,
    figure,
    leave_legacy_pages_mode,
    mask_tables,
    pick,
    read,
    run_checkpoints,
    run_config,
    run_knowledge,
    run_metrics,
    run_unit_table,
    run_units,
)

MAX_OVERLAY = 50  # runs drawn at once in the overlay


def dropped(reasons) -> None:
    """A caption listing the picked runs a section leaves out, and why."""
    reasons = list(reasons)
    if reasons:
        st.caption("Not shown: " + "; ".join(reasons) + ".")


st.title("Compare runs")
leave_legacy_pages_mode()
runs = all_runs()
if len(runs) < 2:
    st.info("Comparing needs at least two runs in the runs folders (see the sidebar); make another one on *New run*.")
    st.stop()
c = st.columns(3)
tasks = c[0].multiselect("Task", sorted(runs["task"].dropna().unique()), key="compare_tasks", placeholder="any")
models = c[1].multiselect("Model", sorted(runs["model"].dropna().unique()), key="compare_models", placeholder="any")
wanted = c[2].multiselect("Method", ui_data.run_methods(runs), key="compare_methods", placeholder="any")
matching = ui_data.filter_runs(runs, tasks, models, wanted)
if len(matching) < 2:
    st.info(f"{len(matching)} run(s) match these filters; comparing needs two.")
    st.stop()

st.subheader(f"Many runs ({min(len(matching), MAX_OVERLAY)} of {len(matching)} matching)")
shown = matching.head(MAX_OVERLAY)
keys_all = {
    r["run_id"] + f" ({Path(r['folder']).name})": (r["folder"], r["run_id"], r["updated"] or "")
    for r in shown.to_dict("records")
}
points = compare.overlay_points(
    {n: read(run_metrics, *k) for n, k in keys_all.items()},
    {n: read(run_unit_table, *k, "inference") for n, k in keys_all.items()},
)
if wanted:
    points = points[points["method"].isin(wanted)]
if points.empty:
    st.info("No pruned student with a score in the matching runs yet.")
else:
    xs = [x for x in plots_compare.OVERLAY_X if x != "speedup" or points["speedup"].notna().any()]
    ox = st.radio("x axis", xs, horizontal=True, key="compare_overlay_x", format_func=plots_compare.OVERLAY_X.get)
    figure(plots_compare.overlay(points, ox), points, f"compare_overlay_{ox}", "compare_overlay")
    st.caption(
        "Every matching run's students (means over seeds, main budget); marker = run, colour = method; grey: the Pareto front across runs."
    )

rows = {r["path"]: r for r in matching.to_dict("records")}
dupes = matching["run_id"].duplicated(keep=False).set_axis(matching["path"])
label = {p: r["run_id"] + (f" ({Path(r['folder']).name})" if dupes[p] else "") for p, r in rows.items()}
current = st.session_state.get(RUN)
first_two, why = compare.default_pair(matching, (current["folder"], current["run_id"]) if current else None)
paths = pick("Runs", list(rows), "compare_runs", many=True, default=first_two, format_func=label.get)
if why and set(paths) == set(first_two):
    st.caption(f"Opened on two runs of different tasks: {why}.")
picked_tasks = {rows[p]["task"] for p in paths}
if len(picked_tasks) > 1:
    st.warning(
        f"These runs are of different tasks ({', '.join(sorted(map(str, picked_tasks)))}): their scores do not compare."
    )
if len(paths) < 2:
    st.info("Pick at least two runs.")
    st.stop()
keys = {label[p]: (rows[p]["folder"], rows[p]["run_id"], rows[p]["updated"] or "") for p in paths}
names = list(keys)

st.subheader("Accuracy vs sparsity")
metrics = {n: read(run_metrics, *k) for n, k in keys.items()}
present = {n: ui_data.task_metrics(m) for n, m in metrics.items()}
options = [m for m in ui_data.TASK_METRICS if any(m in p for p in present.values())]
curves = {}
if not options:
    st.info("None of these runs has a finished unit with task metrics yet.")
else:
    c = st.columns([2, 2, 3], vertical_alignment="bottom")
    metric = pick("Metric", options, "compare_metric", container=c[0])
    x = c[1].radio("Sparsity axis", ["measured", "target"], horizontal=True, key="compare_x")
    curves = {n: read(curve, *keys[n], metric, "std") for n in names if metric in present[n]}
    dropped(f"{n}: no {metric} yet" for n in names if metric not in present[n])
    table = compare.stack(curves)
    constants = {n: read(constant_answer, *keys[n], metric) for n in curves}
    constants = {n: v for n, v in constants.items() if v is not None}
    fig = plots_compare.accuracy_compare(table, metric, x=x, constants=constants)
    figure(fig, table, f"compare_{metric}_vs_sparsity", "compare_acc")

st.subheader("Knowledge per layer")
knowledge = {n: read(run_knowledge, *k) for n, k in keys.items()}
kmetrics, _ = compare.knowledge_options(knowledge)
shared, ksparsities = compare.shared_sparsities(knowledge)
if not kmetrics or not ksparsities:
    st.info("None of these runs has knowledge tables of pruned students yet (`kaviz analyze RUN` computes them).")
else:
    c = st.columns(3, vertical_alignment="bottom")
    kmetric = pick(
        "Metric",
        kmetrics,
        "compare_kmetric",
        container=c[0],
        index=kmetrics.index("linear_cka") if "linear_cka" in kmetrics else 0,
    )
    ref = c[1].radio("Against", ["finetuned", "pretrained"], horizontal=True, key="compare_reference")
    offered = shared or ksparsities  # the sparsities every run has, else any (and say who drops out)
    ks = pick(
        "Target sparsity",
        offered,
        "compare_ksparsity",
        container=c[2],
        index=len(offered) - 1,
        format_func=lambda s: f"{100 * s:g}%",
        help="The target sparsities all these runs' students share" if shared else "No sparsity is shared by all runs",
    )
    kcurves = compare.knowledge_curves(knowledge, kmetric, ref, ks)
    dropped(f"{n}: {why}" for n, why in compare.knowledge_dropped(knowledge, kmetric, ref, ks).items())
    if kcurves.empty:
        st.info(f"No {kmetric} rows against the {ref} model at {100 * ks:g}% in these runs.")
    else:
        fig = plots_compare.knowledge_compare(kcurves, kmetric, ref)
        figure(fig, kcurves, f"compare_{kmetric}_{ref}_s{ks:g}", "compare_knowledge")

st.subheader("Two runs side by side")
c = st.columns(2)
run_a = pick("Run A", names, "compare_a", container=c[0], index=0)
run_b = pick("Run B", names, "compare_b", container=c[1], index=1)
if run_a == run_b:
    st.info("Pick two different runs as A and B.")
elif run_a in curves and run_b in curves:
    diff = compare.score_difference(curves[run_a], curves[run_b], (run_a, run_b))
    if diff.empty:
        st.info("The two runs share no (method, sparsity) point.")
    else:
        fig = plots_compare.difference_heatmap(diff, (run_a, run_b), metric)
        figure(fig, diff, f"compare_{metric}_difference", "compare_diff")
elif curves:
    st.info(f"Run {run_a if run_a not in curves else run_b} has no {metric} yet.")

st.markdown("**Config differences**")
configs = compare.config_table({n: read(run_config, *k) for n, k in keys.items()})
st.dataframe(configs, hide_index=True)
downloads(configs, "compare_config_diff", "compare_config")

st.markdown("**Mask overlap**")
show_masks = st.toggle(
    "Show mask overlap and surviving heads (reads both students' weights)", key="compare_masks", value=False
)
if run_a != run_b and show_masks:
    ka, kb = keys[run_a], keys[run_b]
    pairs, reason = compare.mask_pairs(
        read(run_units, *ka), read(run_units, *kb), read(run_checkpoints, *ka), read(run_checkpoints, *kb)
    )
    if pairs.empty:
        st.info(f"No mask overlap for {run_a} and {run_b}: {reason}.")
    else:
        text = [f"{r.method} at {100 * r.sparsity:g}% (seed {r.seed})" for r in pairs.itertuples()]
        i = pick("Student", list(range(len(pairs))), "compare_mask_pair", format_func=text.__getitem__)
        try:
            overlap, heads = mask_tables(ka, pairs["unit_a"][i], kb, pairs["unit_b"][i])
        except ValueError as e:
            st.info(f"No mask overlap for these students: {e}")
        else:
            title = f"kept-weight overlap (Jaccard), {text[i]}: {run_a} vs {run_b}"
            figure(plots_compare.mask_overlap_heatmap(overlap, title), overlap, "compare_mask_overlap", "compare_mask")
            st.caption(
                "Jaccard: of the weights either student keeps, the fraction both keep. Below: the share of each head's Q/K/V weights that survived."
            )
            fig = plots_compare.surviving_heads_heatmap(heads, {"a": run_a, "b": run_b})
            figure(fig, heads, "compare_surviving_heads", "compare_heads")
