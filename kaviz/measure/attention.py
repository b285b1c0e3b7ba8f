"""Attention-map similarity per head: Jensen-Shannon, KL, cosine, entropy, and a tidy per-layer table.

Rules shared by every function here:

* Maps are attention *probabilities* ``(batch, heads, T, T)`` (query rows, key columns), any
  float dtype, any device (softmax pre-softmax scores first). ``mask`` is ``(batch, T)``, 1 (or
  True) for real tokens, 0 for padding.
* Only rows of real query tokens count. Each row is restricted to the real key tokens and
  renormalised to sum 1 over them; a row with no mass on real keys is taken as uniform over them.
  Values at padded positions (rows or columns) never affect a result, even NaN.
* Per-row values are averaged over every real query row of the batch, pooled (each real token
  weighs the same, so longer examples weigh more) -> one float64 value per head, shape ``(heads,)``.
* Natural logarithms (nats): JS in [0, ln 2]; entropy of a uniform row over k keys is ln k.
* ValueError for wrong shapes, negative or non-finite probabilities at real positions, or a
  mask with no real token.
* :func:`attention_table` works through each layer in blocks of batch rows (``BLOCK_ELEMENTS`` map
  elements at a time), so its float64 working set stays bounded whatever the probe size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence

import pandas as pd
import torch

PairMetric = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # p, q, mask -> (heads,)
MapMetric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # p, mask -> (heads,)

_F64 = torch.float64
BLOCK_ELEMENTS = 1 << 22  # attention_table works on this many map elements (float64) at a time, about 32 MiB


def _check(p: torch.Tensor, mask: torch.Tensor, name: str) -> None:
    """ValueError unless ``p`` is ``(B, H, T, T)`` and ``mask`` ``(B, T)`` with at least one real token."""
    if not isinstance(p, torch.Tensor) or p.ndim != 4 or p.shape[-1] != p.shape[-2]:
        raise ValueError(f"{name} must have shape (batch, heads, T, T), got {getattr(p, 'shape', type(p))}")
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (p.shape[0], p.shape[-1]):
        raise ValueError(
            f"mask must have shape (batch, T) = {(p.shape[0], p.shape[-1])} to match {name} {tuple(p.shape)}, "
            f"got {getattr(mask, 'shape', type(mask))}"
        )
    if not bool((mask != 0).any()):
        raise ValueError("mask has no real token (all zeros)")


def _normalise(p: torch.Tensor, real: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Renormalised float64 rows ``(B, H, T, T)`` (padded rows/columns zeroed) and row weights ``(B, T)``
    of checked maps ``p`` with ``real`` ``(B, T)`` bool on ``p``'s device (rows of a block may all be padding)."""
    keys = real[:, None, None, :]  # (B, 1, 1, T)
    cell = keys & real[:, None, :, None]  # (B, 1, T, T) real query x real key
    p = torch.where(cell, p.detach().to(_F64), 0.0)  # (B, H, T, T)
    if not bool(torch.isfinite(p).all()):
        raise ValueError(f"{name} has NaN or inf at real positions")
    if bool((p < 0).any()):
        raise ValueError(f"{name} has negative values: expected probabilities (apply softmax to scores first)")
    total = p.sum(-1, keepdim=True)  # (B, H, T, 1)
    uniform = keys.to(_F64) / real.sum(-1).clamp_min(1)[:, None, None, None]  # (B, 1, 1, T)
    return torch.where(total > 0, p / total.clamp_min(torch.finfo(_F64).tiny), uniform), real.to(_F64)


def _prepare(p: torch.Tensor, mask: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_check` then :func:`_normalise` of the whole batch."""
    _check(p, mask, name)
    return _normalise(p, mask.to(p.device) != 0, name)


def _pool(rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean of per-row values ``(B, H, T)`` over real query rows -> ``(H,)``."""
    return (rows * weight[:, None, :]).sum((0, 2)) / weight.sum()


def _pair(p: torch.Tensor, q: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if isinstance(p, torch.Tensor) and isinstance(q, torch.Tensor) and p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape, got p {tuple(p.shape)} and q {tuple(q.shape)}")
    (pn, w), (qn, _) = _prepare(p, mask, "p"), _prepare(q, mask, "q")
    return pn, qn, w


def _rows_js(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    m = 0.5 * (p + q)  # (B, H, T, T)
    kl_pm = (torch.xlogy(p, p) - torch.xlogy(p, m)).sum(-1)  # (B, H, T)
    kl_qm = (torch.xlogy(q, q) - torch.xlogy(q, m)).sum(-1)  # (B, H, T)
    return (0.5 * (kl_pm + kl_qm)).clamp(0.0, math.log(2.0))


def _rows_kl(p: torch.Tensor, q: torch.Tensor, eps: float) -> torch.Tensor:
    return (torch.xlogy(p, p) - torch.xlogy(p, q.clamp_min(eps))).sum(-1).clamp_min(0.0)  # (B, H, T)


def _rows_cosine(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return ((p * q).sum(-1) / (p.norm(dim=-1) * q.norm(dim=-1)).clamp_min(torch.finfo(_F64).tiny)).clamp(0.0, 1.0)


def _rows_entropy(p: torch.Tensor) -> torch.Tensor:
    return -torch.xlogy(p, p).sum(-1)  # (B, H, T)


def attention_js(p: torch.Tensor, q: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence (nats, in [0, ln 2]) of two maps ``(B, H, T, T)`` per head -> ``(H,)``.

    JS(p, q) = ½ KL(p || m) + ½ KL(q || m), m = ½ (p + q), per real query row; symmetric, 0 iff
    the renormalised rows are equal. Lower = more similar.
    """
    pn, qn, w = _pair(p, q, mask)
    return _pool(_rows_js(pn, qn), w)


def attention_kl(p: torch.Tensor, q: torch.Tensor, mask: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """KL(p || q) in nats of two maps ``(B, H, T, T)`` per head -> ``(H,)``; lower = more similar.

    Σ p log(p / max(q, eps)) per real query row, clamped at 0: finite (at most about
    -log(eps)) even where q underflows to 0. Not symmetric.
    """
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    pn, qn, w = _pair(p, q, mask)
    return _pool(_rows_kl(pn, qn, eps), w)


def attention_cosine(p: torch.Tensor, q: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cosine similarity in [0, 1] of two maps' rows ``(B, H, T, T)`` per head -> ``(H,)``; higher = more similar."""
    pn, qn, w = _pair(p, q, mask)
    return _pool(_rows_cosine(pn, qn), w)


def attention_entropy(p: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of a map's rows ``(B, H, T, T)`` per head -> ``(H,)``: ln k for uniform over k keys."""
    pn, w = _prepare(p, mask, "p")
    return _pool(_rows_entropy(pn), w)


ATTENTION_METRICS: dict[str, PairMetric] = {"js": attention_js, "kl": attention_kl, "cosine": attention_cosine}
MAP_METRICS: dict[str, MapMetric] = {"entropy": attention_entropy}
HIGHER_IS_SIMILAR: dict[str, bool] = {"js": False, "kl": False, "cosine": True}

_ROWS: dict[str, Callable[..., torch.Tensor]] = {
    "js": _rows_js,
    "kl": lambda p, q: _rows_kl(p, q, 1e-12),
    "cosine": _rows_cosine,
    "entropy": _rows_entropy,
}


def attention_table(
    maps_a: Sequence[torch.Tensor],
    maps_b: Sequence[torch.Tensor] | None,
    mask: torch.Tensor,
    metrics: Sequence[str | PairMetric] | None = None,
    pruned_heads: Collection[tuple[int, int]] = (),
) -> pd.DataFrame:
    """Per-layer, per-head attention metrics as a tidy DataFrame.

    ``maps_a``, ``maps_b``: one ``(B, H, T, T)`` map per layer for each model (same count and
    shapes), or ``maps_b=None`` for single-map metrics only; ``mask`` ``(B, T)``. ``metrics``:
    names from ATTENTION_METRICS (need ``maps_b``) or MAP_METRICS, or callables
    ``(p, q, mask) -> (H,)`` (reported under their ``__name__``); default: all pair metrics plus
    entropy, or entropy alone without ``maps_b``. A map metric gives rows "<name>_a" (and
    "<name>_b"). ``pruned_heads``: (layer, head) pairs, 0-based, whose maps are not meaningful in
    either model: their rows hold value NaN and ``pruned=True`` instead of numbers.

    Returns columns layer (int), head (int), metric (str), value (float), pruned (bool).
    """
    if maps_b is not None and len(maps_b) != len(maps_a):
        raise ValueError(f"maps_a and maps_b must have one map per layer each, got {len(maps_a)} and {len(maps_b)}")
    if metrics is None:
        metrics = [*ATTENTION_METRICS, *MAP_METRICS] if maps_b is not None else list(MAP_METRICS)
    for m in metrics:
        if isinstance(m, str) and m not in ATTENTION_METRICS and m not in MAP_METRICS:
            known = ", ".join([*ATTENTION_METRICS, *MAP_METRICS])
            raise ValueError(f"unknown attention metric {m!r}; known: {known}")
        if maps_b is None and (callable(m) or m in ATTENTION_METRICS):
            raise ValueError(f"metric {getattr(m, '__name__', m)!r} compares two maps but maps_b is None")
    heads = [int(p.shape[1]) if isinstance(p, torch.Tensor) and p.ndim == 4 else -1 for p in maps_a]
    pruned_set = {(int(layer), int(head)) for layer, head in pruned_heads}
    bad = [lh for lh in pruned_set if not (0 <= lh[0] < len(maps_a) and 0 <= lh[1] < heads[lh[0]])]
    if bad:
        raise ValueError(f"pruned_heads {sorted(bad)} are outside {len(maps_a)} layers x heads {heads}")
    records: list[dict[str, object]] = []
    for layer, p in enumerate(maps_a):
        q = None if maps_b is None else maps_b[layer]
        _check(p, mask, f"maps_a[{layer}]")
        if q is not None:
            _check(q, mask, f"maps_b[{layer}]")
            if q.shape != p.shape:
                raise ValueError(
                    f"maps_a[{layer}] {tuple(p.shape)} and maps_b[{layer}] {tuple(q.shape)} differ in shape"
                )
        values = _pooled_blocks(p, q, mask, [m for m in metrics if not callable(m)], layer)
        for m in metrics:
            if callable(m):
                values[m.__name__] = torch.as_tensor(m(p, q, mask), dtype=_F64).reshape(-1)
        values = {k: values[k] for k in _value_names(metrics, q is not None)}
        for head in range(p.shape[1]):
            pruned = (layer, head) in pruned_set
            for name, v in values.items():
                value = math.nan if pruned else float(v[head])
                records.append({"layer": layer, "head": head, "metric": name, "value": value, "pruned": pruned})
    return pd.DataFrame.from_records(records, columns=["layer", "head", "metric", "value", "pruned"])


def _value_names(metrics: Sequence[str | PairMetric], pair: bool) -> list[str]:
    """The table's metric names in ``metrics`` order ("<map metric>_a", "_b" for a map metric)."""
    names: list[str] = []
    for m in metrics:
        if callable(m):
            names.append(m.__name__)
        elif m in MAP_METRICS:
            names += [f"{m}_a", *([f"{m}_b"] if pair else [])]
        else:
            names.append(m)
    return names


def _pooled_blocks(
    p: torch.Tensor, q: torch.Tensor | None, mask: torch.Tensor, metrics: Sequence[str], layer: int
) -> dict[str, torch.Tensor]:
    """Named metrics of one layer's checked maps ``(B, H, T, T)`` -> ``(H,)`` each, computed over blocks
    of rows so that the float64 working set stays near ``BLOCK_ELEMENTS`` elements per map (the result
    is the same pooled mean as over the whole batch: sums of per-row values over sums of weights)."""
    B, H, T, _ = p.shape
    rows = max(1, BLOCK_ELEMENTS // max(1, H * T * T))
    real_all = mask.to(p.device) != 0  # (B, T)
    sums: dict[str, torch.Tensor] = {}
    weight = torch.zeros((), dtype=_F64, device=p.device)
    for lo in range(0, B, rows):
        real = real_all[lo : lo + rows]  # (b, T)
        pn, w = _normalise(p[lo : lo + rows], real, f"maps_a[{layer}]")
        qn = None if q is None else _normalise(q[lo : lo + rows], real, f"maps_b[{layer}]")[0]
        block: dict[str, torch.Tensor] = {}
        for m in metrics:
            if m in MAP_METRICS:
                block[f"{m}_a"] = _ROWS[m](pn)  # (b, H, T)
                if qn is not None:
                    block[f"{m}_b"] = _ROWS[m](qn)
            else:
                block[m] = _ROWS[m](pn, qn)
        for name, v in block.items():
            s = (v * w[:, None, :]).sum((0, 2))  # (H,)
            sums[name] = s if name not in sums else sums[name] + s
        weight = weight + w.sum()
        del pn, qn, block
    return {name: s / weight for name, s in sums.items()}
