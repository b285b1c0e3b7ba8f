"""New run: start from a preset known to learn or from a stored run, edit any field, launch in the
background (after the CLI's own input checks), and follow both phases, training then analysis.

The fields build the RunConfig the CLI takes (kaviz.core.form); progress is read from disk, so it
survives navigation and reloads, and the form keeps its values when you visit other pages."""

import hashlib
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
from kaviz.store import RunStore
from kaviz.views import ui_data
from pages._common import EXTRA_FOLDERS, SELECT_RUN, all_runs, leave_legacy_pages_mode

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
SAVED, BASE, PENDING = "newrun_saved", "newrun_base", "newrun_pending"  # kept across pages (not widgets)
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
    "settings without a field here are kept from it",
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


def start(folder: str, cfg: RunConfig, resume: bool = False) -> None:
    try:
        with st.spinner("Checking the model, the data and the paths…"):
            launcher.launch(folder, cfg, resume=resume)
    except (KavizError, ValueError) as e:
        st.error(f"Not launched: {e}")
        return
    st.session_state.pop("newrun_resume", None)
    if folder not in listed:  # so that the sidebar's run picker lists it
        st.session_state[EXTRA_FOLDERS] = [*st.session_state.get(EXTRA_FOLDERS, []), folder]
    # selected in the sidebar when it completes, unless the user picks another run meanwhile
    st.session_state[PENDING] = {"folder": str(Path(folder).resolve()), "name": cfg.name}
    st.session_state["newrun_picked_at_launch"] = st.session_state.get("app_run")
    st.toast(f"Started {cfg.name}", icon=":material/rocket_launch:")


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
        elif store.open_run(cfg.name).status == "complete":
            st.error(
                f"Not launched: a complete run named **{cfg.name}** already exists in `{folder}`; choose another name."
            )
        else:
            st.session_state["newrun_resume"] = {"folder": folder, "name": cfg.name}

offer = st.session_state.get("newrun_resume")
if offer:
    slot = st.container()  # the reason above the button, unless the button resumed the run
    if st.button(f"Resume {offer['name']}", key="newrun_resume_button", icon=":material/play_arrow:"):
        stored_cfg = RunStore(offer["folder"]).open_run(offer["name"]).config
        start(offer["folder"], RunConfig.from_dict(stored_cfg), resume=True)
    if st.session_state.get("newrun_resume"):
        status = RunStore(offer["folder"]).open_run(offer["name"]).status
        slot.error(
            f"Not launched: a run named **{offer['name']}** already exists in `{offer['folder']}` ({status}). "
            "Choose another name, or resume it with its stored config."
        )

st.subheader("Launched runs")
launched = [(f, n) for f in targets for n in launcher.launches(f)]
alive_first = {(f, n) for f, n in launched if launcher.status(f, n).alive}
if not launched:
    st.caption("Runs launched here are listed with their progress; a run is selected in the sidebar when it finishes.")


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f" · about {seconds / 60:.0f} min left" if seconds >= 90 else f" · about {seconds:.0f} s left"


def show(s: launcher.LaunchStatus) -> None:
    key = hashlib.sha1(f"{s.folder}/{s.name}".encode()).hexdigest()[:10]
    with st.container(border=True):
        c = st.columns([5, 1], vertical_alignment="center")
        c[0].markdown(f"**{s.name}** · {s.state}" + (" (resumed)" if s.resume else "") + f" · `{s.folder}`")
        if s.alive:
            c[1].button(
                "Stop",
                key=f"newrun_stop_{key}",
                icon=":material/stop:",
                on_click=launcher.stop,
                args=(s.folder, s.name),
                kwargs={"timeout": 5},
            )
        else:
            c[1].button(
                "Dismiss",
                key=f"newrun_dismiss_{key}",
                icon=":material/close:",
                on_click=launcher.dismiss,
                args=(s.folder, s.name),
                help="Forget this launch here (its run folder, if any, stays)",
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


@st.fragment(run_every=2 if alive_first else None)
def progress() -> None:
    statuses = [launcher.status(f, n) for f, n in launched]
    finished_now = alive_first - {(s.folder, s.name) for s in statuses if s.alive}
    if select_when_finished(statuses) or finished_now:
        st.rerun()  # rerun the whole app so that the sidebar lists (and selects) it as it is now
    for s in [s for s in statuses if s.alive] + [s for s in statuses if not s.alive]:
        show(s)


progress()
