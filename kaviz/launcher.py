"""Runs started from the app: ``kaviz run`` as a detached background process, and its progress.

Each launch keeps three files in a hidden folder of the runs folder it writes to (the store's
listings skip names that start with a dot)::

    <folder>/.launch/<name>.yaml   the RunConfig the process runs (the same object the CLI takes)
    <folder>/.launch/<name>.log    the process's stdout and stderr
    <folder>/.launch/<name>.json   pid, command, start time (and when it was stopped)

Progress is read from disk each time (the pid's liveness, the run's manifest through
:class:`~kaviz.store.RunStore`, the tail of the log), so every page, browser tab or restarted app
sees the same state.  The launch files' paths and the pid checks live in
:mod:`kaviz.launch_records`.  The process runs in its own session: closing the app does not stop
it, and :func:`stop` signals its whole process group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kaviz import launch_progress as progress
from kaviz.core.config import RunConfig
from kaviz.launch_records import (  # noqa: F401 - re-exported: pages and tests reach them here
    _CHILDREN,
    DEMO_RUNS,
    LAUNCH_DIR,
    LaunchError,
    _alive,
    _marker,
    _paths,
    _read_info,
    _root,
    is_shipped,
    launches,
    user_runs_folder,
)
from kaviz.store import RunStore, atomic
from kaviz.store.manifest import StoreError, now
from kaviz.store.owner import owner_alive, parse

ANALYSED_MARK = "knowledge"  # the table kaviz.analysis.analyzer writes last for a unit (its DONE_MARK)
#: Starts the process; tests replace it (same signature as ``subprocess.Popen``).
Popen = subprocess.Popen


@dataclass(frozen=True)
class LaunchStatus:
    """Where a launched run stands.

    ``state``: ``starting`` (process up, no run yet), ``running``, ``analyzing`` (all units done,
    knowledge tables being computed), then once the process is gone ``complete``, ``failed``,
    ``interrupted`` (it died while running) or ``stopped`` (by :func:`stop`).

    Two phases, each with its own count: training units (``units_done`` of ``units_total``), then
    analysed units (``analysis_done`` of ``analysis_total``, 0 when the run is not analysed);
    ``eta_seconds`` estimates what is left of the current phase from the pace so far (None before
    the first unit of the phase ends).  ``warnings``: the run log's WARNING lines (e.g. a teacher
    no better than the constant answer).
    """

    name: str
    folder: str
    state: str
    alive: bool
    pid: int | None
    run_status: str | None
    units_done: int
    units_total: int
    current_unit: str | None
    log_tail: str
    started: str | None
    resume: bool
    returncode: int | None
    analysis_done: int = 0
    analysis_total: int = 0
    eta_seconds: float | None = None
    warnings: tuple[str, ...] = ()

    @property
    def fraction(self) -> float:
        return self.units_done / self.units_total if self.units_total else 0.0

    @property
    def analysis_fraction(self) -> float:
        return self.analysis_done / self.analysis_total if self.analysis_total else 0.0

    @property
    def phase(self) -> str:
        """``training`` until every unit is done, then ``analysis`` (while the process analyses)."""
        return "analysis" if self.state == "analyzing" else "training"


def live_launches(folder: str | Path) -> list[str]:
    """Names launched in ``folder`` whose process is still running."""
    root = _root(folder)
    alive = []
    for name in launches(root):
        paths = _paths(root, name)
        info = _read_info(paths["json"])
        if info is not None and _alive(info["pid"], _marker(info, paths))[0]:
            alive.append(name)
    return alive


def check_before_launch(cfg: RunConfig) -> None:
    """The checks ``kaviz run`` makes before writing anything (:func:`kaviz.stages.pipeline.check_inputs`:
    model and data paths, STS file, structured targets, the task's data), so that a launch that would
    fail in its first seconds is refused here, before any run folder exists.  A GLUE task read from
    the hub is not downloaded here (the run does it)."""
    from kaviz.stages.pipeline import check_inputs

    check_inputs(cfg, load_data=cfg.task.path is not None or cfg.task.name in ("demo", "custom"))


def share_of_cores(folder: str | Path) -> int:
    """CPU threads for a new background run: the cores split evenly with the runs still going, and
    no more than the cores the machine's load leaves idle (two torch processes with all cores each
    ran 5-15x slower than one at a time on 2 cores; so did a launch with 2 threads beside a training
    started outside the app, which the launch files do not know about)."""
    cores = os.cpu_count() or 1
    share = cores // (len(live_launches(folder)) + 1)
    try:
        idle = int(cores - os.getloadavg()[0] + 0.5)
    except OSError:  # pragma: no cover - no load average on this platform
        idle = cores
    return max(1, min(share, idle))


def launch(folder: str | Path, config: RunConfig, *, resume: bool = False, extend: bool = False) -> LaunchStatus:
    """Start ``kaviz run <folder>/.launch/<name>.yaml --out <folder>`` in the background.

    Refuses (LaunchError) the shipped demo folder, an unsafe name, a run that already exists
    unless ``resume`` or ``extend`` (and a missing one with them), and a name whose launch is still
    running; and (ConfigError, TaskError, ModelNotFoundError) what :func:`check_before_launch` finds.
    ``extend``: ``kaviz run --extend``, the stored run with the larger grid of ``config``.
    """
    resume = resume or extend
    cfg = config.validate()
    root = _root(folder)
    paths = _paths(root, cfg.name)
    check_before_launch(cfg)
    info = _read_info(paths["json"])
    if info is not None and _alive(info["pid"], _marker(info, paths))[0]:
        raise LaunchError(f"run {cfg.name!r} is already running in the background (pid {info['pid']})")
    exists = RunStore(root).has_run(cfg.name)
    owner = RunStore(root).open_run(cfg.name).manifest.get("owner") if exists else None
    if owner_alive(owner):
        raise LaunchError(f"run {cfg.name!r} is being run right now by process {parse(owner)[1]} (from a terminal?)")
    if exists and not resume:
        raise LaunchError(f"run {cfg.name!r} already exists in {root}; resume it or choose another name")
    if resume and not exists:
        raise LaunchError(f"there is no run {cfg.name!r} in {root} to resume")
    paths["yaml"].parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(paths["yaml"], cfg.to_yaml())
    cmd = [sys.executable, "-m", "kaviz.cli", "run", str(paths["yaml"]), "--out", str(root)]
    if resume:
        cmd.append("--extend" if extend else "--resume")
    threads = share_of_cores(root) if cfg.training.num_threads is None else cfg.training.num_threads
    _spawn(paths, cmd, threads, {"name": cfg.name, "resume": resume})
    return status(root, cfg.name)


def _spawn(paths: dict[str, Path], cmd: list[str], threads: int, record: dict[str, Any]) -> None:
    """Start ``cmd`` in its own session with ``threads`` CPU threads, output to the launch's log,
    and write the launch record (pid, command, start time and ``record``)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    paths["yaml"].parent.mkdir(parents=True, exist_ok=True)
    with open(paths["log"], "wb") as log:
        proc = Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    _CHILDREN[proc.pid] = proc
    atomic.write_json(paths["json"], {"pid": proc.pid, "command": cmd, "started": now(), "threads": threads, **record})


def analyze(folder: str | Path, name: str) -> LaunchStatus:
    """Start ``kaviz analyze <folder>/<name>`` in the background (the app's "Analyze now"): the
    launch is listed and followed like a run's, its state ``analyzing`` until the tables are written.
    Refuses (LaunchError) the shipped runs, a run that does not exist and one still running."""
    root = _root(folder)
    paths = _paths(root, name)
    info = _read_info(paths["json"])
    if info is not None and _alive(info["pid"], _marker(info, paths))[0]:
        raise LaunchError(f"run {name!r} is still running in the background (pid {info['pid']})")
    store = RunStore(root)
    if not store.has_run(name):
        raise LaunchError(f"there is no run {name!r} in {root} to analyse")
    target = str(store.open_run(name).path)
    cmd = [sys.executable, "-m", "kaviz.cli", "analyze", target]
    _spawn(paths, cmd, share_of_cores(root), {"name": name, "resume": False, "marker": target, "analyze": True})
    return status(root, name)


def status(folder: str | Path, name: str) -> LaunchStatus:
    """The state of launch ``name`` in ``folder``, read from disk; LaunchError if never launched."""
    root = Path(folder).expanduser().resolve()
    paths = _paths(root, name)
    info = _read_info(paths["json"])
    if info is None:
        raise LaunchError(f"no run {name!r} was launched in {root}")
    alive, rc = _alive(info["pid"], _marker(info, paths))
    run_status, done, total, current = None, 0, 0, None
    a_done = a_total = 0
    eta = None
    warnings: tuple[str, ...] = ()
    try:
        run = RunStore(root).open_run(name)
        run_status = run.status
        units = run.units()
        done, total = int((units["status"] == "done").sum()), len(units)
        running = units.loc[units["status"] == "running", "unit"]
        current = str(running.iloc[0]) if len(running) else None
        finished = units[units["status"] == "done"]
        if run.config.get("analysis", {}).get("enabled", True) and not info.get("no_analyze"):
            a_done = sum(run.has_unit_table(u, ANALYSED_MARK) for u in finished["unit"])
            a_total = total  # every planned unit is analysed once trained
        warnings = progress.log_warnings(run.log_path)
        if run_status == "complete":
            eta = progress.eta_analysis(finished, a_done, a_total)
        else:
            eta = progress.eta_training(units)
    except StoreError:  # not created yet, or the process failed before creating it
        pass
    if alive:
        state = "starting" if run_status is None else "analyzing" if run_status == "complete" else "running"
    elif info.get("stopped"):
        state = "stopped"
    elif run_status is None:
        state = "failed"
    elif run_status == "running":
        state = "interrupted"
    else:
        state = run_status
    return LaunchStatus(
        name=name,
        folder=str(root),
        state=state,
        alive=alive,
        pid=info["pid"],
        run_status=run_status,
        units_done=done,
        units_total=total,
        current_unit=current if alive else None,
        log_tail=progress.tail(paths["log"]),
        started=info.get("started"),
        resume=bool(info.get("resume")),
        returncode=rc,
        analysis_done=a_done,
        analysis_total=a_total,
        eta_seconds=eta if alive else None,
        warnings=warnings,
    )


def dismiss(folder: str | Path, name: str) -> None:
    """Forget a finished launch: its launch files go, the run folder (if any) stays.  LaunchError
    while it still runs."""
    root = Path(folder).expanduser().resolve()
    paths = _paths(root, name)
    info = _read_info(paths["json"])
    if info is None:
        raise LaunchError(f"no run {name!r} was launched in {root}")
    if _alive(info["pid"], _marker(info, paths))[0]:
        raise LaunchError(f"run {name!r} is still running; stop it first")
    for p in paths.values():
        p.unlink(missing_ok=True)


def stop(folder: str | Path, name: str, *, timeout: float = 10.0) -> LaunchStatus:
    """SIGTERM the launch's process group (SIGKILL after ``timeout`` s), then mark what it left:
    a run still ``running`` becomes ``interrupted`` and its running units ``failed``, so that a
    resume redoes them.  A launch that already finished is left as it is."""
    root = Path(folder).expanduser().resolve()
    paths = _paths(root, name)
    info = _read_info(paths["json"])
    if info is None:
        raise LaunchError(f"no run {name!r} was launched in {root}")
    pid, marker = info["pid"], _marker(info, paths)
    was_alive = _alive(pid, marker)[0]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not _alive(pid, marker)[0]:
            break
        try:
            if os.getpgid(pid) == pid:  # its own session and group (start_new_session)
                os.killpg(pid, sig)
            else:  # pragma: no cover - started some other way
                os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + timeout
        while _alive(pid, marker)[0] and time.monotonic() < deadline:
            time.sleep(0.05)
    try:
        run = RunStore(root).open_run(name)
    except StoreError:
        run = None
    if run is not None and run.status == "running" and not owner_alive(run.manifest.get("owner")):
        m = run.manifest  # units another live process trains are not this launch's to mark
        for unit, u in m["units"].items():
            if u["status"] == "running" and not owner_alive(u.get("owner")):
                run.fail_unit(unit, "stopped from the app")
        run.set_status("interrupted")
        run.log("stopped from the app; continue with resume")
    if was_alive:
        atomic.write_json(paths["json"], {**info, "stopped": now()})
    return status(root, name)
