"""A run's manifest as data: its schema, validation, the unit plan, status changes and provenance.

A manifest is one JSON object per run.  :mod:`kaviz.store` decides where it lies and writes it under
the run's lock; this module parses and checks the file it is handed and edits the dict in memory.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import json
import platform
import subprocess
from collections.abc import Callable, Collection
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from kaviz import __version__
from kaviz.core.errors import KavizError
from kaviz.core.names import check_name
from kaviz.store import atomic

SCHEMA_VERSION = 1
STAGES = ("pretrained", "finetuned", "pruned")
RUN_STATUSES = ("running", "complete", "failed", "interrupted")
UNIT_STATUSES = ("pending", "running", "done", "failed")
UNIT_FIELDS = (
    "stage",
    "method",
    "sparsity",
    "seed",
    "budget",
    "status",
    "started",
    "finished",
    "seconds",
    "attempts",
    "error",
    "info",
)
_VERSION_PACKAGES = ("torch", "transformers", "datasets", "accelerate", "safetensors", "pandas", "pyarrow", "numpy")


class StoreError(KavizError, ValueError):
    """A run store problem: bad name, missing run, corrupt file, path outside the store, newer schema..."""


def valid_name(name: Any, what: str) -> str:
    """``name`` if it is a safe single path component (see :func:`kaviz.core.names.check_name`), else StoreError."""
    try:
        return check_name(name, what)
    except ValueError as e:
        raise StoreError(str(e)) from None


def unit_id(
    stage: str,
    method: str | None = None,
    sparsity: float | None = None,
    seed: int | None = None,
    budget: float | None = None,
) -> str:
    """The id of a unit (:mod:`kaviz.store` names its folder after it): ``"pretrained"``, ``"finetuned"`` or
    ``"pruned_<method>_s<sparsity:g>_seed<seed>"``, e.g. ``"pruned_knowledge-aware_s0.9_seed42"``; a unit
    trained at a budget other than the run's main one ends in ``_ep<epochs:g>`` (``..._seed42_ep0.25``)."""
    if stage not in STAGES:
        raise StoreError(f"stage {stage!r} is not one of {', '.join(STAGES)}")
    if stage != "pruned":
        given = [k for k, v in (("method", method), ("sparsity", sparsity), ("seed", seed)) if v is not None]
        if given:
            raise StoreError(f"a {stage!r} unit takes no {', '.join(given)} (only 'pruned' units do)")
        return stage
    missing = [k for k, v in (("method", method), ("sparsity", sparsity), ("seed", seed)) if v is None]
    if missing:
        raise StoreError(f"a 'pruned' unit needs {', '.join(missing)}")
    tail = "" if budget is None else f"_ep{float(budget):g}"
    return valid_name(f"pruned_{method}_s{float(sparsity):g}_seed{int(seed)}{tail}", "unit id")


# ----- time and provenance ------------------------------------------------------------------------


def now() -> str:
    """The current UTC time, ISO 8601 with milliseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _seconds(started: str | None, finished: str) -> float | None:
    if not started:
        return None
    try:
        delta = datetime.fromisoformat(finished) - datetime.fromisoformat(started)
    except (TypeError, ValueError):
        return None
    return round(delta.total_seconds(), 3)


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version(), "kaviz": __version__}
    for pkg in _VERSION_PACKAGES:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _git_commit() -> str | None:
    """Commit hash of the repository around the current directory, or None (never raises)."""
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = res.stdout.strip()
    return commit if res.returncode == 0 and len(commit) == 40 else None


# ----- configs ------------------------------------------------------------------------------------


def plain_json(obj: Any, what: str) -> Any:
    """``obj`` round-tripped through JSON (tuples -> lists, numpy scalars -> numbers)."""
    try:
        return json.loads(atomic.to_json(obj))
    except (TypeError, ValueError) as e:
        raise StoreError(f"{what} is not JSON serialisable: {e}") from None


def split_diff(stored: dict, given: dict, free: Collection[str]) -> tuple[list[str], list[str]]:
    """(:func:`diff` lines under the top-level keys ``free``, the other lines)."""
    lines = diff(stored, given)
    top = [d.split(" ")[0].split(".")[0] in free for d in lines]
    return [d for d, t in zip(lines, top, strict=True) if t], [d for d, t in zip(lines, top, strict=True) if not t]


def diff(stored: Any, given: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two JSON-like values differ, with both values."""
    if isinstance(stored, dict) and isinstance(given, dict):
        out: list[str] = []
        for k in sorted(set(stored) | set(given), key=str):
            p = f"{prefix}.{k}" if prefix else str(k)
            if k not in stored:
                out.append(f"{p} (not stored, given {given[k]!r})")
            elif k not in given:
                out.append(f"{p} (stored {stored[k]!r}, not given)")
            else:
                out += diff(stored[k], given[k], p)
        return out
    same = stored == given and isinstance(stored, bool) == isinstance(given, bool)
    return [] if same else [f"{prefix or 'config'} (stored {stored!r}, given {given!r})"]


# ----- reading and planning -----------------------------------------------------------------------


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest at ``path``, checked: a schema this kaviz reads, the required keys, valid unit statuses."""
    if not path.is_file():
        raise StoreError(f"{path} is missing: not a kaviz run folder (or its creation did not finish)")
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreError(f"{path}: corrupt manifest ({e})") from None
    if not isinstance(m, dict):
        raise StoreError(f"{path}: corrupt manifest (expected a JSON object, got {type(m).__name__})")
    v = m.get("schema_version")
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise StoreError(f"{path}: corrupt manifest (schema_version {v!r} is not a positive integer)")
    if v > SCHEMA_VERSION:
        raise StoreError(
            f"{path} has schema_version {v}: written by a newer kaviz (this one reads up to "
            f"{SCHEMA_VERSION}); upgrade kaviz to open it"
        )
    for key, typ in (("config", dict), ("units", dict), ("unit_order", list)):
        if not isinstance(m.get(key), typ):
            raise StoreError(f"{path}: corrupt manifest ({key!r} should be a {typ.__name__})")
    bad = [u for u, e in m["units"].items() if not isinstance(e, dict) or e.get("status") not in UNIT_STATUSES]
    if bad:
        raise StoreError(f"{path}: corrupt manifest (units with no valid status: {', '.join(map(str, bad))})")
    return m


def ordered(m: dict[str, Any]) -> list[str]:
    """The manifest's unit ids in planned order (units missing from ``unit_order`` last)."""
    order = [u for u in m["unit_order"] if u in m["units"]]
    return order + [u for u in m["units"] if u not in set(order)]


def plan_units(units: list[dict]) -> dict[str, dict[str, Any]]:
    """Unit id -> a fresh pending manifest entry, for each planned unit (checked, in order)."""
    planned: dict[str, dict[str, Any]] = {}
    for i, u in enumerate(units):
        if not isinstance(u, dict) or "unit" not in u:
            raise StoreError(f"units[{i}]: expected a dict with 'unit', 'stage', 'method', 'sparsity', 'seed'")
        uid = valid_name(u["unit"], "unit id")
        if uid in planned:
            raise StoreError(f"units[{i}]: unit {uid!r} is planned twice")
        if u.get("stage") not in STAGES:
            raise StoreError(f"units[{i}] ({uid}): stage {u.get('stage')!r} is not one of {', '.join(STAGES)}")
        sparsity, seed, budget = u.get("sparsity"), u.get("seed"), u.get("budget")
        planned[uid] = {
            "stage": u["stage"],
            "method": u.get("method"),
            "sparsity": None if sparsity is None else float(sparsity),
            "seed": None if seed is None else int(seed),
            "budget": None if budget is None else float(budget),
            "status": "pending",
            "started": None,
            "finished": None,
            "seconds": None,
            "attempts": 0,
            "error": None,
            "info": {},
        }
    return planned


def new_manifest(run_id: str, config: dict[str, Any], planned: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The manifest of a new run: config, package versions, git commit and the planned units."""
    created = now()
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "created": created,
        "updated": created,
        "status": "running",
        "config": config,
        "versions": _versions(),
        "seed": config.get("seed"),
        "git": _git_commit(),
        "units": planned,
        "unit_order": list(planned),
    }


def merge_plan(
    m: dict[str, Any], planned: dict[str, dict[str, Any]], live: Callable[[dict[str, Any]], bool] = lambda u: False
) -> tuple[list[str], list[str], list[str]]:
    """Add newly planned units as pending and reset units left ``running`` by a process that is gone
    -> (added, reset, busy) unit ids; ``busy``: running units whose entry ``live`` says a live
    process still trains (left running)."""
    added: list[str] = []
    reset: list[str] = []
    busy: list[str] = []
    for uid, entry in planned.items():
        if uid not in m["units"]:
            m["units"][uid] = entry
            m["unit_order"].append(uid)
            added.append(uid)
        elif m["units"][uid]["status"] == "running":
            if live(m["units"][uid]):
                busy.append(uid)
                continue
            m["units"][uid]["status"] = "pending"
            reset.append(uid)
    return added, reset, busy


# ----- units --------------------------------------------------------------------------------------


def unit_entry(m: dict[str, Any], unit: str, run_id: str) -> dict[str, Any]:
    """The manifest entry of ``unit``; StoreError naming the closest planned unit when there is none."""
    valid_name(unit, "unit id")
    if unit not in m["units"]:
        known = ordered(m)
        hint = difflib.get_close_matches(unit, known, n=1)
        raise StoreError(
            f"run {run_id!r} has no unit {unit!r}"
            + (f" (did you mean {hint[0]!r}?)" if hint else f"; planned: {', '.join(known[:10])}")
        )
    return m["units"][unit]


def mark_running(u: dict[str, Any], owner: str | None = None) -> None:
    """``owner``: who runs it (:func:`kaviz.store.run.owner_tag`), so that a resume elsewhere can
    tell a unit still in training from one a killed process left."""
    u.update(status="running", started=now(), finished=None, seconds=None, error=None, owner=owner)
    u["attempts"] = int(u.get("attempts") or 0) + 1


def mark_done(u: dict[str, Any], info: Any) -> None:
    finished = now()
    u.update(status="done", finished=finished, error=None, info=info, seconds=_seconds(u.get("started"), finished))


def mark_failed(u: dict[str, Any], error: str) -> None:
    finished = now()
    u.update(status="failed", finished=finished, error=str(error), seconds=_seconds(u.get("started"), finished))


def units_frame(m: dict[str, Any]) -> pd.DataFrame:
    """One row per unit in planned order: unit and the manifest fields (UNIT_FIELDS)."""
    rows = [{"unit": uid, **{k: m["units"][uid].get(k) for k in UNIT_FIELDS}} for uid in ordered(m)]
    df = pd.DataFrame(rows, columns=["unit", *UNIT_FIELDS])
    df["sparsity"] = pd.to_numeric(df["sparsity"]).astype("float64")
    df["seed"] = pd.to_numeric(df["seed"]).astype("Int64")
    df["budget"] = pd.to_numeric(df["budget"]).astype("float64")
    df["seconds"] = pd.to_numeric(df["seconds"]).astype("float64")
    df["attempts"] = pd.to_numeric(df["attempts"]).astype("Int64")
    return df


def summary(m: dict[str, Any]) -> dict[str, Any]:
    """Status, times, task, model, methods and unit counts of a run, for listings."""
    cfg = m["config"]
    statuses = [u["status"] for u in m["units"].values()]
    methods = cfg.get("methods") or []
    return {
        "status": m.get("status"),
        "created": m.get("created"),
        "updated": m.get("updated"),
        "task": (cfg.get("task") or {}).get("name"),
        "model": (cfg.get("model") or {}).get("name_or_path"),
        "methods": ", ".join(map(str, methods)),
        "n_units": len(statuses),
        "n_done": statuses.count("done"),
        "featured": bool(m.get("featured")),
    }
