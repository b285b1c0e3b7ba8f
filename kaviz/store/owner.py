"""Which process is working on a run: owner tags and whether their process still runs.

A process that creates or resumes a run records itself as the run's ``owner`` in the manifest, and
as the ``owner`` of every unit it marks running. A tag is ``<machine>:<pid>:<start>``: the machine
is the host name and the pid namespace (two containers with one host name are two machines), the
start is the process's start time in clock ticks since boot (``/proc/<pid>/stat``; psutil's
create time elsewhere), which a clock step does not move and a reused pid does not share.

A tag can only be checked on its own machine; elsewhere it counts as not running, as it did
before owners were recorded.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import psutil


def _machine() -> str:
    host = socket.gethostname().replace(":", "_") or "host"
    try:
        ns = "".join(c for c in os.readlink("/proc/self/ns/pid") if c.isdigit())
    except OSError:  # not Linux: the host name alone
        ns = ""
    return f"{host}~{ns}" if ns else host


MACHINE = _machine()


def start_time(pid: int) -> str:
    """When process ``pid`` started, as a string to compare; "" when there is none (or only its
    zombie: killed, not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # after "pid (name)": state is field 3
        return "" if fields[0] == "Z" else f"t{fields[19]}"  # field 22: starttime in clock ticks
    except FileNotFoundError:
        return ""
    except (OSError, IndexError):  # no /proc: psutil's create time (seconds since the epoch)
        try:
            p = psutil.Process(pid)
            return "" if p.status() == psutil.STATUS_ZOMBIE else f"{p.create_time():.2f}"
        except psutil.Error:
            return ""


def owner_tag(pid: int | None = None) -> str:
    """``machine:pid:start`` of process ``pid`` (this one by default)."""
    pid = os.getpid() if pid is None else pid
    return f"{MACHINE}:{pid}:{start_time(pid)}"


def parse(tag: str | None) -> tuple[str, str, str]:
    """(machine, pid, start) of a tag; empty strings for what it lacks."""
    machine, pid, start = ([""] * 3 + str(tag or "").rsplit(":", 2))[-3:]
    return machine, pid, start


def owner_alive(tag: str | None, *, count_self: bool = False) -> bool:
    """True when ``tag`` names a process of this machine that still runs (the same pid with the same
    start). False for another machine's tag, a tag from before owners were recorded and, unless
    ``count_self``, this process."""
    machine, pid, start = parse(tag)
    if machine != MACHINE or not pid.isdigit() or not start:
        return False
    if int(pid) == os.getpid() and not count_self:
        return False
    return start_time(int(pid)) == start


def checkable(tag: str | None) -> bool:
    """True when ``tag`` is a full tag of this machine: whether its process runs can be told here."""
    machine, pid, start = parse(tag)
    return machine == MACHINE and pid.isdigit() and bool(start)


def abandoned(m: dict[str, Any]) -> bool:
    """True for a manifest marked running whose owners (the run's, and those of its running units)
    are all processes of this machine that are gone, killed without a chance to say so: the run is
    in fact interrupted."""
    owners = [m.get("owner")] + [u.get("owner") for u in m["units"].values() if u.get("status") == "running"]
    owners = [t for t in owners if t]
    if m.get("status") != "running" or not owners or not all(checkable(t) for t in owners):
        return False
    return not any(owner_alive(t, count_self=True) for t in owners)
