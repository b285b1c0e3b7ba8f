"""One run folder: its manifest, unit tables, checkpoints, tokenizer, analysis tables and log.

Where each file lies (the layout in :mod:`kaviz.store.runs`) is known here and in the store, nowhere
else. Get a :class:`Run` from :meth:`kaviz.store.RunStore.create_run` or ``open_run``.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from kaviz.store import atomic
from kaviz.store import manifest as mf
from kaviz.store import tables as rt
from kaviz.store.manifest import RUN_STATUSES, StoreError
from kaviz.store.manifest import valid_name as _name
from kaviz.store.owner import owner_alive, owner_tag, parse

if TYPE_CHECKING:
    from kaviz.store.runs import RunStore

MANIFEST = "manifest.json"
LOG = "log.txt"
LOCK = ".lock"
UNITS = "units"
ANALYSIS = "analysis"
TOKENIZER = "tokenizer"
CHECKPOINT = "checkpoint"
SCRATCH = ".scratch"  # temporary folders of work in progress (streamed captures); never copied
COMPACT = "compact"  # weights stored as a difference from the pre-trained model (kaviz.train.compact)
METRICS = "metrics"


_HOST = socket.gethostname().replace(".", "_").replace("-", "_") or "host"


def _clear_abandoned(root: Path) -> None:
    """Remove the scratch folders under ``root`` whose owner (``<purpose>.<host>-<pid>.<random>``)
    ran on this host and no longer runs: what a killed analysis left. Others' folders, and any
    folder whose name says no owner, are left alone."""
    if os.name != "posix":  # os.kill(pid, 0) tests a pid only there
        return
    for folder in root.iterdir():
        parts = folder.name.split(".")  # the purpose may hold dots (unit names do): the owner is second last
        host, _, pid = parts[-2].rpartition("-") if len(parts) >= 3 else ("", "", "")
        if host != _HOST or not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class RunExistsError(StoreError):
    """``create_run`` for a name that is already taken, without ``resume``."""


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
        return mf.read_manifest(self.path / MANIFEST)

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
            m["updated"] = mf.now()
            atomic.write_json(self.path / MANIFEST, m)
        return result

    @property
    def featured(self) -> bool:
        return bool(self.manifest.get("featured"))

    def set_featured(self, on: bool = True) -> None:
        """Mark the run as a showcase: the app opens on featured runs before the newest ones."""
        self._update(lambda m: m.__setitem__("featured", bool(on)))

    def set_status(self, status: str) -> None:
        """Set the run's status; any other than "running" also ends its ownership by a process."""
        if status not in RUN_STATUSES:
            raise StoreError(f"run status {status!r} is not one of {', '.join(RUN_STATUSES)}")

        def change(m: dict[str, Any]) -> None:
            m["status"] = status
            if status != "running":
                m.pop("owner", None)

        self._update(change)

    def _unit(self, m: dict[str, Any], unit: str) -> dict[str, Any]:
        return mf.unit_entry(m, unit, self.run_id)

    def _unit_dir(self, unit: str) -> Path:
        return self.store._inside(self.path / UNITS / _name(unit, "unit id"))

    def units(self) -> pd.DataFrame:
        """One row per unit in planned order: unit and the manifest fields (UNIT_FIELDS)."""
        return mf.units_frame(self.manifest)

    def unit_status(self, unit: str) -> str:
        return self._unit(self.manifest, unit)["status"]

    def start_unit(self, unit: str) -> None:
        """Mark ``unit`` running (attempts + 1) and clear tables an earlier attempt left behind."""

        def change(m: dict[str, Any]) -> None:
            u = self._unit(m, unit)
            if u["status"] == "running" and owner_alive(u.get("owner")):
                raise StoreError(
                    f"unit {unit!r} of run {self.run_id!r} is being trained by process {parse(u['owner'])[1]} "
                    "on this machine; it is not started a second time"
                )
            mf.mark_running(u, owner_tag())

        self._update(change)
        d = self._unit_dir(unit)
        if d.is_dir():
            for f in d.glob("*.parquet"):
                f.unlink(missing_ok=True)

    def claim_unit(self, candidates: list[str], worker: str) -> str | None:
        """Take the first of ``candidates`` that is pending (or failed) and mark it running for
        ``worker``, atomically under the run's lock; ``None`` when every one is taken or done.

        This is how the processes of a unit-parallel launch share one grid: a unit is claimed once.
        """

        def change(m: dict[str, Any]) -> str | None:
            for uid in candidates:
                u = self._unit(m, uid)
                if u["status"] in ("pending", "failed"):
                    mf.mark_running(u, owner_tag())
                    u["worker"] = str(worker)
                    return uid
            return None

        uid = self._update(change)
        if uid is not None:
            d = self._unit_dir(uid)
            if d.is_dir():
                for f in d.glob("*.parquet"):
                    f.unlink(missing_ok=True)
        return uid

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
        df = rt.metric_rows(self.run_id, unit, u, metrics)
        tables = dict(tables or {})
        for name in tables:
            if _name(name, "table name") == METRICS:
                raise StoreError(f"table name {METRICS!r} is reserved for the metrics argument")
        info = mf.plain_json(info or {}, f"info of unit {unit!r}")
        d = self._unit_dir(unit)
        for name, table in tables.items():
            rt.write_parquet(d / f"{name}.parquet", table, f"table {name!r} of unit {unit!r}")
        rt.write_parquet(d / f"{METRICS}.parquet", df, f"metrics of unit {unit!r}")
        self._update(lambda m: mf.mark_done(self._unit(m, unit), info))

    def fail_unit(self, unit: str, error: str) -> None:
        self._update(lambda m: mf.mark_failed(self._unit(m, unit), error))

    # ----- checkpoints and tokenizer --------------------------------------------------------------
    def save_checkpoint(self, unit: str, model: Any, write: Callable[[Path], Any] | None = None) -> Path:
        """``write(folder)`` (by default ``model.save_pretrained(folder)``) into
        ``units/<unit>/checkpoint``, replacing an older one atomically. The pipeline passes
        :func:`kaviz.train.parallel.save_pretrained`, which also saves on a unit-parallel rank."""
        self._unit(self.manifest, unit)
        dest = self._unit_dir(unit) / CHECKPOINT
        return atomic.replace_dir(self.store._inside(dest), write or (lambda tmp: model.save_pretrained(tmp)))

    def checkpoint_dir(self, unit: str) -> Path | None:
        """``units/<unit>/checkpoint``, or None when the unit has none (an empty folder, as an older
        kaviz's unit-parallel ranks other than 0 left, is none)."""
        path = self.store._inside(self._unit_dir(unit) / CHECKPOINT)
        return path if path.is_dir() and any(path.iterdir()) else None

    def compact_dir(self, unit: str) -> Path | None:
        """``units/<unit>/compact``: the unit's weights as a difference from its base model, when stored."""
        path = self.store._inside(self._unit_dir(unit) / COMPACT)
        return path if (path / "compact.json").is_file() else None

    def has_weights(self, unit: str) -> bool:
        """Whether the unit's model can be loaded: a checkpoint or compact weights (checked on disk only)."""
        return self.checkpoint_dir(unit) is not None or self.compact_dir(unit) is not None

    def save_compact(self, unit: str, write: Callable[[Path], Any]) -> Path:
        """``write(folder)`` fills ``units/<unit>/compact``, replacing an older one atomically."""
        self._unit(self.manifest, unit)
        dest = self._unit_dir(unit) / COMPACT
        return atomic.replace_dir(self.store._inside(dest), write)

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
        for uid in mf.ordered(m):
            if m["units"][uid]["status"] == "done":
                path = self._unit_dir(uid) / f"{name}.parquet"
                if path.is_file():
                    out.append((uid, self.store._inside(path)))
        return out

    def metrics(self) -> pd.DataFrame:
        """All done units' metrics, METRIC_COLUMNS first (sparsity float64, seed Int64, value float64)."""
        return rt.read_metrics([path for _, path in self._done_files(METRICS)])

    def unit_table(self, name: str) -> pd.DataFrame:
        """``units/*/<name>.parquet`` of the done units, concatenated, with a leading ``unit`` column."""
        return rt.read_unit_tables(self._done_files(_name(name, "table name")))

    def write_unit_table(self, unit: str, name: str, df: pd.DataFrame) -> None:
        """Add or replace one table of a *done* unit (analysis results computed after training)."""
        if self.unit_status(unit) != "done":
            raise StoreError(f"unit {unit!r} of run {self.run_id!r} is not done; analyse finished units only")
        if _name(name, "table name") == METRICS:
            raise StoreError("the metrics table of a unit is written by finish_unit only")
        rt.write_parquet(self.store._inside(self._unit_dir(unit) / f"{name}.parquet"), df, f"table {name!r} of {unit}")

    def has_unit_table(self, unit: str, name: str) -> bool:
        return (self._unit_dir(unit) / f"{_name(name, 'table name')}.parquet").is_file()

    def _analysis_path(self, name: str) -> Path:
        return self.store._inside(self.path / ANALYSIS / f"{_name(name, 'table name')}.parquet")

    def write_table(self, name: str, df: pd.DataFrame) -> None:
        rt.write_parquet(self._analysis_path(name), df, f"analysis table {name!r}")

    def read_table(self, name: str) -> pd.DataFrame | None:
        path = self._analysis_path(name)
        return rt.read_parquet(path) if path.is_file() else None

    def tables(self) -> list[str]:
        folder = self.path / ANALYSIS
        if not folder.is_dir():
            return []
        return sorted(p.stem for p in folder.glob("*.parquet") if not p.name.startswith("."))

    # ----- scratch space ---------------------------------------------------------------------------
    @contextmanager
    def scratch(self, purpose: str) -> Iterator[Path]:
        """A fresh, empty folder inside the run (``.scratch/<purpose>.<host>-<pid>.<random>``) for
        temporary files, such as captures streamed to disk during analysis; removed with its contents
        on leaving the block, also after an error. Folders a killed process left behind (its host is
        this one and its pid is gone) are removed on the next call. Copies of the run
        (:meth:`copy_to`) never include them."""
        root = self.store._inside(self.path / SCRATCH)
        root.mkdir(exist_ok=True)
        _clear_abandoned(root)
        owner = f"{_HOST}-{os.getpid()}"  # read by _clear_abandoned in a later process
        folder = Path(tempfile.mkdtemp(prefix=f"{_name(purpose, 'scratch purpose')}.{owner}.", dir=root))
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            try:
                root.rmdir()  # only when no other scratch folder is in use
            except OSError:
                pass

    # ----- log and copies -------------------------------------------------------------------------
    def log(self, message: str) -> None:
        """Append ``<UTC time> message`` to log.txt (continuation lines indented)."""
        atomic.append_line(self.log_path, f"{mf.now()} " + str(message).rstrip("\n").replace("\n", "\n    "))

    def copy_to(self, dest_root: str | Path, *, include_checkpoints: bool = False, texts: bool = True) -> Run:
        """Copy this run to another store (e.g. a light demo run without checkpoints).

        ``texts=False`` drops the dataset's sentences from the copy (the ``text`` column of every
        table that has one, e.g. the attribution examples): for runs on data you may not
        redistribute, such as GLUE.  Examples stay identified by their index."""
        from kaviz.store.runs import RunStore

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
            if not texts:
                _drop_texts(tmp / self.run_id)
            for u in m["units"].values():  # the copy is nobody's work in progress
                if u.get("status") == "running":
                    u["status"] = "pending"
                u.pop("owner", None)
            if m.pop("owner", None) is not None and m.get("status") == "running":
                m["status"] = "interrupted"
            m["copied_from"] = {
                "run_id": self.run_id,
                "at": mf.now(),
                "include_checkpoints": include_checkpoints,
                "texts": texts,
            }
            atomic.write_json(tmp / self.run_id / MANIFEST, m)
            try:
                os.rename(tmp / self.run_id, target)
            except OSError as e:
                raise RunExistsError(f"run {self.run_id!r} already exists in {dest.root}") from e
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return dest.open_run(self.run_id)


def _drop_texts(folder: Path) -> None:
    """Remove the ``text`` column from every parquet table under ``folder`` (rewritten in place)."""
    for table in sorted(folder.rglob("*.parquet")):
        df = pd.read_parquet(table)
        if "text" in df.columns:
            df.drop(columns="text").to_parquet(table, index=False)
