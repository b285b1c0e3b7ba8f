"""What every page shares: session-state keys, cached readers of the selected run, the run guard
and the figure/table download row.  Not a page (app.py's ``st.navigation`` lists the pages).

Cached readers take ``(folder, run_id, updated)``: ``updated`` is the manifest's timestamp, so a
run that finishes a unit is read afresh while an unchanged one is read once.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from kaviz import ui_data
from kaviz.store import RunStore, StoreError

#: Session-state keys shared across pages, with their initial values (set once in app.py).
RUN = "kaviz_run"  # the selected run: {"folder", "run_id", "updated", "status"} or None
EXTRA_FOLDERS = "kaviz_extra_folders"  # runs folders the user added in the sidebar
STATE_DEFAULTS = {RUN: None, EXTRA_FOLDERS: []}

EMPTY_MESSAGE = (
    "No runs found. Make a small one (a tiny random BERT on the built-in demo task) with\n\n"
    "```\nkaviz demo --tiny --out runs\n```\n\n"
    "then reload this page, or add a folder that holds runs in the sidebar."
)

RunKey = tuple[str, str, str]


def init_state() -> None:
    for key, value in STATE_DEFAULTS.items():
        if key not in st.session_state:
            st.session_state[key] = list(value) if isinstance(value, list) else value


def leave_legacy_pages_mode() -> None:
    """Make sure app.py runs before the page.

    A ``pages/`` folder turns on Streamlit's legacy multipage mode until some run has called
    ``st.navigation``; in that mode a page URL requested first on a fresh server (and, in AppTest,
    every run after the first) executes the page file alone, without app.py's sidebar and state.
    Switch the mode off and rerun: the rerun executes app.py, which runs this page.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # pragma: no cover - a Streamlit without the legacy mode
        return
    if getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False
        st.rerun()


def require_run() -> RunKey:
    """The selected run's cache key, or an explanation and a stop when there is none.

    Call it first on every page that shows a run (it also runs :func:`leave_legacy_pages_mode`).
    """
    leave_legacy_pages_mode()
    run = st.session_state.get(RUN)
    if not run:
        st.info(EMPTY_MESSAGE)
        st.stop()
    return run["folder"], run["run_id"], run["updated"] or ""


def read(fn, *args):
    """``fn(*args)``, or the store's error shown on the page and a stop (e.g. a deleted run)."""
    try:
        return fn(*args)
    except StoreError as e:
        st.error(f"Cannot read this run: {e}")
        st.stop()


# ----- cached readers (never modify what they return) ---------------------------------------------


@st.cache_data(show_spinner=False, max_entries=64)
def run_metrics(folder: str, run_id: str, updated: str) -> pd.DataFrame:
    return RunStore(folder).open_run(run_id).metrics()


@st.cache_data(show_spinner=False, max_entries=64)
def run_units(folder: str, run_id: str, updated: str) -> pd.DataFrame:
    return RunStore(folder).open_run(run_id).units()


@st.cache_data(show_spinner=False, max_entries=64)
def run_config(folder: str, run_id: str, updated: str) -> dict:
    return RunStore(folder).open_run(run_id).config


@st.cache_data(show_spinner="Reading per-unit tables…", max_entries=64)
def run_unit_table(folder: str, run_id: str, updated: str, name: str) -> pd.DataFrame:
    return RunStore(folder).open_run(run_id).unit_table(name)


@st.cache_data(show_spinner=False, max_entries=64)
def headline(folder: str, run_id: str, updated: str, metric: str = "score") -> pd.DataFrame:
    return ui_data.headline_table(run_metrics(folder, run_id, updated), metric)


@st.cache_data(show_spinner=False, max_entries=64)
def curve(folder: str, run_id: str, updated: str, metric: str, spread: str) -> pd.DataFrame:
    return ui_data.sparsity_curve_table(run_metrics(folder, run_id, updated), metric, spread)


# ----- output helpers -----------------------------------------------------------------------------


def downloads(table: pd.DataFrame, name: str, key: str, fig: go.Figure | None = None) -> None:
    """A row of download buttons: the table as CSV and LaTeX, and the figure as PNG on request.

    The PNG is rendered only when asked (kaleido needs Chrome); if that fails the page says so
    and carries on.
    """
    index = table.index.name is not None
    cols = st.columns([1, 1, 1, 6], vertical_alignment="center")
    cols[0].download_button(
        "CSV",
        table.to_csv(index=index).encode("utf-8"),
        file_name=f"{name}.csv",
        mime="text/csv",
        key=f"{key}_csv",
        on_click="ignore",
        icon=":material/download:",
    )
    cols[1].download_button(
        "LaTeX",
        ui_data.latex_table(table).encode("utf-8"),
        file_name=f"{name}.tex",
        mime="application/x-tex",
        key=f"{key}_tex",
        on_click="ignore",
        icon=":material/download:",
    )
    if fig is None:
        return
    if cols[2].button("PNG", key=f"{key}_png", icon=":material/image:", help="Render the figure as PNG"):
        try:
            png = fig.to_image(format="png", scale=2)
        except Exception as e:  # kaleido or Chrome missing or failing: not worth breaking the page
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            cols[3].caption(
                f"PNG export is unavailable here ({first}); use the camera icon in the chart's toolbar instead."
            )
        else:
            cols[3].download_button(
                "Save PNG", png, file_name=f"{name}.png", mime="image/png", key=f"{key}_png_save", on_click="ignore"
            )


def figure(fig: go.Figure, table: pd.DataFrame, name: str, key: str) -> None:
    """The chart at full width, then its table's downloads (and the PNG)."""
    st.plotly_chart(fig, width="stretch", key=f"{key}_chart")
    downloads(table, name, key, fig)
