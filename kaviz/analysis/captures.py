"""The analyser's captures, and the attention rows computed from them one layer at a time.

A :class:`UnitCapture` keeps a model's pooled features (``cls``, ``mean``: small) in memory and its
attention maps either in memory or streamed to a folder by a
:class:`~kaviz.measure.capture.CaptureSink`; :meth:`UnitCapture.maps` hands out one layer's maps
either way, so :func:`pair_attention_rows` and :func:`self_attention_rows` hold one layer of each
model at a time when streamed and give the same numbers as in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kaviz.core.config import AnalysisConfig
from kaviz.core.structure import dims
from kaviz.measure.attention import ATTENTION_METRICS, attention_table
from kaviz.measure.capture import Captured, CaptureReader, CaptureSink, ProbeInputs, capture
from kaviz.measure.memory import analysis_peak_bytes


@dataclass
class UnitCapture:
    """One model's capture: ``captured`` (its ``attentions`` None when streamed) and, when streamed,
    the ``reader`` of the folder holding ``attn.{i}``; ``cleanup`` removes that folder."""

    captured: Captured
    reader: CaptureReader | None = None
    cleanup: Callable[[], None] = field(default=lambda: None, repr=False)

    @property
    def n_layers(self) -> int:
        return self.captured.n_layers

    @property
    def has_maps(self) -> bool:
        return self.captured.attentions is not None or self.reader is not None

    def map_shape(self, i: int) -> tuple[int, ...]:
        """Shape ``(n, H, T, T)`` of layer ``i+1``'s maps (``T`` the probe's length), without loading them."""
        if self.captured.attentions is not None:
            return tuple(self.captured.attentions[i].shape)
        n, t = self.captured.mask.shape
        return (n, self._reader().shape(f"attn.{i}")[1], t, t)

    def maps(self, i: int) -> Tensor:
        """Layer ``i+1``'s attention probabilities ``(n, H, T, T)``, padded rows/columns 0; read from
        disk when streamed (only this layer, in the capture's dtype)."""
        if self.captured.attentions is not None:
            return self.captured.attentions[i]
        a = self._reader().cat(f"attn.{i}")  # (n, H, t, t), t the longest batch
        t = self.captured.mask.shape[1]
        return a if a.shape[-1] == t else F.pad(a, (0, t - a.shape[-1], 0, t - a.shape[-2]))

    def _reader(self) -> CaptureReader:
        if self.reader is None:
            raise ValueError("this capture kept no attention maps")
        return self.reader


def wants_streaming(
    acfg: AnalysisConfig, model: nn.Module, probe: ProbeInputs, *, dtype: torch.dtype, classes: int
) -> tuple[bool, int | None]:
    """(stream?, predicted in-memory peak bytes or None): ``acfg.stream`` 'always' / 'never', or for
    'auto' whether :func:`~kaviz.measure.memory.analysis_peak_bytes` of one unit against two references
    shaped like ``model`` exceeds ``acfg.stream_above_gib``."""
    if acfg.stream != "auto":
        return acfg.stream == "always", None
    d = dims(model)
    n, t = probe.input_ids.shape
    need = analysis_peak_bytes(
        d["num_layers"], d["hidden"], d["heads"], n, t, dtype=dtype, batch_size=acfg.batch_size, classes=classes
    )
    return need > acfg.stream_above_gib * 2**30, need


def capture_unit(
    model: nn.Module,
    probe: ProbeInputs,
    *,
    batch_size: int,
    device: torch.device | str | None,
    dtype: torch.dtype,
    folder: Path | None = None,
    cleanup: Callable[[], None] = lambda: None,
) -> UnitCapture:
    """Capture ``model`` on ``probe`` (pooled features, attention maps, no token states); with
    ``folder``, the maps are streamed there batch by batch (stored in ``dtype``) instead of kept."""
    sink = CaptureSink(folder, dtype=dtype) if folder is not None else None
    cap = capture(model, probe, batch_size=batch_size, device=device, dtype=dtype, tokens=False, sink=sink)
    reader = CaptureReader(folder) if folder is not None else None
    return UnitCapture(cap, reader, cleanup)


def _one_layer(heads_pruned: set[tuple[int, int]], layer: int) -> set[tuple[int, int]]:
    """The pruned heads of ``layer`` (0-based) as (0, head), for a one-layer attention_table."""
    return {(0, h) for li, h in heads_pruned if li == layer}


def pair_attention_rows(
    cap: UnitCapture,
    ref: UnitCapture,
    pairs: list[tuple[int, int]],
    mask: Tensor,
    heads_pruned: set[tuple[int, int]],
) -> list[dict]:
    """JS, KL and cosine per head of each layer pair (hidden-state indices ``(i, j)``, ``pairs[0]`` the
    embeddings) -> rows with ``layer`` i, ``ref_layer`` j; none when either model kept no maps or a
    pair's maps differ in shape (e.g. fewer heads).  One layer pair is loaded at a time."""
    if not (cap.has_maps and ref.has_maps):
        return []
    if any(cap.map_shape(i - 1) != ref.map_shape(j - 1) for i, j in pairs[1:]):
        return []
    rows: list[dict] = []
    for i, j in pairs[1:]:
        att = attention_table(
            [cap.maps(i - 1)],
            [ref.maps(j - 1)],
            mask,
            metrics=list(ATTENTION_METRICS),
            pruned_heads=_one_layer(heads_pruned, i - 1),
        )
        att["layer"] = i
        att["ref_layer"] = j
        rows += att.to_dict("records")
    return rows


def self_attention_rows(cap: UnitCapture, mask: Tensor, heads_pruned: set[tuple[int, int]]) -> pd.DataFrame:
    """Attention entropy per head of every layer (``layer`` 1..L), one layer loaded at a time; empty
    when the capture kept no maps."""
    if not cap.has_maps:
        return pd.DataFrame(columns=["layer", "head", "metric", "value", "pruned"])
    parts = []
    for i in range(cap.n_layers):
        ent = attention_table([cap.maps(i)], None, mask, metrics=["entropy"], pruned_heads=_one_layer(heads_pruned, i))
        ent["layer"] = i + 1
        parts.append(ent)
    return pd.concat(parts, ignore_index=True)
