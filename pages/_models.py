"""Pages that open models (Attention, Attribution): the cached unit models and tokenizer, which
units have weights (a checkpoint or compact weights), and the maps computed from them."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from kaviz.store import RunStore
from pages._common import RunKey, all_runs, read, run_units

NO_CHECKPOINT_MESSAGE = (
    "{what} need the models' weights, and this run kept none for **{units}** (a run copied without "
    "checkpoints has tables only). Re-run with `save_checkpoints: true` to see them; the figures above "
    "come from the stored tables."
)
WEIGHTS_ELSEWHERE = " In this run, weights are kept for: {units}."


@st.cache_resource(show_spinner="Loading model…", max_entries=4)
def unit_model(folder: str, run_id: str, updated: str, unit: str):
    """The unit's model from its checkpoint, or None (held for reuse; never modified)."""
    from kaviz.analysis.unit_view import load_unit_model

    return load_unit_model(RunStore(folder).open_run(run_id), unit)


@st.cache_resource(show_spinner=False, max_entries=4)
def run_tokenizer(folder: str, run_id: str, updated: str):
    from kaviz.analysis.unit_view import load_run_tokenizer

    return load_run_tokenizer(RunStore(folder).open_run(run_id))


def units_with_weights(key: RunKey, units) -> list[str]:
    """Those of ``units`` whose models the run can load (a checkpoint or compact weights; disk checks only)."""
    run = RunStore(key[0]).open_run(key[1])
    return [u for u in units if run.has_weights(u)]


def last_with_weights(key: RunKey, units: list[str]) -> int:
    """Index of the last of ``units`` with weights (so maps show on first open), else of the last one."""
    kept = set(units_with_weights(key, units))
    return max((i for i, u in enumerate(units) if u in kept), default=len(units) - 1)


def _select_run(path: str) -> None:
    st.session_state["app_run"] = path  # the sidebar picker's key (app.py), set before the next rerun


def offer_runs_with_weights(key: RunKey) -> None:
    """Buttons that open another run whose models can be loaded (e.g. the shipped demo's compact weights)."""
    for r in all_runs().to_dict("records"):
        if (r["folder"], r["run_id"]) == key[:2]:
            continue
        run = RunStore(r["folder"]).open_run(r["run_id"])
        if any(run.has_weights(u) for u in run.units()["unit"]):
            st.button(
                f"Open run {r['run_id']}, which keeps its weights",
                key=f"open_weights_{r['path']}",
                on_click=_select_run,
                args=(r["path"],),
                icon=":material/open_in_new:",
            )


def models_or_info(key: RunKey, units: list[str], what: str) -> list | None:
    """The models of ``units`` and the run's tokenizer (last), or None after an st.info saying why not."""
    models = [read(unit_model, *key, u) for u in units]
    tokenizer = read(run_tokenizer, *key)
    missing = [u for u, m in zip(units, models) if m is None] + (["the tokenizer"] if tokenizer is None else [])
    if missing:
        kept = units_with_weights(key, read(run_units, *key).get("unit", []))
        st.info(
            NO_CHECKPOINT_MESSAGE.format(what=what, units=", ".join(missing))
            + (WEIGHTS_ELSEWHERE.format(units=", ".join(kept)) if kept else "")
        )
        if not kept:
            offer_runs_with_weights(key)
        return None
    return [*models, tokenizer]


@st.cache_data(show_spinner="Computing attention maps…", max_entries=64)
def attention_maps(folder: str, run_id: str, updated: str, unit: str, text: str):
    from kaviz.analysis.unit_view import attention_maps as maps

    return maps(unit_model(folder, run_id, updated, unit), run_tokenizer(folder, run_id, updated), text)


@st.cache_data(show_spinner="Integrated gradients…", max_entries=64)
def token_attributions(folder: str, run_id: str, updated: str, teacher: str, unit: str, text: str) -> pd.DataFrame:
    from kaviz.analysis.unit_view import token_attributions as attributions

    models = [unit_model(folder, run_id, updated, u) for u in (teacher, unit)]
    return attributions(*models, run_tokenizer(folder, run_id, updated), text).tokens
