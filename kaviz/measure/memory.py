"""A memory model of capture and analysis: bytes as a function of layers, width, heads, probe
examples and tokens, in memory or streamed to disk (the README's "Memory model").

With L layers, width d, H heads, n probe examples padded to T tokens, C classes, b bytes per stored
element (4 float32, 2 float16), capture batch B and P = n·H·T² (one layer's attention maps):

* a capture holds pooled features 2(L+1)·n·d·b, logits n·C·b and the mask 8·n·T; in memory also
  the attention maps L·P·b and, when asked for, the token states (L+1)·n·T·d·b (at most: real tokens
  only); streamed, the maps and token states are on disk instead;
* a capture's forward pass needs, per batch, every layer's float32 maps plus three more layers'
  worth of temporaries, and the hidden states: 4·[(L+3)·B·H·T² + (L+1)·B·T·d]; streamed, the
  batch's maps are also staged for the sink: + L·B·H·T²·b;
* attention metrics work on blocks of rows (:data:`kaviz.measure.attention.BLOCK_ELEMENTS`), about
  6 float64 copies of one block: 48·min(n, max(1, ⌊BLOCK/(H·T²)⌋))·H·T²; streamed, one layer of
  each of the two models compared is read back first: 2·P·b plus one batch chunk B·H·T²·b.

The analyser holds the unit's capture and its references' (``1 + references`` captures); its peak is
the larger of capturing the last of them and computing the metrics.  Model weights and the runtime
are not counted.  Checked against measured peaks in tests/test_memory.py.
"""

from __future__ import annotations

import torch

from kaviz.measure import attention

_MASK_BYTES = 8  # int64 attention mask
_FORWARD_TEMP_LAYERS = 3  # softmax / masked copies of one layer's maps next to the model's outputs
_METRIC_COPIES = 6  # float64 copies of one block of maps in attention_table (p, q, their mean, products)


def _bytes_per(dtype: torch.dtype | int) -> int:
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        return dtype.itemsize
    if isinstance(dtype, bool) or not isinstance(dtype, int) or dtype < 1:
        raise ValueError(f"dtype must be a torch.dtype or a positive byte count, got {dtype!r}")
    return dtype


def _positive(**sizes: int) -> None:
    for name, v in sizes.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


def capture_bytes(
    layers: int,
    width: int,
    heads: int,
    examples: int,
    tokens: int,
    *,
    dtype: torch.dtype | int = torch.float32,
    streamed: bool = False,
    attentions: bool = True,
    token_states: bool = False,
    classes: int = 2,
) -> int:
    """Bytes one :class:`~kaviz.measure.capture.Captured` holds in memory (what :func:`capture` returns).

    ``tokens`` is the probe's padded length T; ``dtype`` the capture dtype (or bytes per element);
    ``streamed``: maps and token states went to a sink. Token states are counted as n·T rows (an
    upper bound: only real tokens are kept).
    """
    _positive(layers=layers, width=width, heads=heads, examples=examples, tokens=tokens, classes=classes)
    b, L, n, T = _bytes_per(dtype), layers, examples, tokens
    total = (2 * (L + 1) * n * width + n * classes) * b + _MASK_BYTES * n * T
    if not streamed:
        if attentions:
            total += L * n * heads * T * T * b
        if token_states:
            total += (L + 1) * n * T * width * b
    return total


def forward_bytes(
    layers: int,
    width: int,
    heads: int,
    batch_size: int,
    tokens: int,
    *,
    dtype: torch.dtype | int = torch.float32,
    streamed: bool = False,
) -> int:
    """Transient bytes of one capture batch: the model's float32 outputs and the collector's copies
    (streamed, also the batch's maps staged for the sink, in ``dtype``)."""
    _positive(layers=layers, width=width, heads=heads, batch_size=batch_size, tokens=tokens)
    per_layer = batch_size * heads * tokens * tokens
    total = 4 * ((layers + _FORWARD_TEMP_LAYERS) * per_layer + (layers + 1) * batch_size * tokens * width)
    return total + (layers * per_layer * _bytes_per(dtype) if streamed else 0)


def metric_bytes(
    heads: int,
    examples: int,
    tokens: int,
    *,
    dtype: torch.dtype | int = torch.float32,
    streamed: bool = False,
    batch_size: int = 32,
    block_elements: int | None = None,
) -> int:
    """Transient bytes of one layer pair's attention metrics: the float64 blocks of
    :func:`~kaviz.measure.attention.attention_table`, plus, streamed, the two layers read back."""
    _positive(heads=heads, examples=examples, tokens=tokens, batch_size=batch_size)
    block = attention.BLOCK_ELEMENTS if block_elements is None else block_elements
    per_row = heads * tokens * tokens
    rows = min(examples, max(1, block // per_row))
    total = _METRIC_COPIES * 8 * rows * per_row
    if streamed:
        b = _bytes_per(dtype)
        total += 2 * examples * per_row * b + min(batch_size, examples) * per_row * b
    return total


def analysis_peak_bytes(
    layers: int,
    width: int,
    heads: int,
    examples: int,
    tokens: int,
    *,
    dtype: torch.dtype | int = torch.float32,
    streamed: bool = False,
    batch_size: int = 32,
    references: int = 2,
    classes: int = 2,
    block_elements: int | None = None,
) -> int:
    """Peak bytes of analysing one unit against ``references`` models (2 for a pruned student: the
    fine-tuned and the pre-trained model), all of the same shape: ``1 + references`` captures held,
    plus the larger of one capture batch's forward pass and one layer pair's metrics."""
    if isinstance(references, bool) or not isinstance(references, int) or references < 0:
        raise ValueError(f"references must be a non-negative integer, got {references!r}")
    held = (1 + references) * capture_bytes(
        layers, width, heads, examples, tokens, dtype=dtype, streamed=streamed, classes=classes
    )
    work = max(
        forward_bytes(layers, width, heads, min(batch_size, examples), tokens, dtype=dtype, streamed=streamed),
        metric_bytes(
            heads,
            examples,
            tokens,
            dtype=dtype,
            streamed=streamed,
            batch_size=batch_size,
            block_elements=block_elements,
        ),
    )
    return held + work
