"""New run: start from a preset known to learn or from a stored run, edit any field, launch in the
background (after the CLI's own input checks), and follow both phases, training then analysis.

The fields build the RunConfig the CLI takes (kaviz.core.form); progress is read from disk, so it
survives navigation and reloads, and the form keeps its values when you visit other pages."""

import os
from pathlib import Path

import streamlit as st
import yaml

from kaviz import launcher
from kaviz.core import form
from kaviz.core.config import GLUE_TASKS, ConfigError, RunConfig
from kaviz.core.errors import KavizError
from kaviz.core.presets import presets
from kaviz.core.registry import METHODS
from kaviz.stages.grid import grid_extension
from kaviz.store import RunStore
from kaviz.store.owner import abandoned
from kaviz.views import ui_data
from pages import _launches
from pages._common import EXTRA_FOLDERS, all_runs, leave_legacy_pages_mode

HELP = {f: h for f, h, _ in RunConfig().help_table()}
MODELS = {
    "packaged": "all-MiniLM-L6-v2 (packaged, offline)",
    "tiny": "tiny random BERT (seconds)",
    "path": "hub id or local path",
}
TASKS = {"demo": "demo (built-in, offline)", **{t: f"GLUE {t}" for t in GLUE_TASKS}, "custom": "custom file"}
#: form.build_config's arguments, each held by the widget keyed ``newrun_<field>``.
FIELDS = ("name", "model", "model_path", "task", "task_path", "text_columns", "label_column", "task_type", "methods")
FIELDS += ("sparsities", "teacher_steps", "teacher_epochs", "teacher_lr", "student_steps", "student_epochs")
FIELDS += ("student_lr", "batch_size", "max_length", "train_subsample", "seed", "analyze")
SAVED, BASE = "newrun_saved", "newrun_base"  # kept across pages (not widgets)
PRESETS = presets()

st.title("New run")
leave_legacy_pages_mode()
listed = ui_data.folders_from_environ(st.session_state.get(EXTRA_FOLDERS, []))
default = str(launcher.user_runs_folder(os.environ.get(ui_data.ENV_RUNS)))
targets = [default] + [f for f in listed if f != default and not launcher.is_shipped(f)]
stored = {f"run:{r['path']}": r for r in all_runs().to_dict("records")}


def label(option: str) -> str:
    if option.startswith("preset:"):
        p = PRESETS[option.removeprefix("preset:")]
        return f"{p.label} ({p.note})"
    r = stored.get(option)
    return f"Run again with changes: {r['run_id']} ({ui_data.run_origin(r)})" if r else option


def free_name(name: str) -> str:
    """``name``, or ``name-2``, ``name-3``… when a run of that name exists in the first runs folder."""
    store, out, k = RunStore(targets[0]), name, 1
    while store.has_run(out):
        k += 1
        out = f"{name}-{k}"
    return out


def apply_start() -> None:
    """Fill every field from the chosen preset or stored run (on_change: before the widgets exist)."""
    option = st.session_state["newrun_start"]
    if option.startswith("preset:"):
        cfg = PRESETS[option.removeprefix("preset:")].config
    else:
        cfg = RunConfig.from_dict(RunStore(stored[option]["folder"]).open_run(stored[option]["run_id"]).config)
    fields = form.fields_from_config(cfg)
    fields["name"] = free_name(cfg.name)
    for f, v in fields.items():
        st.session_state[f"newrun_{f}"] = v
    st.session_state[BASE] = cfg.to_dict()
    st.session_state.pop("newrun_resume", None)


# The form's values outlive a visit to another page: Streamlit drops widget state of widgets that are
# not drawn, so they are restored here from the copy saved at the end of every run of this page.
if "newrun_start" not in st.session_state:
    st.session_state["newrun_start"] = st.session_state.get(SAVED, {}).get("start", "preset:tiny")
    if SAVED in st.session_state:
        for f, v in st.session_state[SAVED]["fields"].items():
            st.session_state[f"newrun_{f}"] = v
    else:
        apply_start()
options = [f"preset:{k}" for k in PRESETS] + list(stored)
if st.session_state["newrun_start"] not in options:  # a stored run that is gone
    st.session_state["newrun_start"] = options[0]
st.selectbox(
    "Start from",
    options,
    key="newrun_start",
    format_func=label,
    on_change=apply_start,
    help="A preset known to learn, or the config of a stored run: every field below takes its value; "
    "settings without a field here are kept from it. To add units to a stored run (sparsities, methods), "
    "start from it and give it back its own name",
)

c = st.columns([2, 3])
c[0].text_input("Run name", key="newrun_name", help=HELP["name"])
folder = c[1].selectbox(
    "Runs folder", targets, key="newrun_folder", help="Where the run is written (never the shipped runs)"
)
c = st.columns([2, 3])
c[0].radio("Model", list(MODELS), format_func=MODELS.get, key="newrun_model")
c[1].text_input(
    "Hub id or local path",
    key="newrun_model_path",
    help=HELP["model.name_or_path"],
    placeholder="bert-base-uncased or /path/to/model",
)
c = st.columns([3, 3, 2, 2, 2])
c[0].selectbox("Task", list(TASKS), format_func=TASKS.get, key="newrun_task", help=HELP["task.name"])
c[1].text_input("Data path (optional for GLUE)", key="newrun_task_path", help=HELP["task.path"])
c[2].text_input(
    "Text columns (custom)",
    key="newrun_text_columns",
    placeholder="sentence1, sentence2",
    help=HELP["task.text_columns"],
)
c[3].text_input("Label column (custom)", key="newrun_label_column")
c[4].selectbox("Custom task type", ["classification", "regression"], key="newrun_task_type")
st.multiselect("Methods", list(METHODS), key="newrun_methods", help=HELP["methods"])
st.text_input("Target sparsities", key="newrun_sparsities", help=HELP["sparsities"])
c = st.columns(3)
c[0].number_input("Teacher steps", 0, step=10, key="newrun_teacher_steps", help="0: train for the epochs instead")
c[1].number_input("Teacher epochs", 0.0, step=0.5, key="newrun_teacher_epochs", help=HELP["training.epochs"])
c[2].number_input(
    "Teacher learning rate", 0.0, step=1e-5, format="%.1e", key="newrun_teacher_lr", help=HELP["training.learning_rate"]
)
c = st.columns(3)
c[0].number_input("Student steps", 0, step=10, key="newrun_student_steps", help="0: train for the epochs instead")
c[1].number_input("Student epochs", 0.0, step=0.5, key="newrun_student_epochs", help=HELP["pruning.epochs"])
c[2].number_input(
    "Student learning rate", 0.0, step=1e-5, format="%.1e", key="newrun_student_lr", help=HELP["pruning.learning_rate"]
)
c = st.columns(4)
c[0].number_input("Batch size", 1, key="newrun_batch_size")
c[1].number_input("Max length", 8, key="newrun_max_length", help=HELP["task.max_length"])
c[2].number_input("Train subsample", 0, step=100, key="newrun_train_subsample", help="0: all examples")
c[3].number_input("Seed", 0, key="newrun_seed")
st.checkbox("Compute the knowledge tables at the end", key="newrun_analyze")
values = {f: st.session_state.get(f"newrun_{f}") for f in FIELDS}
st.session_state[SAVED] = {"start": st.session_state["newrun_start"], "fields": values}
with st.expander("Every setting of this run (the fields above, the rest from where it started)"):
    try:
        shown = form.build_config(**{**values, "name": str(values["name"]).strip()}, base=st.session_state.get(BASE))
        st.code(yaml.safe_dump(shown.to_dict(), sort_keys=False), language="yaml")
    except ConfigError as e:
        st.caption("Not a valid config yet: " + "; ".join(e.lines()))
submitted = st.button("Launch", type="primary", icon=":material/rocket_launch:", key="newrun_submit")


def start(folder: str, cfg: RunConfig, resume: bool = False, extend: bool = False) -> None:
    try:
        with st.spinner("Checking the model, the data and the paths…"):
            launcher.launch(folder, cfg, resume=resume, extend=extend)
    except (KavizError, ValueError) as e:
        st.error(f"Not launched: {e}")
        return
    st.session_state.pop("newrun_resume", None)
    if folder not in listed:  # so that the sidebar's run picker lists it
        st.session_state[EXTRA_FOLDERS] = [*st.session_state.get(EXTRA_FOLDERS, []), folder]
    # selected in the sidebar when it completes, unless the user picks another run meanwhile
    st.session_state[_launches.PENDING] = {"folder": str(Path(folder).resolve()), "name": cfg.name}
    st.session_state["newrun_picked_at_launch"] = st.session_state.get("app_run")
    st.toast(f"Started {cfg.name}", icon=":material/rocket_launch:")


def offer_for(store: RunStore, folder: str, cfg: RunConfig) -> dict:
    """What to offer for a name that is taken: extending the run with the units ``cfg`` adds to its
    grid, resuming it (unfinished), or nothing (complete, same grid or not extendable)."""
    run = store.open_run(cfg.name)
    status = "interrupted" if abandoned(run.manifest) else run.status
    offer = {"folder": folder, "name": cfg.name, "status": status, "new": [], "why": "", "values": values}
    try:
        offer["new"] = grid_extension(run.config, cfg)
    except ConfigError as e:
        offer["why"] = str(e)
    offer["config"] = cfg.to_dict()
    return offer


if submitted:
    st.session_state.pop("newrun_resume", None)
    try:
        cfg = form.build_config(**{**values, "name": str(values["name"]).strip()}, base=st.session_state.get(BASE))
    except ConfigError as e:
        st.error("Not launched; fix these first:\n\n" + "\n".join(f"- {p}" for p in e.lines()))
    else:
        store = RunStore(folder)
        if not store.has_run(cfg.name):
            start(folder, cfg)
        else:
            st.session_state["newrun_resume"] = offer_for(store, folder, cfg)

offer = st.session_state.get("newrun_resume")
if offer and (offer["values"] != values or offer["folder"] != folder):  # the form changed since: ask again
    st.session_state.pop("newrun_resume")
    offer = None
if offer:
    slot = st.container()  # the reason above the buttons, unless a button launched
    new = offer["new"]
    if new and st.button(f"Extend {offer['name']} with {len(new)} new unit(s)", key="newrun_extend_button"):
        start(offer["folder"], RunConfig.from_dict(offer["config"]), extend=True)
    elif offer["status"] != "complete" and st.button(
        f"Resume {offer['name']}", key="newrun_resume_button", icon=":material/play_arrow:"
    ):
        stored_cfg = RunStore(offer["folder"]).open_run(offer["name"]).config
        start(offer["folder"], RunConfig.from_dict(stored_cfg), resume=True)
    if st.session_state.get("newrun_resume"):
        where = f"a {offer['status']} run named **{offer['name']}** already exists in `{offer['folder']}`"
        if new:
            slot.info(
                f"{where[0].upper()}{where[1:]}. Its grid can grow by these units, keeping its teacher and finished "
                f"units: {', '.join(new[:6])}{' …' if len(new) > 6 else ''}."
            )
        elif offer["status"] == "complete":
            slot.error(f"Not launched: {where}; choose another name. {offer['why']}".strip())
        else:
            slot.error(
                f"Not launched: {where}. Choose another name, or resume it with its stored config. {offer['why']}"
            )

st.subheader("Launched runs")
_launches.progress([(f, n) for f in targets for n in launcher.launches(f)])
