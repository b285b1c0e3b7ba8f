"""Reading a launch's progress from disk: the tail of its log with progress-bar redraws collapsed,
the run log's warnings, and time-left estimates (:func:`kaviz.launcher.status` puts them together)."""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

TAIL_BYTES = 16_384
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log, progress-bar redraws (``\\r``) collapsed."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - TAIL_BYTES))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    text = _ANSI.sub("", text).replace("\r\n", "\n")
    out = [ln.rsplit("\r", 1)[-1].rstrip() for ln in text.split("\n")]
    return "\n".join(tidy_log([ln for ln in out if ln.strip()])[-lines:])


_BAR = re.compile(r"^(?P<desc>.*?):?\s*\d+%\|")  # a tqdm line: "<desc>:  42%|████      | 21/50 [...]"


def tidy_log(lines: list[str]) -> list[str]:
    """Log lines with each progress bar shown once: of the lines a bar redraws (same description),
    only the newest is kept, where the bar last stood; other lines stay in order."""
    last = {}
    for i, ln in enumerate(lines):
        m = _BAR.match(ln)
        if m:
            last[m.group("desc").strip()] = i
    keep = set(last.values())
    return [ln for i, ln in enumerate(lines) if not _BAR.match(ln) or i in keep]


def seconds_since(stamp: Any) -> float | None:
    try:
        then = datetime.fromisoformat(str(stamp))
    except (TypeError, ValueError):
        return None
    return (datetime.now(timezone.utc) - then).total_seconds()


def eta_training(units) -> float | None:
    """Seconds left for the training units: the mean time of the done ones times those left, less
    what the running one has already spent."""
    done = units[units["status"] == "done"]
    secs = done["seconds"].dropna().astype(float)
    if secs.empty:
        return None
    left = int((units["status"] != "done").sum())
    running = units.loc[units["status"] == "running", "started"]
    spent = (seconds_since(running.iloc[0]) or 0.0) if len(running) else 0.0
    return max(0.0, float(secs.mean()) * left - min(spent, float(secs.mean())))


def eta_analysis(finished, a_done: int, a_total: int) -> float | None:
    """Seconds left for the analysis: its pace since the last training unit finished."""
    if not a_done or a_done >= a_total:
        return None if not a_done else 0.0
    elapsed = seconds_since(finished["finished"].dropna().astype(str).max())
    return None if elapsed is None else elapsed / a_done * (a_total - a_done)


def log_warnings(log: Path) -> tuple[str, ...]:
    """The WARNING lines of a run's log (without their timestamps)."""
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ()
    return tuple(ln.split("WARNING", 1)[1].lstrip(": ") for ln in text.splitlines() if "WARNING" in ln)
