"""What every page shares: session-state keys, cached readers of the selected run, the run guard
and the figure/table download row.  Not a page (app.py's ``st.navigation`` lists the pages).

Cached readers take ``(folder, run_id, updated)``: ``updated`` is the manifest's timestamp, so a
run that finishes a unit is read afresh while an unchanged one is read once.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from kaviz.analysis import evidence
from kaviz.core import schema
from kaviz.store import RunStore, StoreError
from kaviz.views import ui_data

#: Session-state keys shared across pages, with their initial values (set once in app.py).
RUN = "kaviz_run"  # the selected run: {"folder", "run_id", "updated", "status"} or None
EXTRA_FOLDERS = "kaviz_extra_folders"  # runs folders the user added in the sidebar
SELECT_RUN = "kaviz_select_run"  # {"folder", "run_id"}: the sidebar selects this run on its next rerun
RUNS_LISTING = "kaviz_runs_listing"  # the sidebar's run listing of the current rerun (pages reuse it)
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
    """The metrics of the units at the run's main student budget (what by-sparsity views show)."""
    run = RunStore(folder).open_run(run_id)
    return schema.shown_scores(ui_data.at_main_budget(run.metrics(), run.config))


@st.cache_data(show_spinner=False, max_entries=64)
def run_metrics_all(folder: str, run_id: str, updated: str) -> pd.DataFrame:
    """Every unit's metrics, budget-curve units included (task scores shown ×100)."""
    return schema.shown_scores(RunStore(folder).open_run(run_id).metrics())


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


def _intervals(folder: str, run_id: str, updated: str, metric: str):
    """(run, evidence.summary of ``metric`` with 1000 resamples, scores shown ×100), or None for a
    run without stored predictions or a metric without intervals."""
    run = RunStore(folder).open_run(run_id)
    metrics = run_metrics(folder, run_id, updated)
    name = evidence.score_metric(metrics) if metric == "score" else metric
    if name is None or run.unit_table("predictions").empty:
        return None
    table = evidence.summary(run, (name,), n_boot=1000)
    if table.empty:
        return None
    return run, schema.shown_scores(table, columns=("mean", "low", "high", "teacher", "constant"))


@st.cache_data(show_spinner="Bootstrapping intervals…", max_entries=32)
def score_intervals(folder: str, run_id: str, updated: str, metric: str) -> pd.DataFrame | None:
    """95% bootstrap intervals (dev examples and seeds) of ``metric`` per (stage, method, sparsity) at
    the main budget: stage, method, sparsity, low, high; None without predictions."""
    got = _intervals(folder, run_id, updated, metric)
    if got is None:
        return None
    run, table = got
    return ui_data.at_main_budget(table, run.config).drop(columns=["metric"])


@st.cache_data(show_spinner="Bootstrapping intervals…", max_entries=32)
def budget_intervals(folder: str, run_id: str, updated: str, metric: str) -> pd.DataFrame | None:
    """95% bootstrap intervals (dev examples and seeds) of ``metric`` per (method, sparsity, budget)
    of the budget units: method, sparsity, budget, low, high; None without predictions."""
    got = _intervals(folder, run_id, updated, metric)
    if got is None:
        return None
    table = got[1]
    return table[(table.stage == "pruned") & table.budget.notna()][["method", "sparsity", "budget", "low", "high"]]


@st.cache_data(show_spinner=False, max_entries=64)
def reference_levels(folder: str, run_id: str, updated: str, metric: str) -> dict[str, float]:
    """The teacher's, the pre-trained model's and the best constant answer's ``metric`` on the run's
    dev set (:func:`kaviz.analysis.evidence.reference_levels`), as shown (task scores ×100)."""
    predictions = run_unit_table(folder, run_id, updated, "predictions")
    run = RunStore(folder).open_run(run_id)
    levels = evidence.reference_levels(ui_data.at_main_budget(run.metrics(), run.config), predictions, metric)
    scale = schema.SCORE_SCALE if metric in schema.TASK_METRICS else 1.0
    return {k: v * scale for k, v in levels.items()}


def constant_answer(folder: str, run_id: str, updated: str, metric: str) -> float | None:
    """The best constant answer's ``metric`` on the run's dev set, as shown (None: not a classification
    metric, or no unit stored its predictions)."""
    return reference_levels(folder, run_id, updated, metric).get("constant answer")


@st.cache_data(show_spinner=False, max_entries=64)
def run_findings(folder: str, run_id: str, updated: str) -> list:
    """The run's findings (:mod:`kaviz.analysis.findings`) at its main budget."""
    from kaviz.analysis.analyzer import knowledge_table
    from kaviz.analysis.findings import findings
    from kaviz.core.config import main_budget

    run = RunStore(folder).open_run(run_id)
    return findings(
        run.metrics(),
        knowledge_table(run),
        run.unit_table("predictions"),
        run.unit_table("inference"),
        main_budget=main_budget(run.config),
    )


@st.cache_data(show_spinner="Writing the report…", max_entries=8)
def run_report(folder: str, run_id: str, updated: str) -> str:
    from kaviz.report import build

    return build(RunStore(folder).open_run(run_id))


# ----- output helpers -----------------------------------------------------------------------------


@st.cache_data(show_spinner="Rendering the PNG…", max_entries=32)
def figure_png(fig_json: str) -> bytes:
    """The figure as a PNG (kaleido, scale 2), rendered once per figure: a second export of the same
    figure, or a rerun after the first, is instant (kaleido starts a browser each time, ~2-5 s)."""
    import plotly.io as pio

    return pio.from_json(fig_json).to_image(format="png", scale=2)


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
            png = figure_png(fig.to_json())
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


# ----- knowledge pages (3-5): analysis tables, models and guards ----------------------------------

ANALYZE_MESSAGE = (
    "This run has no knowledge tables yet. Compute them (CKA, attention, probes, attribution) with\n\n"
    "```\nkaviz analyze {path}\n```\n\nthen reload this page."
)


@st.cache_data(show_spinner="Reading knowledge tables…", max_entries=64)
def run_knowledge(
    folder: str, run_id: str, updated: str, name: str = "knowledge", all_budgets: bool = False
) -> pd.DataFrame:
    """A knowledge table of the units at the main student budget (``all_budgets``: of every unit)."""
    from kaviz.analysis.analyzer import knowledge_table

    run = RunStore(folder).open_run(run_id)
    table = knowledge_table(run, name)
    return table if all_budgets else ui_data.at_main_budget(table, run.config)


def require_knowledge(key: RunKey) -> pd.DataFrame:
    """The run's knowledge table, or the ``kaviz analyze`` hint and a stop when it has none."""
    table = read(run_knowledge, *key)
    if table.empty:
        from pathlib import Path

        from kaviz import launcher

        st.info(ANALYZE_MESSAGE.format(path=Path(key[0]) / key[1]))
        if not launcher.is_shipped(key[0]) and st.button(
            "Analyze now", key="analyze_now", icon=":material/play_arrow:"
        ):
            try:
                launcher.analyze(key[0], key[1])
            except (launcher.LaunchError, ValueError) as e:
                st.error(f"Not started: {e}")
            else:
                st.success("Analysing in the background: follow it on **New run**; the figures appear here when done.")
        st.stop()
    return table


def pick(label: str, options: list, key: str, *, many: bool = False, container=None, **kwargs):
    """A selectbox (``many``: a multiselect, all options by default) in ``container`` (default: the
    page) whose stale state is dropped when the options change (another run), so a value that is
    gone never errors."""
    value = st.session_state.get(key)
    if value is not None and not (set(value) <= set(options) if many else value in options):
        st.session_state.pop(key, None)
    where = container if container is not None else st
    if many:
        return where.multiselect(label, options, default=kwargs.pop("default", options), key=key, **kwargs)
    return where.selectbox(label, options, key=key, **kwargs)


# ----- compare runs / new run (pages 6-7) ---------------------------------------------------------


def all_runs() -> pd.DataFrame:
    """The readable runs in every runs folder (the sidebar's listing), newest first."""
    runs = st.session_state.get(RUNS_LISTING)  # set by app.py's sidebar earlier in this rerun
    if runs is None:
        runs = ui_data.list_runs(ui_data.folders_from_environ(st.session_state.get(EXTRA_FOLDERS, [])))
    return runs[runs["status"] != "unreadable"].reset_index(drop=True)


@st.cache_data(show_spinner=False, max_entries=64)
def run_checkpoints(folder: str, run_id: str, updated: str) -> list[str]:
    from kaviz.analysis.compare import units_with_checkpoints

    return units_with_checkpoints(RunStore(folder).open_run(run_id))


@st.cache_data(show_spinner="Comparing masks…", max_entries=16)
def mask_tables(key_a: RunKey, unit_a: str, key_b: RunKey, unit_b: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mask overlap of two units' checkpoints and their surviving heads (kaviz.analysis.compare.unit_masks)."""
    from kaviz.analysis.compare import unit_masks

    return unit_masks(RunStore(key_a[0]).open_run(key_a[1]), unit_a, RunStore(key_b[0]).open_run(key_b[1]), unit_b)
