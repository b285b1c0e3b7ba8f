"""Atomic file and folder writes, and an inter-process lock.

Every writer here puts its bytes in a temporary file in the destination's own folder and then
``os.replace``s it into place, so a reader sees either the old file or the new one, never half of
one, and a process killed mid-write leaves at most a stray ``.tmp-*`` file behind.  Nothing here
knows the run layout; that is :mod:`kaviz.store`'s business.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

try:  # POSIX; on Windows the lock degrades to a no-op
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

TMP_PREFIX = ".tmp-"


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not supported everywhere (e.g. some network filesystems)
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _replace_from_tmp(path: Path, write: Callable[[Path], None], *, fsync: bool) -> None:
    """Call ``write(tmp)`` on a fresh temporary path next to ``path``, then move it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        _fsync_dir(path.parent)


def write_bytes(path: str | Path, data: bytes, *, fsync: bool = False) -> None:
    """Atomically replace ``path`` with ``data``."""
    _replace_from_tmp(Path(path), lambda tmp: tmp.write_bytes(data), fsync=fsync)


def write_text(path: str | Path, text: str, *, fsync: bool = False) -> None:
    """Atomically replace ``path`` with UTF-8 ``text``."""
    write_bytes(path, text.encode("utf-8"), fsync=fsync)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist") and callable(obj.tolist):  # small numpy arrays
        return obj.tolist()
    if isinstance(obj, (Path, os.PathLike)):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"{type(obj).__name__} {obj!r} is not JSON serialisable")


def to_json(obj: Any) -> str:
    """JSON text for ``obj``; numpy scalars and paths become plain values."""
    return json.dumps(obj, indent=2, default=_json_default)


def write_json(path: str | Path, obj: Any, *, fsync: bool = True) -> None:
    """Atomically replace ``path`` with ``obj`` as JSON, fsynced by default (it is the source of truth)."""
    write_text(path, to_json(obj) + "\n", fsync=fsync)


def write_parquet(path: str | Path, df: Any) -> None:
    """Atomically replace ``path`` with ``df`` (a pandas DataFrame) as parquet, without its index."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    _replace_from_tmp(Path(path), lambda tmp: pq.write_table(table, tmp), fsync=False)


def replace_dir(path: str | Path, fill: Callable[[Path], None]) -> Path:
    """Build a folder with ``fill(tmp_dir)`` next to ``path``, then swap it in for ``path``.

    The old folder (if any) is moved aside before the new one is renamed into place and then
    removed, so ``path`` is never a half-written folder: it is the old one, absent for an instant,
    or the new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{path.name}.", dir=path.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a checkpoint is an ordinary folder
    old: Path | None = None
    try:
        fill(tmp)
        if path.exists() or path.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{path.name}.old.", dir=path.parent))
            os.replace(path, old / "x")
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and (old / "x").exists() and not path.exists():
            os.replace(old / "x", path)  # put the old folder back
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return path


@contextlib.contextmanager
def locked(lock_path: str | Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (created if needed) for the ``with`` block.

    Not re-entrant: a second ``locked`` on the same file in the same process would wait forever.
    """
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def append_line(path: str | Path, line: str) -> None:
    """Append one line to a text file in a single ``write`` (O_APPEND) and flush it."""
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
