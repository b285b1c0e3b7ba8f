"""Launch records: where a background launch keeps its files, and whether its process still lives.

:mod:`kaviz.launcher` starts, follows and stops launches; this module holds what it reads to do
so (the folder rules, the ``.launch/<name>.{yaml,log,json}`` paths, each checked to stay inside
the runs folder, and the pid checks that do not mistake a reused pid for the launch's process).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from kaviz.core.errors import KavizError
from kaviz.core.names import check_name
from kaviz.views.ui_data import DEMO_RUNS, USER_RUNS, runs_folders

LAUNCH_DIR = ".launch"
#: Processes started by this Python process: reaped (no zombies), exit codes known.
_CHILDREN: dict[int, subprocess.Popen] = {}


class LaunchError(KavizError, ValueError):
    """A launch that cannot start or a name that was never launched; the message says why."""


# ----- folders and paths --------------------------------------------------------------------------


def is_shipped(folder: str | Path) -> bool:
    """Whether ``folder`` is (or lies inside) the demo runs shipped with kaviz."""
    real, shipped = Path(folder).expanduser().resolve(), DEMO_RUNS.resolve()
    return real == shipped or shipped in real.parents


def user_runs_folder(env: str | None = None, cwd: str | Path | None = None) -> Path:
    """Where new runs go: the first ``KAVIZ_RUNS`` folder (``env``) that is not the shipped demo
    runs, else ``runs/`` in ``cwd``."""
    base = Path(cwd) if cwd is not None else Path.cwd()
    if env is not None and env.strip():
        for f in runs_folders(env, cwd=base):
            if not is_shipped(f):
                return Path(f)
    return (base / USER_RUNS).resolve()


def _root(folder: str | Path) -> Path:
    root = Path(folder).expanduser().resolve()
    if is_shipped(root):
        raise LaunchError(f"{root} holds the runs shipped with kaviz; launch new runs into another folder")
    return root


def _paths(root: Path, name: str) -> dict[str, Path]:
    """The launch files of run ``name``, each checked to resolve inside ``root``."""
    try:
        check_name(name)
    except ValueError as e:
        raise LaunchError(str(e)) from None
    out = {}
    for ext in ("yaml", "log", "json"):
        path = root / LAUNCH_DIR / f"{name}.{ext}"
        real = path.resolve()
        if root not in real.parents:
            raise LaunchError(f"{path} resolves to {real}, outside the runs folder {root}; refusing to use it")
        out[ext] = path
    return out


# ----- processes ----------------------------------------------------------------------------------


def _marker(info: dict[str, Any], paths: dict[str, Path]) -> str:
    """The argument that identifies a launch's process: its config file, or the run folder it analyses."""
    return str(info.get("marker") or paths["yaml"])


def _alive(pid: int, marker: str) -> tuple[bool, int | None]:
    """(alive, exit code if known) of ``pid``, which must still be running a command with the
    argument ``marker`` (the config path) so that a reused pid is not mistaken for ours."""
    proc = _CHILDREN.get(pid)
    if proc is not None:
        rc = proc.poll()
        return rc is None, rc
    proc_dir = Path("/proc") / str(pid)
    if Path("/proc/self").is_dir():
        try:
            stat = (proc_dir / "stat").read_text()
            argv = (proc_dir / "cmdline").read_bytes().split(b"\0")
        except OSError:
            return False, None
        if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):  # a zombie: finished
            return False, None
        return marker.encode() in argv, None
    try:  # pragma: no cover - no /proc (macOS)
        os.kill(pid, 0)
    except ProcessLookupError:  # pragma: no cover
        return False, None
    except PermissionError:  # pragma: no cover
        return True, None
    return True, None  # pragma: no cover


def _read_info(path: Path) -> dict[str, Any] | None:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("pid"), int) else None


def launches(folder: str | Path) -> list[str]:
    """Names launched in ``folder``, most recent first."""
    root = Path(folder).expanduser().resolve()
    found = []
    for p in (root / LAUNCH_DIR).glob("*.json") if (root / LAUNCH_DIR).is_dir() else []:
        info = _read_info(p)
        if info is not None:
            found.append((str(info.get("started") or ""), p.stem))
    return [n for _, n in sorted(found, reverse=True)]
