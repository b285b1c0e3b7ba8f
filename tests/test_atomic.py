"""Atomic writes: the old file or the new one, never half of one, and no temp files left behind."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kaviz.store import atomic


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_write_json_and_text_replace_without_leftovers(tmp_path):
    path = tmp_path / "sub" / "m.json"
    atomic.write_json(path, {"a": np.float32(0.5), "b": np.int64(3), "p": Path("x/y"), "t": (1, 2)})
    assert json.loads(path.read_text()) == {"a": 0.5, "b": 3, "p": "x/y", "t": [1, 2]}
    atomic.write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    atomic.write_text(tmp_path / "t.txt", "héllo")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo"
    assert _names(path.parent) == ["m.json"]


def test_unserialisable_json_keeps_old_file(tmp_path):
    path = tmp_path / "m.json"
    atomic.write_json(path, {"a": 1})
    with pytest.raises(TypeError, match="not JSON serialisable"):
        atomic.write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert _names(tmp_path) == ["m.json"]


def test_failed_parquet_write_keeps_old_file(tmp_path):
    path = tmp_path / "t.parquet"
    df = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    atomic.write_parquet(path, df)
    with pytest.raises(Exception):  # noqa: B017 - pyarrow's own conversion error
        atomic.write_parquet(path, pd.DataFrame({"a": [1, "mixed", 2.5, object()]}))
    pd.testing.assert_frame_equal(pd.read_parquet(path), df)
    assert _names(tmp_path) == ["t.parquet"]


def test_replace_dir_swaps_and_restores(tmp_path):
    dest = tmp_path / "ckpt"

    def fill(text):
        return lambda folder: (folder / "w.txt").write_text(text)

    assert atomic.replace_dir(dest, fill("one")) == dest
    atomic.replace_dir(dest, fill("two"))
    assert (dest / "w.txt").read_text() == "two"

    def broken(folder):
        (folder / "w.txt").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        atomic.replace_dir(dest, broken)
    assert (dest / "w.txt").read_text() == "two"
    assert _names(tmp_path) == ["ckpt"]


def test_locked_serialises_read_modify_write(tmp_path):
    counter, lock = tmp_path / "n", tmp_path / ".lock"
    counter.write_text("0")

    def bump():
        for _ in range(20):
            with atomic.locked(lock):
                n = int(counter.read_text())
                time.sleep(0.0005)
                atomic.write_text(counter, str(n + 1))

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counter.read_text() == "80"


def test_append_line(tmp_path):
    log = tmp_path / "log.txt"
    atomic.append_line(log, "one")
    atomic.append_line(log, "two\n")
    assert log.read_text() == "one\ntwo\n"
