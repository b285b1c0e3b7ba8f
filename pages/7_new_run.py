"""New run: a form that builds the RunConfig the CLI takes and runs it in the background, with
progress read from disk (it survives navigation and reloads)."""

import hashlib
import os

import streamlit as st

from kaviz import launcher
from kaviz.core import form
from kaviz.core.config import GLUE_TASKS, ConfigError, RunConfig
from kaviz.core.registry import DEFAULT_METHODS, METHODS
from kaviz.store import RunStore
from kaviz.views import ui_data
from pages._common import EXTRA_FOLDERS, leave_legacy_pages_mode

HELP = {f: h for f, h, _ in RunConfig().help_table()}
MODELS = {
    "packaged": "all-MiniLM-L6-v2 (packaged, offline)",
    "tiny": "tiny random BERT (seconds)",
    "path": "hub id or local path",
}
TASKS = {"demo": "demo (built-in, offline)", **{t: f"GLUE {t}" for t in GLUE_TASKS}, "custom": "custom file"}
SHOWN = 4  # finished launches listed below the running ones
#: form.build_config's arguments, each read from the form widget keyed ``newrun_<field>``.
FIELDS = ("name", "model", "model_path", "task", "task_path", "text_columns", "label_column", "task_type", "methods")
FIELDS += ("sparsities", "teacher_steps", "student_steps", "batch_size", "max_length", "train_subsample", "seed")
FIELDS += ("analyze",)

st.title("New run")
leave_legacy_pages_mode()
listed = ui_data.folders_from_environ(st.session_state.get(EXTRA_FOLDERS, []))
default = str(launcher.user_runs_folder(os.environ.get(ui_data.ENV_RUNS)))
targets = [default] + [f for f in listed if f != default and not launcher.is_shipped(f)]

with st.form("newrun_form"):
    c = st.columns([2, 3])
    c[0].text_input("Run name", "new-run", key="newrun_name", help=HELP["name"])
    folder = c[1].selectbox(
        "Runs folder", targets, key="newrun_folder", help="Where the run is written (never the shipped demo runs)"
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
    c[3].text_input("Label column (custom)", "label", key="newrun_label_column")
    c[4].selectbox("Custom task type", ["classification", "regression"], key="newrun_task_type")
    st.multiselect("Methods", list(METHODS), default=list(DEFAULT_METHODS), key="newrun_methods", help=HELP["methods"])
    st.text_input("Target sparsities", "0.5, 0.8, 0.9", key="newrun_sparsities", help=HELP["sparsities"])
    c = st.columns(6)
    c[0].number_input("Teacher steps", 0, value=150, step=10, key="newrun_teacher_steps", help="0: epochs")
    c[1].number_input("Student steps", 0, value=60, step=10, key="newrun_student_steps", help="0: epochs")
    c[2].number_input("Batch size", 1, value=32, key="newrun_batch_size")
    c[3].number_input("Max length", 8, value=64, key="newrun_max_length", help=HELP["task.max_length"])
    c[4].number_input("Train subsample", 0, value=0, step=100, key="newrun_train_subsample", help="0: all examples")
    c[5].number_input("Seed", 0, value=42, key="newrun_seed")
    st.checkbox("Compute the knowledge tables at the end", True, key="newrun_analyze")
    submitted = st.form_submit_button("Launch", type="primary", icon=":material/rocket_launch:", key="newrun_submit")


def start(folder: str, cfg: RunConfig, resume: bool = False) -> None:
    try:
        launcher.launch(folder, cfg, resume=resume)
    except (launcher.LaunchError, ValueError) as e:
        st.error(f"Not launched: {e}")
        return
    st.session_state.pop("newrun_resume", None)
    if folder not in listed:  # so that the sidebar's run picker lists it
        st.session_state[EXTRA_FOLDERS] = [*st.session_state.get(EXTRA_FOLDERS, []), folder]
    st.toast(f"Started {cfg.name}", icon=":material/rocket_launch:")


if submitted:
    st.session_state.pop("newrun_resume", None)
    values = {f: st.session_state[f"newrun_{f}"] for f in FIELDS}  # the widgets' keys are newrun_<field>
    try:
        cfg = form.build_config(**{**values, "name": values["name"].strip()})
    except ConfigError as e:
        problems = e.lines()
        st.error("Not launched; fix these first:\n\n" + "\n".join(f"- {p}" for p in problems))
    else:
        if RunStore(folder).has_run(cfg.name):
            st.session_state["newrun_resume"] = {"folder": folder, "name": cfg.name}
        else:
            start(folder, cfg)

offer = st.session_state.get("newrun_resume")
if offer:
    slot = st.container()  # the reason above the button, unless the button resumed the run
    if st.button(f"Resume {offer['name']}", key="newrun_resume_button", icon=":material/play_arrow:"):
        stored = RunStore(offer["folder"]).open_run(offer["name"]).config
        start(offer["folder"], RunConfig.from_dict(stored), resume=True)
    if st.session_state.get("newrun_resume"):
        slot.error(
            f"Not launched: a run named **{offer['name']}** already exists in `{offer['folder']}`. "
            "Choose another name, or resume it with its stored config."
        )

st.subheader("Launched runs")
launched = [(f, n) for f in targets for n in launcher.launches(f)]
alive_first = {(f, n) for f, n in launched if launcher.status(f, n).alive}
if not launched:
    st.caption("Runs launched here are listed with their progress; finished runs appear in the sidebar's run picker.")


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
        unit = f" · now: {s.current_unit}" if s.current_unit else ""
        st.progress(s.fraction, text=f"{s.units_done}/{s.units_total} units{unit}")
        if s.state == "complete":
            st.caption("Finished: pick it in the sidebar's run picker.")
        if s.state == "failed":
            st.error(f"The run failed; last line of its log: {(s.log_tail.splitlines() or ['(empty)'])[-1]}")
        if s.alive:
            st.code(s.log_tail or "(no output yet)", language=None)
        elif s.log_tail:
            with st.expander("Log"):
                st.code(s.log_tail, language=None)


@st.fragment(run_every=2 if alive_first else None)
def progress() -> None:
    statuses = [launcher.status(f, n) for f, n in launched]
    if alive_first - {(s.folder, s.name) for s in statuses if s.alive}:
        st.rerun()  # one finished: rerun the whole app so that the sidebar lists it as it is now
    finished = [s for s in statuses if not s.alive][:SHOWN]
    for s in [s for s in statuses if s.alive] + finished:
        show(s)


progress()
