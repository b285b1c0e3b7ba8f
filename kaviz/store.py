"""The run store: the one module that knows how runs lie on disk.

::

    <root>/<run_id>/
      manifest.json                  config, versions, git commit, status of every unit
      units/<unit_id>/metrics.parquet  tidy metric rows (METRIC_COLUMNS)
      units/<unit_id>/<table>.parquet  other per-unit tables
      units/<unit_id>/checkpoint/    model.save_pretrained(...) (safetensors + config.json)
      tokenizer/                     tokenizer.save_pretrained(...), once per run
      analysis/<name>.parquet        analysis tables
      log.txt                        human-readable log, appended

Every file is written to a temporary name in its own folder and renamed into place; the manifest
is updated read-modify-write under an exclusive ``flock`` on ``<run>/.lock``.  A unit's tables are
written before the manifest marks it done, so a process killed in between leaves the unit to be
redone, never half done.  Only JSON, parquet and safetensors are ever read: nothing is unpickled.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from kaviz import __version__, atomic
from kaviz.names import check_name

SCHEMA_VERSION = 1
STAGES = ("pretrained", "finetuned", "pruned")
METRIC_COLUMNS = ["run", "stage", "method", "sparsity", "seed", "unit", "metric", "value"]
RUN_STATUSES = ("running", "complete", "failed", "interrupted")
UNIT_STATUSES = ("pending", "running", "done", "failed")
UNIT_FIELDS = (
    "stage",
    "method",
    "sparsity",
    "seed",
    "status",
    "started",
    "finished",
    "seconds",
    "attempts",
    "error",
    "info",
)
LIST_COLUMNS = [
    "run_id",
    "status",
    "created",
    "updated",
    "task",
    "model",
    "methods",
    "n_units",
    "n_done",
    "path",
    "error",
]

MANIFEST = "manifest.json"
LOG = "log.txt"
LOCK = ".lock"
UNITS = "units"
ANALYSIS = "analysis"
TOKENIZER = "tokenizer"
CHECKPOINT = "checkpoint"
METRICS = "metrics"
_VERSION_PACKAGES = ("torch", "transformers", "datasets", "accelerate", "safetensors", "pandas", "pyarrow", "numpy")
_STR_COLUMNS = ("run", "stage", "method", "unit", "metric")
_PANDAS3 = int(pd.__version__.split(".")[0]) >= 3


class StoreError(ValueError):
    """A run store problem: bad name, missing run, corrupt file, path outside the store, newer schema..."""


class RunExistsError(StoreError):
    """``create_run`` for a name that is already taken, without ``resume``."""


# ----- names and small helpers --------------------------------------------------------------------


def _name(name: Any, what: str) -> str:
    try:
        return check_name(name, what)
    except ValueError as e:
        raise StoreError(str(e)) from None


def unit_id(stage: str, method: str | None = None, sparsity: float | None = None, seed: int | None = None) -> str:
    """The id (and folder name) of a unit: ``"pretrained"``, ``"finetuned"`` or
    ``"pruned_<method>_s<sparsity:g>_seed<seed>"``, e.g. ``"pruned_knowledge-aware_s0.9_seed42"``."""
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
    return _name(f"pruned_{method}_s{float(sparsity):g}_seed{int(seed)}", "unit id")


def _now() -> str:
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


def _plain_json(obj: Any, what: str) -> Any:
    """``obj`` round-tripped through JSON (tuples -> lists, numpy scalars -> numbers)."""
    try:
        return json.loads(atomic.to_json(obj))
    except (TypeError, ValueError) as e:
        raise StoreError(f"{what} is not JSON serialisable: {e}") from None


def _diff(stored: Any, given: Any, prefix: str = "") -> list[str]:
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
                out += _diff(stored[k], given[k], p)
        return out
    same = stored == given and isinstance(stored, bool) == isinstance(given, bool)
    return [] if same else [f"{prefix or 'config'} (stored {stored!r}, given {given!r})"]


def _str_col(s: pd.Series) -> pd.Series:
    if _PANDAS3:
        return s.astype("str")  # missing values stay missing
    return s.astype(object).where(s.notna(), None).map(lambda v: v if v is None else str(v))


def _typed_metrics(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for c in _STR_COLUMNS:
        out[c] = _str_col(out[c])
    out["sparsity"] = pd.to_numeric(out["sparsity"]).astype("float64")
    out["seed"] = pd.to_numeric(out["seed"]).astype("Int64")
    out["value"] = pd.to_numeric(out["value"]).astype("float64")
    return out


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError, ValueError) as e:
        raise StoreError(f"{path}: not a readable parquet file ({e}); delete it or redo the unit") from e


def _write_parquet(path: Path, df: pd.DataFrame, what: str) -> None:
    import pyarrow as pa

    if not isinstance(df, pd.DataFrame):
        raise StoreError(f"{what}: expected a pandas DataFrame, got {type(df).__name__}")
    try:
        atomic.write_parquet(path, df)
    except (pa.ArrowException, TypeError, ValueError) as e:
        raise StoreError(f"{what}: cannot be written as parquet ({e})") from e


def _read_manifest(path: Path) -> dict[str, Any]:
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


def _ordered(m: dict[str, Any]) -> list[str]:
    order = [u for u in m["unit_order"] if u in m["units"]]
    return order + [u for u in m["units"] if u not in set(order)]


def _check_units(units: list[dict]) -> dict[str, dict[str, Any]]:
    planned: dict[str, dict[str, Any]] = {}
    for i, u in enumerate(units):
        if not isinstance(u, dict) or "unit" not in u:
            raise StoreError(f"units[{i}]: expected a dict with 'unit', 'stage', 'method', 'sparsity', 'seed'")
        uid = _name(u["unit"], "unit id")
        if uid in planned:
            raise StoreError(f"units[{i}]: unit {uid!r} is planned twice")
        if u.get("stage") not in STAGES:
            raise StoreError(f"units[{i}] ({uid}): stage {u.get('stage')!r} is not one of {', '.join(STAGES)}")
        sparsity, seed = u.get("sparsity"), u.get("seed")
        planned[uid] = {
            "stage": u["stage"],
            "method": u.get("method"),
            "sparsity": None if sparsity is None else float(sparsity),
            "seed": None if seed is None else int(seed),
            "status": "pending",
            "started": None,
            "finished": None,
            "seconds": None,
            "attempts": 0,
            "error": None,
            "info": {},
        }
    return planned


# ----- the store ----------------------------------------------------------------------------------


class RunStore:
    """A folder of runs, one sub-folder each.  The folder is created on the first write."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    def _inside(self, path: Path) -> Path:
        """``path`` if it resolves (symlinks followed) inside the root, else StoreError."""
        root, real = self.root.resolve(), path.resolve()
        if real != root and root not in real.parents:
            raise StoreError(f"{path} resolves to {real}, outside the runs folder {root}; refusing to use it")
        return path

    def _run_path(self, run_id: str) -> Path:
        return self._inside(self.root / _name(run_id, "run name"))

    def has_run(self, run_id: str) -> bool:
        path = self._run_path(run_id)
        return path.exists() or path.is_symlink()

    def open_run(self, run_id: str) -> Run:
        path = self._run_path(run_id)
        if not path.is_dir():
            names = [p.name for p in self.root.iterdir() if p.is_dir()] if self.root.is_dir() else []
            hint = difflib.get_close_matches(run_id, names, n=1)
            more = (
                f" (did you mean {hint[0]!r}?)" if hint else f"; runs there: {', '.join(sorted(names)[:10]) or 'none'}"
            )
            raise StoreError(f"no run {run_id!r} in {self.root}{more}")
        _read_manifest(path / MANIFEST)
        return Run(self, run_id, path)

    def list_runs(self) -> pd.DataFrame:
        """One row per run folder, newest first; folders that cannot be read get status 'unreadable'
        and the reason in ``error``."""
        rows = []
        entries = sorted(self.root.iterdir()) if self.root.is_dir() else []
        for entry in entries:
            if entry.name.startswith(".") or not (entry.is_dir() or entry.is_symlink()):
                continue
            try:
                path = self._run_path(entry.name)
                m = _read_manifest(path / MANIFEST)
                cfg = m["config"]
                statuses = [u["status"] for u in m["units"].values()]
                methods = cfg.get("methods") or []
                rows.append(
                    {
                        "run_id": entry.name,
                        "status": m.get("status"),
                        "created": m.get("created"),
                        "updated": m.get("updated"),
                        "task": (cfg.get("task") or {}).get("name"),
                        "model": (cfg.get("model") or {}).get("name_or_path"),
                        "methods": ", ".join(map(str, methods)),
                        "n_units": len(statuses),
                        "n_done": statuses.count("done"),
                        "path": str(path),
                        "error": None,
                    }
                )
            except Exception as e:  # one broken folder must not hide the others
                rows.append({"run_id": entry.name, "status": "unreadable", "path": str(entry), "error": str(e)})
        df = pd.DataFrame(rows, columns=LIST_COLUMNS)
        df["n_units"] = df["n_units"].astype("Int64")
        df["n_done"] = df["n_done"].astype("Int64")
        df = df.sort_values(["created", "run_id"], ascending=[False, True], na_position="last", kind="stable")
        return df.reset_index(drop=True)

    def create_run(self, config: dict[str, Any], *, units: list[dict], resume: bool = False) -> Run:
        """Create run ``config["name"]`` with ``units`` planned in order, or continue it (``resume``).

        Resuming checks that the stored config equals ``config`` (key order aside), adds newly
        planned units as pending and resets units left ``running`` by a killed process to pending.
        """
        if hasattr(config, "to_dict"):
            config = config.to_dict()
        if not isinstance(config, dict) or "name" not in config:
            raise StoreError("config must be a dict (RunConfig.to_dict()) with a 'name'")
        run_id = _name(config["name"], "run name")
        path = self._run_path(run_id)
        config = _plain_json(config, f"config of run {run_id!r}")
        planned = _check_units(units)
        if path.exists() or path.is_symlink():
            if not resume:
                raise RunExistsError(
                    f"run {run_id!r} already exists in {self.root}; pass --resume to continue it or choose another name"
                )
            return self._resume(run_id, config, planned)
        return self._create(run_id, path, config, planned)

    def _create(self, run_id: str, path: Path, config: dict, planned: dict[str, dict]) -> Run:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{atomic.TMP_PREFIX}{run_id}.", dir=self.root))
        try:
            os.chmod(tmp, 0o755)
            now = _now()
            manifest = {
                "schema_version": SCHEMA_VERSION,
                "run_id": run_id,
                "created": now,
                "updated": now,
                "status": "running",
                "config": config,
                "versions": _versions(),
                "seed": config.get("seed"),
                "git": _git_commit(),
                "units": planned,
                "unit_order": list(planned),
            }
            atomic.write_json(tmp / MANIFEST, manifest)
            atomic.append_line(tmp / LOG, f"{now} created run {run_id} with {len(planned)} units planned")
            try:
                os.rename(tmp, path)
            except OSError as e:
                if path.exists():
                    raise RunExistsError(f"run {run_id!r} was created in {self.root} by another process") from e
                raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return Run(self, run_id, path)

    def _resume(self, run_id: str, config: dict, planned: dict[str, dict]) -> Run:
        run = self.open_run(run_id)
        added: list[str] = []
        reset: list[str] = []

        def change(m: dict[str, Any]) -> None:
            diffs = _diff(m["config"], config)
            if diffs:
                raise StoreError(
                    f"run {run_id!r} in {self.root} was made with a different config; differing keys: "
                    + "; ".join(diffs)
                    + ". Resume with the stored config or choose another name"
                )
            for uid, entry in planned.items():
                if uid not in m["units"]:
                    m["units"][uid] = entry
                    m["unit_order"].append(uid)
                    added.append(uid)
                elif m["units"][uid]["status"] == "running":
                    m["units"][uid]["status"] = "pending"
                    reset.append(uid)
            m["status"] = "running"

        run._update(change)
        run.log(
            f"resumed run {run_id}: {len(added)} units added"
            + (f", {len(reset)} interrupted units reset to pending ({', '.join(reset)})" if reset else "")
        )
        return run

    def delete_run(self, run_id: str) -> None:
        path = self._run_path(run_id)
        if path.is_symlink():  # a link inside the store: remove the link, never what it points at
            path.unlink()
            return
        if not path.is_dir():
            raise StoreError(f"no run {run_id!r} in {self.root}")
        trash = Path(tempfile.mkdtemp(prefix=f"{atomic.TMP_PREFIX}deleted-{run_id}.", dir=self.root))
        os.replace(path, trash / run_id)  # vanish from listings at once, then remove
        shutil.rmtree(trash, ignore_errors=True)


# ----- one run ------------------------------------------------------------------------------------


class Run:
    """One run folder.  Get it from :meth:`RunStore.create_run` or :meth:`RunStore.open_run`."""

    def __init__(self, store: RunStore, run_id: str, path: Path) -> None:
        self.store = store
        self.run_id = run_id
        self.path = path

    def __repr__(self) -> str:
        return f"Run({self.run_id!r}, path={str(self.path)!r})"

    # ----- manifest -------------------------------------------------------------------------------
    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest as on disk now (re-read every time; a reader never sees a half-written file)."""
        return _read_manifest(self.path / MANIFEST)

    @property
    def config(self) -> dict[str, Any]:
        return self.manifest["config"]

    @property
    def status(self) -> str:
        return self.manifest["status"]

    @property
    def log_path(self) -> Path:
        return self.path / LOG

    def _update(self, change: Callable[[dict[str, Any]], Any]) -> Any:
        """Read-modify-write the manifest under the run's lock; ``change`` edits it in place."""
        with atomic.locked(self.path / LOCK):
            m = self.manifest
            result = change(m)
            m["updated"] = _now()
            atomic.write_json(self.path / MANIFEST, m)
        return result

    def set_status(self, status: str) -> None:
        if status not in RUN_STATUSES:
            raise StoreError(f"run status {status!r} is not one of {', '.join(RUN_STATUSES)}")
        self._update(lambda m: m.__setitem__("status", status))

    def _unit(self, m: dict[str, Any], unit: str) -> dict[str, Any]:
        _name(unit, "unit id")
        if unit not in m["units"]:
            known = _ordered(m)
            hint = difflib.get_close_matches(unit, known, n=1)
            raise StoreError(
                f"run {self.run_id!r} has no unit {unit!r}"
                + (f" (did you mean {hint[0]!r}?)" if hint else f"; planned: {', '.join(known[:10])}")
            )
        return m["units"][unit]

    def _unit_dir(self, unit: str) -> Path:
        return self.store._inside(self.path / UNITS / _name(unit, "unit id"))

    def units(self) -> pd.DataFrame:
        """One row per unit in planned order: unit and the manifest fields (UNIT_FIELDS)."""
        m = self.manifest
        rows = [{"unit": uid, **{k: m["units"][uid].get(k) for k in UNIT_FIELDS}} for uid in _ordered(m)]
        df = pd.DataFrame(rows, columns=["unit", *UNIT_FIELDS])
        df["sparsity"] = pd.to_numeric(df["sparsity"]).astype("float64")
        df["seed"] = pd.to_numeric(df["seed"]).astype("Int64")
        df["seconds"] = pd.to_numeric(df["seconds"]).astype("float64")
        df["attempts"] = pd.to_numeric(df["attempts"]).astype("Int64")
        return df

    def unit_status(self, unit: str) -> str:
        return self._unit(self.manifest, unit)["status"]

    def start_unit(self, unit: str) -> None:
        """Mark ``unit`` running (attempts + 1) and clear tables an earlier attempt left behind."""

        def change(m: dict[str, Any]) -> None:
            u = self._unit(m, unit)
            u.update(status="running", started=_now(), finished=None, seconds=None, error=None)
            u["attempts"] = int(u.get("attempts") or 0) + 1

        self._update(change)
        d = self._unit_dir(unit)
        if d.is_dir():
            for f in d.glob("*.parquet"):
                f.unlink(missing_ok=True)

    def finish_unit(
        self,
        unit: str,
        metrics: pd.DataFrame | list[dict],
        *,
        info: dict | None = None,
        tables: dict[str, pd.DataFrame] | None = None,
    ) -> None:
        """Write the unit's tables and metrics, then mark it done.

        ``metrics`` rows need ``metric`` and ``value``; run, stage, method, sparsity, seed and unit
        are filled from the manifest.  Further columns are kept after METRIC_COLUMNS.
        """
        u = self._unit(self.manifest, unit)
        df = self._metrics_frame(unit, u, metrics)
        tables = dict(tables or {})
        for name in tables:
            if _name(name, "table name") == METRICS:
                raise StoreError(f"table name {METRICS!r} is reserved for the metrics argument")
        info = _plain_json(info or {}, f"info of unit {unit!r}")
        d = self._unit_dir(unit)
        for name, table in tables.items():
            _write_parquet(d / f"{name}.parquet", table, f"table {name!r} of unit {unit!r}")
        _write_parquet(d / f"{METRICS}.parquet", df, f"metrics of unit {unit!r}")

        def change(m: dict[str, Any]) -> None:
            entry = self._unit(m, unit)
            finished = _now()
            entry.update(
                status="done",
                finished=finished,
                error=None,
                info=info,
                seconds=_seconds(entry.get("started"), finished),
            )

        self._update(change)

    def _metrics_frame(self, unit: str, u: dict[str, Any], metrics: pd.DataFrame | list[dict]) -> pd.DataFrame:
        df = metrics.copy() if isinstance(metrics, pd.DataFrame) else pd.DataFrame(list(metrics))
        if len(df.columns) == 0 and len(df) == 0:
            df = pd.DataFrame({"metric": [], "value": []})
        missing = [c for c in ("metric", "value") if c not in df.columns]
        if missing:
            raise StoreError(f"metrics of unit {unit!r} lack column(s) {missing}; got {list(df.columns)}")
        df = df.reset_index(drop=True)
        fill = {"run": self.run_id, "stage": u["stage"], "method": u.get("method"), "unit": unit}
        for col, val in fill.items():
            df[col] = val
        df["sparsity"] = float("nan") if u.get("sparsity") is None else float(u["sparsity"])
        df["seed"] = pd.array([u.get("seed")] * len(df), dtype="Int64")
        try:
            df["value"] = pd.to_numeric(df["value"])
        except (TypeError, ValueError) as e:
            raise StoreError(f"metrics of unit {unit!r}: 'value' must be numeric ({e})") from None
        extras = [c for c in df.columns if c not in METRIC_COLUMNS]
        return _typed_metrics(df[METRIC_COLUMNS + extras])

    def fail_unit(self, unit: str, error: str) -> None:
        def change(m: dict[str, Any]) -> None:
            u = self._unit(m, unit)
            finished = _now()
            u.update(status="failed", finished=finished, error=str(error), seconds=_seconds(u.get("started"), finished))

        self._update(change)

    # ----- checkpoints and tokenizer --------------------------------------------------------------
    def save_checkpoint(self, unit: str, model: Any) -> Path:
        """``model.save_pretrained`` into ``units/<unit>/checkpoint``, replacing an older one atomically."""
        self._unit(self.manifest, unit)
        dest = self._unit_dir(unit) / CHECKPOINT
        return atomic.replace_dir(self.store._inside(dest), lambda tmp: model.save_pretrained(tmp))

    def checkpoint_dir(self, unit: str) -> Path | None:
        path = self.store._inside(self._unit_dir(unit) / CHECKPOINT)
        return path if path.is_dir() else None

    def save_tokenizer(self, tokenizer: Any) -> None:
        dest = self.store._inside(self.path / TOKENIZER)
        atomic.replace_dir(dest, lambda tmp: tokenizer.save_pretrained(tmp))

    def tokenizer_dir(self) -> Path | None:
        path = self.store._inside(self.path / TOKENIZER)
        return path if path.is_dir() else None

    # ----- tables ---------------------------------------------------------------------------------
    def _done_files(self, name: str) -> list[tuple[str, Path]]:
        m = self.manifest
        out = []
        for uid in _ordered(m):
            if m["units"][uid]["status"] == "done":
                path = self._unit_dir(uid) / f"{name}.parquet"
                if path.is_file():
                    out.append((uid, self.store._inside(path)))
        return out

    def metrics(self) -> pd.DataFrame:
        """All done units' metrics, METRIC_COLUMNS first (sparsity float64, seed Int64, value float64)."""
        frames = []
        for _, path in self._done_files(METRICS):
            df = _read_parquet(path)
            missing = [c for c in METRIC_COLUMNS if c not in df.columns]
            if missing:
                raise StoreError(f"{path}: metrics table lacks column(s) {missing}")
            frames.append(df)
        frames = [f for f in frames if len(f)] or frames[:1]
        if not frames:
            return _typed_metrics(pd.DataFrame({c: [] for c in METRIC_COLUMNS}))
        df = pd.concat(frames, ignore_index=True)
        return _typed_metrics(df[METRIC_COLUMNS + [c for c in df.columns if c not in METRIC_COLUMNS]])

    def unit_table(self, name: str) -> pd.DataFrame:
        """``units/*/<name>.parquet`` of the done units, concatenated, with a leading ``unit`` column."""
        frames = []
        for uid, path in self._done_files(_name(name, "table name")):
            df = _read_parquet(path)
            df = df.drop(columns="unit", errors="ignore")
            df.insert(0, "unit", uid)
            frames.append(df)
        frames = [f for f in frames if len(f)] or frames[:1]
        if not frames:
            return pd.DataFrame({"unit": pd.Series(dtype="str" if _PANDAS3 else object)})
        return pd.concat(frames, ignore_index=True)

    def _analysis_path(self, name: str) -> Path:
        return self.store._inside(self.path / ANALYSIS / f"{_name(name, 'table name')}.parquet")

    def write_table(self, name: str, df: pd.DataFrame) -> None:
        _write_parquet(self._analysis_path(name), df, f"analysis table {name!r}")

    def read_table(self, name: str) -> pd.DataFrame | None:
        path = self._analysis_path(name)
        return _read_parquet(path) if path.is_file() else None

    def tables(self) -> list[str]:
        folder = self.path / ANALYSIS
        if not folder.is_dir():
            return []
        return sorted(p.stem for p in folder.glob("*.parquet") if not p.name.startswith("."))

    # ----- log and copies -------------------------------------------------------------------------
    def log(self, message: str) -> None:
        """Append ``<UTC time> message`` to log.txt (continuation lines indented)."""
        atomic.append_line(self.log_path, f"{_now()} " + str(message).rstrip("\n").replace("\n", "\n    "))

    def copy_to(self, dest_root: str | Path, *, include_checkpoints: bool = False) -> Run:
        """Copy this run to another store (e.g. a light demo run without checkpoints)."""
        dest = RunStore(dest_root)
        target = dest._run_path(self.run_id)
        if target.exists() or target.is_symlink():
            raise RunExistsError(f"run {self.run_id!r} already exists in {dest.root}")

        def ignore(folder: str, names: list[str]) -> set[str]:
            skip = set()
            for n in names:
                p = Path(folder) / n
                if n.startswith(".") or p.is_symlink():
                    skip.add(n)
                elif n == CHECKPOINT and not include_checkpoints and p.parent.parent.name == UNITS:
                    skip.add(n)
            return skip

        dest.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{atomic.TMP_PREFIX}{self.run_id}.", dir=dest.root))
        try:
            with atomic.locked(self.path / LOCK):  # a consistent manifest while we copy
                m = self.manifest
                shutil.copytree(self.path, tmp / self.run_id, ignore=ignore)
            m["copied_from"] = {"run_id": self.run_id, "at": _now(), "include_checkpoints": include_checkpoints}
            atomic.write_json(tmp / self.run_id / MANIFEST, m)
            try:
                os.rename(tmp / self.run_id, target)
            except OSError as e:
                raise RunExistsError(f"run {self.run_id!r} already exists in {dest.root}") from e
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return dest.open_run(self.run_id)
