"""AppTest of the Compare-runs and New-run pages on runs built with the store API (no training)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from streamlit.testing.v1 import AppTest

from kaviz import launcher
from kaviz.core.config import RunConfig
from kaviz.stages.pipeline import plan_units
from kaviz.store import RunStore
from tests.test_app import figures, frame, navigation_only, traces  # noqa: F401 (navigation_only: autouse)

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app.py"
COMPARE = "pages/6_compare_runs.py"
NEW_RUN = "pages/7_new_run.py"
METHODS = ["oneshot-magnitude", "knowledge-aware"]
#: Per run: teacher score, score lost per unit of sparsity per method, config overrides.
RUNS = {
    "a": (0.9, {"oneshot-magnitude": 0.4, "knowledge-aware": 0.1}, {"training": {"max_steps": 100}}),
    "b": (
        0.8,
        {"oneshot-magnitude": 0.2, "knowledge-aware": 0.2},
        {"training": {"max_steps": 200}, "pruning": {"learning_rate": 1e-4}},
    ),
}
MASKED = "pruned_oneshot-magnitude_s0.5_seed42"


def score(run: str, stage: str, method: str | None, s: float) -> float:
    teacher, drop, _ = RUNS[run]
    return {"pretrained": 0.5, "finetuned": teacher}.get(stage, round(teacher - drop.get(method, 0) * s, 6))


def cka(run: str, s: float, layer: int) -> float:
    """The known linear CKA of layer ``layer`` against the teacher."""
    return round(1 - s * layer / 10 - (0.05 if run == "b" else 0.0), 6)


def masked_bert(run: str) -> torch.nn.Module:
    """A tiny BERT whose encoder matrices keep only their second half of rows (run a) or of
    columns (run b): the kept sets overlap in a quarter, Jaccard 1/3."""

    from tests.helpers import tiny_bert

    model = tiny_bert(kaviz_attention=False, max_position_embeddings=512)
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            for lin in (
                layer.attention.self.query,
                layer.attention.self.key,
                layer.attention.self.value,
                layer.attention.output.dense,
                layer.intermediate.dense,
                layer.output.dense,
            ):
                out, inp = lin.weight.shape
                if run == "a":
                    lin.weight[: out // 2] = 0
                else:
                    lin.weight[:, : inp // 2] = 0
    return model


def make_run(root: Path, name: str) -> None:
    _, _, over = RUNS[name]
    cfg = RunConfig.from_dict({"name": name, "sparsities": [0.5, 0.9], "methods": METHODS, **over})
    units = plan_units(cfg)
    run = RunStore(root).create_run(cfg.to_dict(), units=units)
    for u in units:
        stage, method, s = u["stage"], u["method"], u["sparsity"] or 0.0
        run.start_unit(u["unit"])
        if u["unit"] == MASKED:
            run.save_checkpoint(u["unit"], masked_bert(name))
        metrics = [
            {"metric": "score", "value": score(name, stage, method, s)},
            {"metric": "encoder_sparsity", "value": s},
        ]
        speed = 1.0 + 2.0 * s  # hand-made: sparser is faster
        inference = pd.DataFrame(
            [dict(variant="dense", batch_size=b, seq_len=16, device="cpu", median_s=0.01 * b / speed,
                  disk_bytes=1000 * (1 - s) + 100, speedup=speed, size_ratio=1 - s + 0.1, note="") for b in (1, 32)]
        )  # fmt: skip
        run.finish_unit(u["unit"], metrics, tables={"inference": inference})
        rows = [
            {
                "reference": "finetuned",
                "layer": i,
                "ref_layer": i,
                "head": -1,
                "metric": "linear_cka",
                "value": cka(name, s, i),
                "pruned": False,
            }
            for i in range(3)
        ]
        rows += [
            {
                "reference": "finetuned",
                "layer": 1,
                "ref_layer": 1,
                "head": 0,
                "metric": "jsd",
                "value": 0.3,
                "pruned": False,
            },
            {
                "reference": "self",
                "layer": 1,
                "ref_layer": None,
                "head": -1,
                "metric": "probe_accuracy",
                "value": 0.7,
                "pruned": False,
            },
        ]
        if stage == "pruned":
            run.write_unit_table(u["unit"], "knowledge", pd.DataFrame(rows))
    run.set_status("complete")


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    make_run(root, "a")
    make_run(root, "b")
    return root


def open_page(page: str) -> AppTest:
    """The app on ``page``: through app.py's navigation when it lists the page, else the page file
    alone with the session state app.py would set."""
    at = AppTest.from_file(str(APP), default_timeout=60)
    if page in APP.read_text():
        at.run()
        assert not at.exception
        at.switch_page(page)
    else:
        at = AppTest.from_file(str(ROOT / page), default_timeout=60)
        at.session_state["kaviz_run"] = None
        at.session_state["kaviz_extra_folders"] = []
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.fixture
def compare(runs_dir, monkeypatch) -> AppTest:
    monkeypatch.setenv("KAVIZ_RUNS", str(runs_dir))
    return open_page(COMPARE)


# ----- compare runs -------------------------------------------------------------------------------


def test_compare_mask_figures_wait_for_the_toggle(compare):
    """The checkpoint-reading mask figures are off until asked for (they cost most of the page's time)."""
    assert compare.toggle(key="compare_masks").value is False
    assert len(figures(compare)) == 4  # the many-runs overlay, accuracy, knowledge, difference


def test_compare_shows_all_figures(compare, runs_dir):
    assert compare.title[0].value == "Compare runs"
    assert compare.multiselect(key="compare_runs").value == [str(runs_dir / n) for n in ("b", "a")]
    compare.toggle(key="compare_masks").set_value(True).run()
    many, acc, knowledge, diff, overlap, heads = figures(compare)
    one = traces(many)["oneshot-magnitude"]  # every run's points, means over seeds, as on the curves
    got = sorted((str(r), round(float(x), 6), round(float(y), 6)) for (r, _), x, y in zip(one.customdata, one.x, one.y))
    curve = traces(acc)
    want = sorted(
        (f"{r} ({runs_dir.name})", s, round(float(v), 6))
        for r in "ab"
        for s, v in zip((0.5, 0.9), curve[f"oneshot-magnitude · {r}"].y)
    )
    assert [(r, v) for r, _, v in got] == [(r, v) for r, _, v in want]
    lines = traces(acc)
    assert set(lines) == {f"{m} · {r}" for m in METHODS for r in "ab"} | {
        "fine-tuned teacher · a",
        "fine-tuned teacher · b",
    }
    assert list(lines["oneshot-magnitude · a"].y) == pytest.approx([70, 54])  # scores shown ×100
    assert list(lines["knowledge-aware · b"].y) == pytest.approx([70, 62])
    assert lines["oneshot-magnitude · a"].line.dash != lines["oneshot-magnitude · b"].line.dash
    assert lines["oneshot-magnitude · a"].line.color == lines["oneshot-magnitude · b"].line.color
    k = traces(knowledge)
    assert list(k["knowledge-aware · b"].x) == [0, 1, 2]
    assert list(k["knowledge-aware · b"].y) == pytest.approx([cka("b", 0.9, i) for i in range(3)])
    # A is the first picked run (b), B the second (a): b - a
    z = np.asarray(diff.data[0].z, dtype=float)
    assert list(diff.data[0].y) == ["knowledge-aware", "oneshot-magnitude"]
    assert z == pytest.approx(100 * np.array([[-0.15, -0.19], [0.0, 0.08]]))  # score points
    assert np.asarray(overlap.data[0].z, dtype=float) == pytest.approx(np.full((2, 6), 1 / 3))
    b_heads, a_heads = (np.asarray(t.z, dtype=float) for t in heads.data)
    assert a_heads == pytest.approx(np.array([[0, 0, 1, 1]] * 2))
    assert b_heads == pytest.approx(np.full((2, 4), 0.5))


def test_compare_filters_pick_the_runs_and_methods(compare):
    compare.multiselect(key="compare_methods").set_value(["knowledge-aware"]).run()
    assert not compare.exception
    many = figures(compare)[0]
    assert {t.name for t in many.data} <= {"knowledge-aware", "Pareto front"}
    assert len(traces(many)["knowledge-aware"].x) == 4  # 2 runs x 2 sparsities


def test_compare_config_diff(compare):
    table = frame(compare, "key")
    assert list(table["key"]) == ["name", "training.max_steps", "pruning.learning_rate"]
    row = table.set_index("key").loc["training.max_steps"]
    assert (row["a"], row["b"]) == ("100", "200")


def test_compare_controls(compare):
    compare.selectbox(key="compare_a").set_value("a")
    compare.selectbox(key="compare_b").set_value("b")
    compare.radio(key="compare_reference").set_value("pretrained")
    compare.selectbox(key="compare_ksparsity").set_value(0.5)
    compare.run()
    assert not compare.exception
    diff = figures(compare)[2]  # overlay, accuracy; no knowledge against the pre-trained model: skipped
    assert any("No linear_cka rows against the pretrained" in i.value for i in compare.info)
    assert np.asarray(diff.data[0].z, dtype=float) == pytest.approx(100 * np.array([[0.15, 0.19], [0.0, -0.08]]))
    compare.selectbox(key="compare_b").set_value("a").run()
    assert any("two different runs" in i.value for i in compare.info)


def test_compare_needs_two_runs(tmp_path, monkeypatch, runs_dir):
    RunStore(runs_dir).open_run("a").copy_to(tmp_path)
    monkeypatch.setenv("KAVIZ_RUNS", str(tmp_path))
    at = open_page(COMPARE)
    assert "at least two runs" in at.info[0].value
    assert not at.get("plotly_chart")


# ----- new run ------------------------------------------------------------------------------------


@pytest.fixture
def folder(runs_dir, tmp_path) -> Path:
    """A runs folder of its own, with copies of runs a and b (tables only)."""
    for name in RUNS:
        RunStore(runs_dir).open_run(name).copy_to(tmp_path)
    return tmp_path


@pytest.fixture
def new_run(folder, monkeypatch) -> AppTest:
    monkeypatch.setenv("KAVIZ_RUNS", str(folder))
    return open_page(NEW_RUN)


def refuse_popen(*args, **kwargs):
    raise AssertionError("nothing may be launched")


@pytest.mark.parametrize(
    "field, value, reason",
    [
        ("newrun_sparsities", "0.5, 1.5", "sparsities: 1.5 is outside (0, 1)"),
        ("newrun_methods", [], "methods: give at least one method"),
        ("newrun_name", "../x", "is not allowed"),
        ("newrun_name", "a", "a complete run named **a** already exists"),  # complete: no resume offered
        ("newrun_task", "custom", "task.text_columns: a custom task needs one or two text columns"),
    ],
)
def test_new_run_refuses_bad_input(new_run, folder, monkeypatch, field, value, reason):
    monkeypatch.setattr(launcher, "Popen", refuse_popen)
    kind = {"newrun_methods": "multiselect", "newrun_task": "selectbox"}.get(field, "text_input")
    getattr(new_run, kind)(key=field).set_value(value)
    new_run.button(key="newrun_submit").click().run()
    assert not new_run.exception
    assert any(reason in e.value for e in new_run.error), [e.value for e in new_run.error]
    assert not (folder / ".launch").exists()
    assert not [b for b in new_run.button if b.key == "newrun_resume_button"]


class FakePopen:
    """Stands in for the real launch: records the command, creates the run with its first unit
    done (as `kaviz run` would), and starts a sleeping process that carries the config path."""

    def __init__(self):
        self.commands: list[list[str]] = []

    def __call__(self, cmd, **kwargs):
        self.commands.append(cmd)
        yaml_path, root = cmd[4], cmd[6]
        cfg = RunConfig.load(yaml_path)
        store = RunStore(root)
        if not store.has_run(cfg.name):
            run = store.create_run(cfg.to_dict(), units=plan_units(cfg))
            run.start_unit("pretrained")
            run.finish_unit("pretrained", [{"metric": "score", "value": 0.5}])
            run.start_unit("finetuned")
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", yaml_path], **kwargs)


def test_new_run_launches_and_shows_progress(new_run, folder, monkeypatch):
    fake = FakePopen()
    monkeypatch.setattr(launcher, "Popen", fake)
    new_run.text_input(key="newrun_name").set_value("fresh")
    new_run.radio(key="newrun_model").set_value("tiny")
    new_run.multiselect(key="newrun_methods").set_value(["oneshot-magnitude"])
    new_run.text_input(key="newrun_sparsities").set_value("0.5, 0.9")
    new_run.number_input(key="newrun_teacher_steps").set_value(8)
    new_run.button(key="newrun_submit").click().run()
    try:
        assert not new_run.exception and not new_run.error
        (cmd,) = fake.commands
        assert cmd[1:4] == ["-m", "kaviz.cli", "run"] and cmd[5:] == ["--out", str(folder.resolve())]
        cfg = RunConfig.load(cmd[4])
        assert (cfg.name, cfg.model.name_or_path, cfg.sparsities, cfg.training.max_steps) == (
            "fresh",
            "tiny",
            [0.5, 0.9],
            8,
        )
        assert Path(cmd[4]).resolve().is_relative_to(folder.resolve())
        bar = new_run.get("progress")[0]
        assert bar.value == 25 and "1/4 units · now: finetuned" in bar.proto.text
        assert any("Stop" in b.label for b in new_run.button)
        # progress is read from disk: a new session (a reload) sees the same launch
        again = open_page(NEW_RUN)
        assert "1/4 units" in again.get("progress")[0].proto.text
        stop = next(b for b in again.button if b.label == "Stop")
        stop.click().run()
        assert not again.exception
        assert "fresh** · stopped" in again.markdown[0].value
        assert RunStore(folder).open_run("fresh").status == "interrupted"
    finally:
        launcher.stop(folder, "fresh", timeout=5)


def test_new_run_offers_resume(new_run, folder, monkeypatch):
    """An interrupted run of the same name is offered for resuming, with its stored config."""
    fake = FakePopen()
    monkeypatch.setattr(launcher, "Popen", fake)
    RunStore(folder).open_run("b").set_status("interrupted")
    new_run.text_input(key="newrun_name").set_value("b")
    new_run.button(key="newrun_submit").click().run()
    assert not fake.commands
    new_run.button(key="newrun_resume_button").click().run()
    try:
        assert not new_run.exception
        (cmd,) = fake.commands
        assert cmd[-1] == "--resume"
        assert RunConfig.load(cmd[4]) == RunConfig.from_dict(RunStore(folder).open_run("b").config)
        assert not new_run.error
    finally:
        launcher.stop(folder, "b", timeout=5)


def test_new_run_offers_to_extend_a_stored_run(new_run, folder, monkeypatch):
    """Start from a stored run, keep its name, add a sparsity: the page lists the units that would be
    added and launches `kaviz run --extend` with the larger grid; a change outside the grid (here
    the teacher's steps) offers no extension and says which field differs."""
    fake = FakePopen()
    monkeypatch.setattr(launcher, "Popen", fake)
    new_run.selectbox(key="newrun_start").set_value(f"run:{folder / 'a'}").run()
    new_run.text_input(key="newrun_name").set_value("a")
    new_run.text_input(key="newrun_sparsities").set_value("0.5, 0.9, 0.95").run()
    new_run.button(key="newrun_submit").click().run()
    assert not new_run.exception and not fake.commands
    assert "pruned_knowledge-aware_s0.95_seed42" in new_run.info[0].value
    assert not [b for b in new_run.button if b.key == "newrun_resume_button"]  # complete: nothing to resume
    new_run.text_input(key="newrun_sparsities").set_value("0.5, 0.9, 0.97").run()  # edited after the offer:
    assert not [b for b in new_run.button if b.key == "newrun_extend_button"]  # it no longer stands
    new_run.text_input(key="newrun_sparsities").set_value("0.5, 0.9, 0.95").run()
    new_run.button(key="newrun_submit").click().run()
    new_run.button(key="newrun_extend_button").click().run()
    try:
        assert not new_run.exception and not new_run.error
        (cmd,) = fake.commands
        assert cmd[-1] == "--extend" and launched_config(fake).sparsities == [0.5, 0.9, 0.95]
    finally:
        launcher.stop(folder, "a", timeout=5)
    new_run.number_input(key="newrun_teacher_steps").set_value(50).run()
    new_run.button(key="newrun_submit").click().run()
    assert not [b for b in new_run.button if b.key == "newrun_extend_button"]
    assert any("training.max_steps" in e.value for e in new_run.error), [e.value for e in new_run.error]


def launched_config(fake: FakePopen) -> RunConfig:
    (cmd,) = fake.commands
    return RunConfig.load(cmd[4])


@pytest.mark.parametrize("preset", ["tiny", "minilm"])
def test_a_preset_launches_the_cli_demo_config(new_run, folder, monkeypatch, preset):
    """Issue 14: the form's presets are the configs `kaviz demo [--tiny]` runs, every value shown;
    the tiny one with the learning rates that make a random model learn."""
    from kaviz.core.presets import demo_config

    fake = FakePopen()
    monkeypatch.setattr(launcher, "Popen", fake)
    new_run.selectbox(key="newrun_start").set_value(f"preset:{preset}").run()
    want = demo_config(tiny=preset == "tiny")
    assert new_run.text_input(key="newrun_name").value == want.name
    assert new_run.number_input(key="newrun_teacher_lr").value == want.training.learning_rate
    assert new_run.number_input(key="newrun_student_lr").value == want.pruning.learning_rate
    new_run.button(key="newrun_submit").click().run()
    try:
        assert not new_run.exception and not new_run.error
        assert launched_config(fake) == want
    finally:
        launcher.stop(folder, want.name, timeout=5)


def test_run_again_with_changes_starts_from_a_stored_run(new_run, folder, monkeypatch):
    fake = FakePopen()
    monkeypatch.setattr(launcher, "Popen", fake)
    option = next(o for o in new_run.selectbox(key="newrun_start").options if "Run again" in o and ": a (" in o)
    new_run.selectbox(key="newrun_start").select(option).run()
    assert new_run.text_input(key="newrun_name").value == "a-2"  # "a" exists: a free name
    new_run.number_input(key="newrun_seed").set_value(7)
    new_run.button(key="newrun_submit").click().run()
    try:
        assert not new_run.exception and not new_run.error
        stored = RunConfig.from_dict(RunStore(folder).open_run("a").config).to_dict()
        assert launched_config(fake).to_dict() == {**stored, "name": "a-2", "seed": 7}
    finally:
        launcher.stop(folder, "a-2", timeout=5)


def test_the_form_keeps_its_values_across_pages(new_run, folder):
    new_run.text_input(key="newrun_name").set_value("kept-name").run()
    new_run.number_input(key="newrun_teacher_lr").set_value(3e-4).run()
    new_run.switch_page("pages/1_overview.py").run()
    new_run.switch_page(NEW_RUN).run()
    assert not new_run.exception
    assert new_run.text_input(key="newrun_name").value == "kept-name"
    assert new_run.number_input(key="newrun_teacher_lr").value == pytest.approx(3e-4)


@pytest.mark.parametrize(
    "field, value, reason",
    [
        ("newrun_task_path", "/nonexistent/glue/SST-2", "does not exist"),
        ("newrun_model_path", "/nonexistent/model", "does not exist"),
    ],
)
def test_nonexistent_paths_are_refused_before_any_run_folder_exists(new_run, folder, monkeypatch, field, value, reason):
    monkeypatch.setattr(launcher, "Popen", refuse_popen)
    new_run.text_input(key="newrun_name").set_value("nowhere")
    if field == "newrun_task_path":
        new_run.selectbox(key="newrun_task").set_value("sst2")
    else:
        new_run.radio(key="newrun_model").set_value("path")
    new_run.text_input(key=field).set_value(value)
    new_run.button(key="newrun_submit").click().run()
    assert not new_run.exception
    assert any("Not launched" in e.value and reason in e.value for e in new_run.error), [e.value for e in new_run.error]
    assert not (folder / "nowhere").exists() and not (folder / ".launch").exists()


def test_a_failed_launch_can_be_dismissed(new_run, folder, monkeypatch):
    class Dies(FakePopen):
        def __call__(self, cmd, **kwargs):
            self.commands.append(cmd)
            return subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)", cmd[4]], **kwargs)

    monkeypatch.setattr(launcher, "Popen", Dies())
    new_run.text_input(key="newrun_name").set_value("doomed")
    new_run.button(key="newrun_submit").click().run()
    wait_for_exit = time.monotonic() + 20
    while launcher.status(folder, "doomed").alive and time.monotonic() < wait_for_exit:
        time.sleep(0.1)
    new_run.run()
    assert "doomed** · failed" in new_run.markdown[0].value
    next(b for b in new_run.button if b.label == "Dismiss").click().run()
    assert not new_run.exception
    assert launcher.launches(folder) == []
    assert not any("doomed" in m.value for m in new_run.markdown)


def test_compare_says_which_runs_a_section_drops_and_why(folder, monkeypatch):
    """Issue 14: a run without knowledge tables drops out of Knowledge per layer with the reason
    shown, instead of silently."""
    for table in (folder / "b").glob("units/*/knowledge.parquet"):
        table.unlink()
    monkeypatch.setenv("KAVIZ_RUNS", str(folder))
    at = open_page(COMPARE)
    assert not at.exception
    assert sorted(at.multiselect(key="compare_runs").value) == sorted(str(folder / n) for n in ("a", "b"))
    captions = " ".join(c.value for c in at.caption)
    assert "Not shown: b: no knowledge tables yet" in captions, captions
    assert not at.warning  # one task: no cross-task warning
