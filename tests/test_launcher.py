"""kaviz.launcher: background `kaviz run` processes, their status from disk, stop, and refusals."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from kaviz import launch_progress, launcher
from kaviz.core import form
from kaviz.core.config import ConfigError, RunConfig
from kaviz.store import RunStore
from kaviz.views.ui_data import DEMO_RUNS
from tests.test_pipeline import tiny_config


def small_config(name: str, **over) -> RunConfig:
    """Three units (pre-trained, teacher, one one-shot student), no analysis: seconds on one thread."""
    return tiny_config(name=name, methods=["oneshot-magnitude"], sparsities=[0.5], analysis={"enabled": False}, **over)


def wait_for(check, timeout: float = 120.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s")


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return (
        Path(f"/proc/{pid}/stat").is_file()
        and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    )


@pytest.fixture
def cleanup():
    """Stop whatever a test launched, even when it fails."""
    started: list[tuple[Path, str]] = []
    yield started
    for folder, name in started:
        launcher.stop(folder, name, timeout=5)


def test_launch_completes_in_the_background(tmp_path, cleanup):
    folder = tmp_path / "runs"
    cleanup.append((folder, "bg"))
    first = launcher.launch(folder, small_config("bg"))
    assert first.alive and first.state in ("starting", "running") and first.pid
    # the config file is written inside the folder and is the RunConfig the CLI loads
    yaml_path = folder / ".launch" / "bg.yaml"
    assert yaml_path.resolve().parent.parent == folder.resolve()
    assert RunConfig.load(yaml_path) == small_config("bg")
    assert launcher.launches(folder) == ["bg"]
    with pytest.raises(launcher.LaunchError, match="already running"):
        launcher.launch(folder, small_config("bg"))
    running = wait_for(lambda: (s := launcher.status(folder, "bg")).run_status and s)
    assert running.units_total == 3
    assert running.state == "running" or not running.alive
    final = wait_for(lambda: (s := launcher.status(folder, "bg")) and not s.alive and s)
    assert final.state == "complete" and final.returncode == 0
    assert (final.units_done, final.units_total, final.fraction) == (3, 3, 1.0)
    assert "complete" in final.log_tail and "\r" not in final.log_tail and "\x1b" not in final.log_tail
    run = RunStore(folder).open_run("bg")
    assert run.status == "complete" and (run.units()["status"] == "done").all()
    assert list(RunStore(folder).list_runs()["run_id"]) == ["bg"]  # .launch is not a run
    with pytest.raises(launcher.LaunchError, match="already exists"):
        launcher.launch(folder, small_config("bg"))


def test_stop_ends_the_process_group(tmp_path, cleanup):
    folder = tmp_path / "runs"
    cleanup.append((folder, "long"))
    cfg = small_config("long", training={"max_steps": 100_000, "batch_size": 16, "num_threads": 1})
    started = launcher.launch(folder, cfg)
    wait_for(lambda: launcher.status(folder, "long").current_unit == "finetuned")
    assert launcher.status(folder, "long").state == "running"
    stopped = launcher.stop(folder, "long")
    assert gone(started.pid)
    assert stopped.state == "stopped" and not stopped.alive
    run = RunStore(folder).open_run("long")
    assert run.status == "interrupted"
    units = run.units().set_index("unit")
    assert units.loc["finetuned", "status"] == "failed" and units.loc["finetuned", "error"] == "stopped from the app"
    assert launcher.stop(folder, "long").state == "stopped"  # stopping twice is harmless


@pytest.mark.parametrize("name", ["../x", "/abs", "..", "a/b", ".hidden", ""])
def test_hostile_names_are_refused(tmp_path, name):
    folder = tmp_path / "runs"
    with pytest.raises(ValueError):
        launcher.launch(folder, RunConfig(name=name))  # a config built without from_dict's checks
    for fn in (launcher.status, launcher.stop):
        with pytest.raises(launcher.LaunchError):
            fn(folder, name)
    with pytest.raises(ConfigError, match="name"):
        form.build_config(name=name, methods=["oneshot-magnitude"])
    assert not folder.exists() and not (tmp_path / "x").exists()


def test_launch_dir_linked_outside_is_refused(tmp_path):
    folder, outside = tmp_path / "runs", tmp_path / "elsewhere"
    folder.mkdir()
    outside.mkdir()
    (folder / ".launch").symlink_to(outside)
    with pytest.raises(launcher.LaunchError, match="outside the runs folder"):
        launcher.launch(folder, small_config("x"))
    assert not list(outside.iterdir())


def test_shipped_demo_folder_is_refused(tmp_path):
    with pytest.raises(launcher.LaunchError, match="shipped"):
        launcher.launch(DEMO_RUNS, small_config("x"))
    assert not (DEMO_RUNS / ".launch").exists()


def test_status_of_a_name_never_launched(tmp_path):
    with pytest.raises(launcher.LaunchError, match="no run 'nope' was launched"):
        launcher.status(tmp_path, "nope")
    assert launcher.launches(tmp_path) == []


def test_user_runs_folder(tmp_path):
    assert launcher.user_runs_folder(None, cwd=tmp_path) == (tmp_path / "runs").resolve()
    assert launcher.user_runs_folder(str(DEMO_RUNS), cwd=tmp_path) == (tmp_path / "runs").resolve()
    env = f"{DEMO_RUNS}, mine ,other"
    assert launcher.user_runs_folder(env, cwd=tmp_path) == (tmp_path / "mine").resolve()


def test_build_config_is_the_cli_config():
    cfg = form.build_config(
        name="n1",
        model="tiny",
        task="custom",
        task_path="data.csv",
        text_columns="premise, hypothesis",
        label_column="y",
        methods=["knowledge-aware"],
        sparsities="0.5, 90%",
        teacher_steps=10,
        student_steps=5,
        batch_size=8,
        max_length=64,
        train_subsample=100,
        seed=3,
        analyze=False,
    )
    assert cfg == RunConfig.from_dict(
        {
            "name": "n1",
            "model": {"name_or_path": "tiny"},
            "task": {
                "name": "custom",
                "path": "data.csv",
                "text_columns": ["premise", "hypothesis"],
                "label_column": "y",
                "max_length": 64,
                "max_train_examples": 100,
            },
            "training": {"max_steps": 10, "batch_size": 8},
            "pruning": {"max_steps": 5},
            "analysis": {"enabled": False},
            "sparsities": [0.5, 0.9],
            "methods": ["knowledge-aware"],
            "seed": 3,
        }
    )


@pytest.mark.parametrize(
    "kw, reason",
    [
        ({"sparsities": "0.5, 1.5"}, "sparsities: 1.5 is outside (0, 1)"),
        ({"sparsities": "0.5, lots"}, "sparsities: 'lots' is not a number"),
        ({"methods": []}, "methods: give at least one method"),
        ({"task": "custom", "task_path": "d.csv"}, "task.text_columns: a custom task needs one or two text columns"),
        ({"model": "path"}, "model: give a hub id or a local folder"),
    ],
)
def test_build_config_problems(kw, reason):
    with pytest.raises(ConfigError) as e:
        form.build_config(**{"name": "ok", "methods": ["oneshot-magnitude"], **kw})
    assert reason in str(e.value)


def test_log_tail_collapses_progress_bars(tmp_path):
    log = tmp_path / "x.log"
    log.write_bytes(
        b"start a\nbar 10%\rbar 50%\rbar 100%\n\x1b[Adone a\n\n" + b"\n".join(b"l%d" % i for i in range(30))
    )
    tail = launch_progress.tail(log, lines=3)
    assert tail == "l27\nl28\nl29"
    assert launch_progress.tail(log, lines=33).splitlines()[:3] == ["start a", "bar 100%", "done a"]


def test_background_runs_share_the_cores(tmp_path, monkeypatch):
    """A run launched while others are still going gets its share of the cores as its thread count
    (unless the config sets training.num_threads): oversubscribed torch processes crawl."""
    envs = []

    class FakeProc:
        pid = 424242

        def __init__(self, cmd, env, **kw):
            envs.append(env)

        def poll(self):
            return None

    monkeypatch.setattr(launcher, "Popen", FakeProc)
    monkeypatch.setattr(launcher.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(launcher.os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    alive: set[str] = set()
    monkeypatch.setattr(launcher, "_alive", lambda pid, marker: (Path(marker).stem in alive, None))
    folder = tmp_path / "runs"
    unset = {"max_steps": 8}  # training.num_threads left to kaviz
    launcher.launch(folder, small_config("one", training=unset))
    alive.add("one")
    launcher.launch(folder, small_config("two", training=unset))
    alive.add("two")
    launcher.launch(folder, small_config("three", training={"num_threads": 3}))
    assert [e["OMP_NUM_THREADS"] for e in envs] == ["4", "2", "3"]
    assert set(launcher.live_launches(folder)) == {"one", "two"}


def test_tidy_log_keeps_each_bar_once_where_it_last_stood():
    lines = [
        "loading",
        "fine-tune teacher:  10%|█         | 10/100 [00:01<00:09]",
        "fine-tune teacher:  50%|█████     | 50/100 [00:05<00:05]",
        "units:  33%|███▎      | 1/3 [00:06<00:12]",
        "fine-tune teacher: 100%|██████████| 100/100 [00:10<00:00]",
        "WARNING: something",
        "oneshot-magnitude 0.5:  40%|████      | 4/10 [00:01<00:01]",
    ]
    assert launch_progress.tidy_log(lines) == [lines[0], lines[3], lines[4], lines[5], lines[6]]


def test_nonexistent_paths_are_refused_before_any_folder_exists(tmp_path, monkeypatch):
    """The launcher runs the CLI's own input checks (kaviz.stages.pipeline.check_inputs) first."""
    from kaviz.data.base import TaskError
    from kaviz.train.models import ModelNotFoundError

    monkeypatch.setattr(launcher, "Popen", lambda *a, **k: pytest.fail("must not start a process"))
    folder = tmp_path / "runs"
    cases = [
        (small_config("m", model={"name_or_path": str(tmp_path / "no-model")}), ModelNotFoundError, "does not exist"),
        (small_config("d", task={"name": "sst2", "path": str(tmp_path / "no-glue")}), TaskError, "does not exist"),
        (
            small_config("c", task={"name": "custom", "path": str(tmp_path / "no.csv"), "text_columns": ["text"]}),
            TaskError,
            "no.csv",
        ),
        (
            tiny_config(name="s", analysis={"enabled": True, "sts_path": str(tmp_path / "no-sts")}),
            TaskError,
            "sts_path",
        ),
    ]
    for cfg, error, words in cases:
        with pytest.raises(error, match=words):
            launcher.launch(folder, cfg)
        assert isinstance(error("x"), ValueError)  # the New-run page shows every ValueError as "Not launched"
    assert not folder.exists()


def test_dismiss_forgets_a_finished_launch_and_keeps_its_run(tmp_path, monkeypatch):
    class FakeProc:
        pid = 424243

        def __init__(self, cmd, **kw):
            pass

        def poll(self):
            return None

    monkeypatch.setattr(launcher, "Popen", FakeProc)
    alive = {"x"}
    monkeypatch.setattr(launcher, "_alive", lambda pid, marker: (Path(marker).stem in alive, None))
    folder = tmp_path / "runs"
    launcher.launch(folder, small_config("x"))
    with pytest.raises(launcher.LaunchError, match="still running"):
        launcher.dismiss(folder, "x")
    alive.clear()
    (folder / "x").mkdir()  # what the run would have left
    launcher.dismiss(folder, "x")
    assert launcher.launches(folder) == [] and (folder / "x").is_dir()
    with pytest.raises(launcher.LaunchError, match="no run"):
        launcher.dismiss(folder, "x")


def test_status_counts_both_phases_and_reads_warnings(tmp_path, monkeypatch):
    """Training units, then analysed units (the analyzer's done mark), an ETA from the pace so far,
    and the run log's WARNING lines."""
    from kaviz.analysis.analyzer import DONE_MARK

    assert launcher.ANALYSED_MARK == DONE_MARK
    monkeypatch.setattr(launcher, "Popen", lambda cmd, **kw: type("P", (), {"pid": 424244, "poll": lambda s: None})())
    monkeypatch.setattr(launcher, "_alive", lambda pid, marker: (True, None))
    folder = tmp_path / "runs"
    cfg = tiny_config(name="p", methods=["oneshot-magnitude"], sparsities=[0.5, 0.9])
    launcher.launch(folder, cfg)
    from kaviz.stages.pipeline import plan_units

    run = RunStore(folder).create_run(cfg.to_dict(), units=plan_units(cfg))
    for u in ("pretrained", "finetuned"):
        run.start_unit(u)
        run.finish_unit(u, [{"metric": "score", "value": 0.5}])
    run.start_unit("pruned_oneshot-magnitude_s0.5_seed42")
    run.set_status("running")
    run.log("WARNING: the fine-tuned teacher scores 0.5000, no better than always answering class 1")
    s = launcher.status(folder, "p")
    assert (s.state, s.phase, s.units_done, s.units_total) == ("running", "training", 2, 4)
    assert s.eta_seconds is not None and s.eta_seconds >= 0
    assert s.warnings == ("the fine-tuned teacher scores 0.5000, no better than always answering class 1",)
    for u in ("pruned_oneshot-magnitude_s0.5_seed42", "pruned_oneshot-magnitude_s0.9_seed42"):
        if u.endswith("0.9_seed42"):
            run.start_unit(u)
        run.finish_unit(u, [{"metric": "score", "value": 0.5}])
    run.set_status("complete")
    run.write_unit_table("pretrained", DONE_MARK, __import__("pandas").DataFrame({"x": [1]}))
    s = launcher.status(folder, "p")
    assert (s.state, s.phase, s.analysis_done, s.analysis_total) == ("analyzing", "analysis", 1, 4)  # of all units
    assert s.analysis_fraction == 0.25 and s.eta_seconds is not None


def test_a_busy_machine_gets_fewer_threads(tmp_path, monkeypatch):
    """A training started outside the app (load 1 of 2 cores) leaves a launch one thread, not two."""
    monkeypatch.setattr(launcher.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(launcher.os, "getloadavg", lambda: (1.1, 1.0, 1.0))
    assert launcher.share_of_cores(tmp_path) == 1
    monkeypatch.setattr(launcher.os, "getloadavg", lambda: (0.2, 0.2, 0.2))
    assert launcher.share_of_cores(tmp_path) == 2
    monkeypatch.setattr(launcher.os, "getloadavg", lambda: (7.0, 7.0, 7.0))
    assert launcher.share_of_cores(tmp_path) == 1


def test_analyze_now_starts_kaviz_analyze_and_is_followed_like_a_run(tmp_path, monkeypatch):
    commands = []

    class FakeProc:
        pid = 424245

        def __init__(self, cmd, **kw):
            commands.append(cmd)

        def poll(self):
            return None

    monkeypatch.setattr(launcher, "Popen", FakeProc)
    alive = {"on"}
    monkeypatch.setattr(launcher, "_alive", lambda pid, marker: ("on" in alive and marker.endswith("/r"), None))
    folder = tmp_path / "runs"
    with pytest.raises(launcher.LaunchError, match="no run 'r'"):
        launcher.analyze(folder, "r")
    cfg = small_config("r")
    from kaviz.stages.pipeline import plan_units

    run = RunStore(folder).create_run(cfg.to_dict(), units=plan_units(cfg))
    run.set_status("complete")
    s = launcher.analyze(folder, "r")
    assert commands[-1][1:4] == ["-m", "kaviz.cli", "analyze"] and commands[-1][4] == str(run.path)
    assert s.alive and s.state == "analyzing" and launcher.launches(folder) == ["r"]
    with pytest.raises(launcher.LaunchError, match="still running"):
        launcher.analyze(folder, "r")
    alive.clear()
    assert launcher.status(folder, "r").state == "complete"
    with pytest.raises(launcher.LaunchError, match="shipped"):
        launcher.analyze(launcher.DEMO_RUNS, "demo")


def test_the_app_never_touches_a_run_another_process_is_running(tmp_path, monkeypatch):
    """A run a terminal's `kaviz run` owns (a live process of this machine): launching or resuming it
    from the app is refused with that pid, and stopping a finished launch of the same name leaves
    its running units and status alone."""
    import subprocess
    import sys

    from kaviz.stages.pipeline import plan_units
    from kaviz.store import owner

    folder = tmp_path / "runs"
    cfg = small_config("busy")
    run = RunStore(folder).create_run(cfg.to_dict(), units=plan_units(cfg))
    run.start_unit("pretrained")
    terminal = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        tag = owner.owner_tag(terminal.pid)
        run._update(lambda m: (m.__setitem__("owner", tag), m["units"]["pretrained"].__setitem__("owner", tag)))
        with pytest.raises(launcher.LaunchError, match=f"being run right now by process {terminal.pid}"):
            launcher.launch(folder, cfg, resume=True)
        assert launcher.launches(folder) == []
        # an earlier app launch of that name, long finished: stopping it must not mark the terminal's units
        paths = launcher._paths(folder.resolve(), "busy")
        paths["json"].parent.mkdir(parents=True, exist_ok=True)
        (paths["json"]).write_text('{"pid": 999999999, "cmd": [], "started": "x", "name": "busy"}')
        launcher.stop(folder, "busy", timeout=1)
        again = RunStore(folder).open_run("busy")
        assert again.status == "running" and again.unit_status("pretrained") == "running"
    finally:
        terminal.kill()
        terminal.wait()
    launcher.stop(folder, "busy", timeout=1)  # its owner gone: now marked as a stop would
    assert RunStore(folder).open_run("busy").status == "interrupted"
