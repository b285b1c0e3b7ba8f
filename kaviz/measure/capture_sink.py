"""Streaming captured tensors to disk: :class:`CaptureSink` writes one safetensors file per batch
and ``index.json`` last; :class:`CaptureReader` reads a finished folder back chunk by chunk
(used through :func:`kaviz.measure.capture.capture`'s ``sink``)."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from kaviz.store.atomic import TMP_PREFIX, write_json

INDEX = "index.json"
FORMAT = "kaviz-capture"
_CHUNK_RE = re.compile(r"chunk_\d{5,}\.safetensors")


# ----- streaming to disk ----------------------------------------------------------------------------------


class CaptureSink:
    """Streams per-batch tensors to ``folder``: one ``chunk_NNNNN.safetensors`` per batch, written
    atomically (temporary file + ``os.replace``), then ``index.json`` last, on :meth:`close`.

    A folder without ``index.json`` is an incomplete capture.  Opening a sink on a folder that holds an
    earlier capture removes its index and chunks first.  Floating tensors are stored in ``dtype``.
    Usable as a context manager: the index is written only when the block exits without an error.
    """

    def __init__(self, folder: str | Path, dtype: torch.dtype = torch.float16):
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        self.folder = Path(folder)
        self.dtype = dtype
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / INDEX).unlink(missing_ok=True)  # the folder is incomplete from now on
        for p in self.folder.iterdir():
            if _CHUNK_RE.fullmatch(p.name):
                p.unlink()
        self._chunks: dict[int, dict[str, Any]] = {}
        self._keys: dict[str, None] = {}
        self._closed = False

    def write(self, batch_index: int, tensors: dict[str, Tensor]) -> None:
        """Write one batch's tensors (any shapes; chunks of one key may differ in every dim)."""
        if self._closed:
            raise ValueError(f"CaptureSink on {self.folder} is closed")
        if isinstance(batch_index, bool) or not isinstance(batch_index, int) or batch_index < 0:
            raise ValueError(f"batch_index must be a non-negative integer, got {batch_index!r}")
        if batch_index in self._chunks:
            raise ValueError(f"batch {batch_index} was already written to {self.folder}")
        if not tensors:
            raise ValueError("nothing to write: tensors is empty")
        data = {}
        for key, t in tensors.items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"tensor keys must be non-empty strings, got {key!r}")
            t = t.detach().to("cpu")
            data[key] = (t.to(self.dtype) if t.is_floating_point() else t).contiguous()
        name = f"chunk_{batch_index:05d}.safetensors"
        fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{name}.", dir=self.folder)
        os.close(fd)
        try:
            save_file(data, tmp)
            os.replace(tmp, self.folder / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._chunks[batch_index] = {"file": name, "shapes": {k: list(v.shape) for k, v in data.items()}}
        self._keys.update(dict.fromkeys(data))

    def close(self) -> None:
        """Write ``index.json`` (keys, concatenated shapes, chunk list), atomically; idempotent."""
        if self._closed:
            return
        chunks = [{"batch": i, **self._chunks[i]} for i in sorted(self._chunks)]
        shapes = {k: _cat_shape([c["shapes"][k] for c in chunks if k in c["shapes"]]) for k in self._keys}
        index = {
            "format": FORMAT,
            "version": 1,
            "dtype": str(self.dtype).removeprefix("torch."),
            "keys": list(self._keys),
            "shapes": shapes,
            "chunks": chunks,
        }
        write_json(self.folder / INDEX, index)
        self._closed = True

    def __enter__(self) -> CaptureSink:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()


def _cat_shape(shapes: list[list[int]]) -> list[int]:
    """Shape of the chunks joined on dim 0, other dims padded to their maximum."""
    first = shapes[0]
    return [sum(s[0] for s in shapes), *(max(s[d] for s in shapes) for d in range(1, len(first)))]


class CaptureReader:
    """Reads a folder written by :class:`CaptureSink`; ``ValueError`` if it is incomplete."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        path = self.folder / INDEX
        if not path.is_file():
            what = "does not exist" if not self.folder.exists() else f"has no {INDEX}"
            raise ValueError(
                f"capture folder {self.folder} {what}: the capture is incomplete (interrupted before "
                "CaptureSink.close()) or this is not a capture folder; capture again"
            )
        try:
            self.index = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"capture index {path} is unreadable: {e}") from e
        if not isinstance(self.index, dict) or self.index.get("format") != FORMAT:
            raise ValueError(f"{path} is not a kaviz capture index (format {FORMAT!r} expected)")
        missing = [c["file"] for c in self.index["chunks"] if not (self.folder / c["file"]).is_file()]
        if missing:
            raise ValueError(f"capture folder {self.folder} is missing chunk file(s): {', '.join(missing[:5])}")

    def keys(self) -> list[str]:
        return list(self.index["keys"])

    def shape(self, key: str) -> tuple[int, ...]:
        """Shape :meth:`cat` returns for ``key``."""
        self._check(key)
        return tuple(self.index["shapes"][key])

    def iter(self, key: str) -> Iterator[Tensor]:
        """``key``'s tensor of each chunk in batch order, loading one at a time (memory-bounded)."""
        self._check(key)
        for chunk in self.index["chunks"]:
            if key in chunk["shapes"]:
                with safe_open(self.folder / chunk["file"], framework="pt") as f:
                    yield f.get_tensor(key)

    def cat(self, key: str) -> Tensor:
        """All chunks of ``key`` joined on dim 0; dims that differ between chunks (an attention map's
        ``T``) are zero-padded at the end to their maximum.  Chunks are copied into the result one at a
        time, so reading a key needs its own size plus one chunk."""
        out: Tensor | None = None
        row = 0
        for p in self.iter(key):
            if out is None:
                out = p.new_zeros(self.shape(key))
            out[(slice(row, row + p.shape[0]), *(slice(0, s) for s in p.shape[1:]))] = p
            row += p.shape[0]
        if out is None:
            raise ValueError(f"capture {self.folder} lists key {key!r} in no chunk; the index is damaged")
        return out

    def _check(self, key: str) -> None:
        if key not in self.index["keys"]:
            raise KeyError(f"no key {key!r} in capture {self.folder}; available: {', '.join(self.index['keys'])}")
