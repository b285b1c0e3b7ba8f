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
import os
import shutil
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pandas as pd

from kaviz.store import atomic
from kaviz.store import manifest as mf
from kaviz.store.manifest import StoreError
from kaviz.store.manifest import valid_name as _name
from kaviz.store.owner import abandoned, owner_alive, owner_tag, parse
from kaviz.store.run import LOG, MANIFEST, Run, RunExistsError

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
    "featured",
    "path",
    "error",
]

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
        mf.read_manifest(path / MANIFEST)
        return Run(self, run_id, path)

    def list_runs(self) -> pd.DataFrame:
        """One row per run folder, newest first; folders that cannot be read get status 'unreadable'
        and the reason in ``error``; a run marked running whose processes on this host are gone,
        'interrupted'."""
        rows = []
        entries = sorted(self.root.iterdir()) if self.root.is_dir() else []
        for entry in entries:
            if entry.name.startswith(".") or not (entry.is_dir() or entry.is_symlink()):
                continue
            try:
                path = self._run_path(entry.name)
                m = mf.read_manifest(path / MANIFEST)
                row = {"run_id": entry.name, **mf.summary(m), "path": str(path), "error": None}
                if abandoned(m):  # its process was killed: say so rather than "running" for ever
                    row["status"] = "interrupted"
                rows.append(row)
            except Exception as e:  # one broken folder must not hide the others
                rows.append({"run_id": entry.name, "status": "unreadable", "path": str(entry), "error": str(e)})
        df = pd.DataFrame(rows, columns=LIST_COLUMNS)
        df["n_units"] = df["n_units"].astype("Int64")
        df["n_done"] = df["n_done"].astype("Int64")
        df = df.sort_values(["created", "run_id"], ascending=[False, True], na_position="last", kind="stable")
        return df.reset_index(drop=True)

    def create_run(
        self, config: dict[str, Any], *, units: list[dict], resume: bool = False, extend: Collection[str] = ()
    ) -> Run:
        """Create run ``config["name"]`` with ``units`` planned in order, or continue it (``resume``).

        Resuming checks that the stored config equals ``config`` (key order aside), adds newly
        planned units as pending and resets units left ``running`` by a killed process to pending.
        ``extend`` (top-level config keys, the grid's): resuming may also change these, as long as
        every stored unit is still planned; the run then takes ``config`` and the new units. Done
        units are kept as they are, which is sound only when the other keys are unchanged.
        """
        if hasattr(config, "to_dict"):
            config = config.to_dict()
        if not isinstance(config, dict) or "name" not in config:
            raise StoreError("config must be a dict (RunConfig.to_dict()) with a 'name'")
        run_id = _name(config["name"], "run name")
        path = self._run_path(run_id)
        config = mf.plain_json(config, f"config of run {run_id!r}")
        planned = mf.plan_units(units)
        if path.exists() or path.is_symlink():
            if not resume:
                raise RunExistsError(
                    f"run {run_id!r} already exists in {self.root}; pass --resume to continue it or choose another name"
                )
            return self._resume(run_id, config, planned, frozenset(extend))
        if extend:
            raise StoreError(f"there is no run {run_id!r} in {self.root} to extend (check the name and --out)")
        return self._create(run_id, path, config, planned)

    def _create(self, run_id: str, path: Path, config: dict, planned: dict[str, dict]) -> Run:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{atomic.TMP_PREFIX}{run_id}.", dir=self.root))
        try:
            os.chmod(tmp, 0o755)
            manifest = {**mf.new_manifest(run_id, config, planned), "owner": owner_tag()}
            atomic.write_json(tmp / MANIFEST, manifest)
            atomic.append_line(
                tmp / LOG, f"{manifest['created']} created run {run_id} with {len(planned)} units planned"
            )
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

    def _resume(self, run_id: str, config: dict, planned: dict[str, dict], extend: frozenset[str]) -> Run:
        run = self.open_run(run_id)
        grown: list[str] = []

        def change(m: dict[str, Any]) -> tuple[list[str], list[str]]:
            if owner_alive(m.get("owner")):
                raise StoreError(
                    f"run {run_id!r} in {self.root} is being run right now by process {parse(m['owner'])[1]} "
                    "on this machine. Wait for it to finish, or stop it (Ctrl-C in its terminal, or Stop on the "
                    "app's New run page if it was launched there), then resume"
                )
            diffs, fixed = mf.split_diff(m["config"], config, extend)
            if fixed:
                may = f" (only {', '.join(sorted(extend))} may change when extending)" if extend else ""
                raise StoreError(
                    f"run {run_id!r} in {self.root} was made with a different config; differing keys{may}: "
                    + "; ".join(fixed)
                    + ". Resume with the stored config or choose another name"
                )
            if diffs:
                dropped = [u for u in m["unit_order"] if u not in planned]
                if dropped:
                    raise StoreError(
                        f"extending run {run_id!r} only adds units, but the new grid leaves out "
                        f"{len(dropped)} stored unit(s): {', '.join(dropped[:5])}{' …' if len(dropped) > 5 else ''}"
                    )
                m["config"] = config
                grown.extend(diffs)
            added, reset, busy = mf.merge_plan(m, planned, lambda u: owner_alive(u.get("owner")))
            if busy:
                raise StoreError(
                    f"run {run_id!r} in {self.root} is being trained right now: {', '.join(busy)} by process "
                    f"{parse(m['units'][busy[0]].get('owner'))[1]} on this machine. Wait for it to finish, or stop "
                    "it (Ctrl-C in its terminal, or Stop on the app's New run page if it was launched there), then resume"
                )
            m["status"], m["owner"] = "running", owner_tag()
            return added, reset

        added, reset = run._update(change)
        run.log(
            f"resumed run {run_id}: {len(added)} units added"
            + (f" (grid extended: {'; '.join(grown)})" if grown else "")
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
