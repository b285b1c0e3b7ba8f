"""kaviz app: ``streamlit run app.py``.

The entry point: page config, session state, the shared sidebar (runs folders, run picker) and
navigation over ``pages/``.  Runs are looked for in ``KAVIZ_RUNS`` (comma-separated folders) when
set, else in the demo runs shipped in ``assets/runs`` and in ``runs/`` under the current folder.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from kaviz.views import ui_data
from pages._common import EXTRA_FOLDERS, RUN, RUNS_LISTING, SELECT_RUN, init_state

st.set_page_config(page_title="kaviz", page_icon=":material/content_cut:", layout="wide")
init_state()

PAGES = [
    st.Page("pages/1_overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page("pages/2_accuracy_vs_sparsity.py", title="Accuracy vs sparsity", icon=":material/show_chart:"),
    st.Page("pages/8_budget_curves.py", title="Budget curves", icon=":material/speed:"),
    st.Page("pages/3_knowledge_flow.py", title="Knowledge flow", icon=":material/account_tree:"),
    st.Page("pages/4_attention.py", title="Attention", icon=":material/grid_on:"),
    st.Page("pages/5_attribution.py", title="Attribution", icon=":material/format_color_text:"),
    st.Page("pages/9_inference.py", title="What pruning buys", icon=":material/bolt:"),
    st.Page("pages/6_compare_runs.py", title="Compare runs", icon=":material/compare_arrows:"),
    st.Page("pages/7_new_run.py", title="New run", icon=":material/add_circle:"),
]


def add_folder() -> None:
    folder = st.session_state.get("app_new_folder", "").strip()
    if folder and folder not in st.session_state[EXTRA_FOLDERS]:
        st.session_state[EXTRA_FOLDERS] = [*st.session_state[EXTRA_FOLDERS], folder]
    st.session_state["app_new_folder"] = ""


def same_folder(a: str, b: str) -> bool:
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except OSError:
        return False


def sidebar() -> None:
    folders = ui_data.folders_from_environ(st.session_state[EXTRA_FOLDERS])
    runs = ui_data.list_runs(folders)  # manifests are re-read each rerun; their "updated" keys the caches
    st.session_state[RUNS_LISTING] = runs  # pages reuse this rerun's listing instead of re-reading manifests
    readable = runs[runs["status"] != "unreadable"]
    with st.sidebar:
        st.header("Run")
        if readable.empty:
            st.session_state[RUN] = None
            st.caption("No runs in the folders below.")
        else:
            rows = {r["path"]: r for r in readable.to_dict("records")}
            chosen = st.session_state[RUN]
            want = st.session_state.pop(SELECT_RUN, None)  # e.g. a run launched from the app that just finished
            if want:
                match = [
                    p
                    for p, r in rows.items()
                    if r["run_id"] == want["run_id"] and same_folder(r["folder"], want["folder"])
                ]
                if match:
                    st.session_state["app_run"] = match[0]
            if st.session_state.get("app_run") not in rows:
                st.session_state["app_run"] = next(
                    (
                        p
                        for p, r in rows.items()
                        if chosen and (r["folder"], r["run_id"]) == (chosen["folder"], chosen["run_id"])
                    ),
                    next(iter(rows)),
                )
            path = st.selectbox("Run", list(rows), key="app_run", format_func=lambda p: ui_data.run_label(rows[p]))
            r = rows[path]
            st.caption(ui_data.run_state(r))
            st.session_state[RUN] = {k: r[k] for k in ("folder", "run_id", "updated", "status")}
            if r["status"] == "running":
                st.button("Refresh", key="app_refresh", icon=":material/refresh:", help="Re-read the running run")
        bad = runs[runs["status"] == "unreadable"]
        if len(bad):
            with st.expander(f"{len(bad)} unreadable run folder(s)", icon=":material/warning:"):
                for b in bad.to_dict("records"):
                    st.caption(f"**{b['run_id']}** ({b['path']}): {b['error']}")
        with st.expander("Runs folders"):
            for f in folders:
                st.caption(f"`{f}`" + ("" if Path(f).is_dir() else " (missing)"))
            st.text_input("Add a folder", key="app_new_folder", placeholder="/path/to/runs", on_change=add_folder)


page = st.navigation(PAGES)
sidebar()
page.run()
