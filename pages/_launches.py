"""The New run page's list of launched runs: one card per launch (state, progress of training then
analysis, log), refreshed from disk every 2 s while one runs; a launch that completes is selected
in the sidebar unless the user picked another run meanwhile."""

import hashlib

import streamlit as st

from kaviz import launcher
from pages._common import SELECT_RUN

PENDING = "newrun_pending"  # the launch to select when it completes (kept across pages)


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f" · about {seconds / 60:.0f} min left" if seconds >= 90 else f" · about {seconds:.0f} s left"


def show(s: launcher.LaunchStatus) -> None:
    key = hashlib.sha1(f"{s.folder}/{s.name}".encode()).hexdigest()[:10]
    with st.container(border=True):
        c = st.columns([5, 1], vertical_alignment="center")
        c[0].markdown(f"**{s.name}** · {s.state}" + (" (resumed)" if s.resume else "") + f" · `{s.folder}`")
        stop = s.alive  # a running launch can be stopped; a finished one dismissed from this list
        c[1].button(
            "Stop" if stop else "Dismiss",
            key=f"newrun_{'stop' if stop else 'dismiss'}_{key}",
            icon=":material/stop:" if stop else ":material/close:",
            on_click=launcher.stop if stop else launcher.dismiss,
            args=(s.folder, s.name),
            kwargs={"timeout": 5} if stop else None,
            help=None if stop else "Forget this launch here (its run folder, if any, stays)",
        )
        unit = f" · now: {s.current_unit}" if s.current_unit and s.phase == "training" else ""
        eta = _minutes(s.eta_seconds) if s.phase == "training" else ""
        st.progress(s.fraction, text=f"Training: {s.units_done}/{s.units_total} units{unit}{eta}")
        if s.analysis_total or s.state == "analyzing":
            eta = _minutes(s.eta_seconds) if s.phase == "analysis" else ""
            text = f"Analysis: {s.analysis_done}/{s.analysis_total} units{eta}"
            st.progress(s.analysis_fraction, text=text)
        for w in s.warnings:
            st.warning(w, icon=":material/warning:")
        if s.state == "complete":
            st.caption("Finished: selected in the sidebar's run picker (pick it there if you chose another run).")
        if s.state == "failed":
            st.error(f"The run failed; last line of its log: {(s.log_tail.splitlines() or ['(empty)'])[-1]}")
        if s.alive:
            st.code(s.log_tail or "(no output yet)", language=None)
        elif s.log_tail:
            with st.expander("Log"):
                st.code(s.log_tail, language=None)


def select_when_finished(statuses: list[launcher.LaunchStatus]) -> bool:
    """Ask the sidebar to select the launched run once it completes, unless the user picked another
    run since launching it; True when it did."""
    pending = st.session_state.get(PENDING)
    if not pending:
        return False
    mine = next((s for s in statuses if (s.folder, s.name) == (pending["folder"], pending["name"])), None)
    if mine is None or mine.alive:
        return False
    st.session_state.pop(PENDING)
    if mine.state != "complete" or st.session_state.get("app_run") != st.session_state.get("newrun_picked_at_launch"):
        return False
    st.session_state[SELECT_RUN] = {"folder": mine.folder, "run_id": mine.name}
    return True


def progress(launched: list[tuple[str, str]]) -> None:
    """The cards of the ``launched`` (folder, name) launches, refreshed while one of them runs."""
    alive_first = {(f, n) for f, n in launched if launcher.status(f, n).alive}
    if not launched:
        st.caption(
            "Runs launched here are listed with their progress; a run is selected in the sidebar when it finishes."
        )

    @st.fragment(run_every=2 if alive_first else None)
    def cards() -> None:
        statuses = [launcher.status(f, n) for f, n in launched]
        finished_now = alive_first - {(s.folder, s.name) for s in statuses if s.alive}
        if select_when_finished(statuses) or finished_now:
            st.rerun()  # rerun the whole app so that the sidebar lists (and selects) it as it is now
        for s in [s for s in statuses if s.alive] + [s for s in statuses if not s.alive]:
            show(s)

    cards()
