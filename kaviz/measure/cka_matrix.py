"""CKA between every pair of layers in one vectorised pass (:func:`cka_matrix`): the per-layer
Gram matrices (or feature cross-products, when narrower) are formed once and reused for every pair.
The rules of :mod:`kaviz.measure.similarity` hold (float64 accumulation, zero-variance rule, errors).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from kaviz.measure.reps import _F64, _centre, _check_rep, _check_same_rows
from kaviz.measure.similarity import (
    Metric,
    _centre_gram,
    gram_rbf,
    linear_cka,
    minibatch_cka,
    rbf_cka,
    resolve_metric,
    unbiased_cka,
)

# ---------------------------------------------------------------- all pairs


def _matrix_inputs(reps_a: Sequence[torch.Tensor], reps_b: Sequence[torch.Tensor] | None, min_rows: int) -> None:
    named = [(f"reps_a[{i}]", r) for i, r in enumerate(reps_a)]
    named += [(f"reps_b[{j}]", r) for j, r in enumerate(reps_b or [])]
    if not reps_a or (reps_b is not None and not reps_b):
        raise ValueError(f"reps_a and reps_b must be non-empty, got {len(reps_a)} and {len(reps_b or [])}")
    for name, r in named:
        _check_rep(r, name)
    _check_same_rows(named, min_rows)


def _centred_layers(
    reps: Sequence[torch.Tensor], side: str, dtype: torch.dtype
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Column-centred copies in ``dtype`` (each (n, d_i)) and a (L,) bool zero-variance mask."""
    out, zero = [], []
    for i, r in enumerate(reps):
        xc, z = _centre(r, f"reps_{side}[{i}]")
        out.append(xc.to(dtype))
        zero.append(z)
    return out, torch.tensor(zero, device=reps[0].device)


def _linear_matrix(
    xa: list[torch.Tensor], xb: list[torch.Tensor] | None, block_mb: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """<K_i, L_j> (A, B), ||K_i||² (A,), ||L_j||² (B,) for centred layers; xb None means xb = xa.

    Gram form: the n x n Grams are never held whole. Row block r0:r1 of every layer's Gram is
    formed once, from column r0 on (the upper triangle: entries right of the square diagonal part
    count twice, as Grams are symmetric, done by scaling that part by 1/sqrt(2) in place), with
    r1 - r0 as large as ``block_mb`` allows for all layers (blocks widen as they shorten); all
    pairs then come from one (A, ·) @ (·, B) product. About half of each Gram is computed.
    Feature form: one stacked product [X_1 .. X_A]ᵀ Y_j per B layer and squared block sums.
    """
    same, xb = xb is None, xa if xb is None else xb
    n, dev = xa[0].shape[0], xa[0].device
    da, db = [x.shape[1] for x in xa], [y.shape[1] for y in xb]
    la, lb = len(xa), len(xb)
    gram_cost = n * n * (sum(da) + (0 if same else sum(db)) + 2 * la * lb) / 2
    feat_cost = n * (
        sum(a * b for a in da for b in db) / (2 if same else 1) + (0 if same else sum(d * d for d in da + db))
    )
    if feat_cost < gram_cost:
        stack_a = torch.cat(xa, 1)  # (n, ΣdA)
        ends = torch.tensor(da).cumsum(0).tolist()
        cross = torch.zeros(la, lb, dtype=_F64, device=dev)
        for j, y in enumerate(xb):
            top = j + 1 if same else la  # self case: only blocks i <= j, mirrored below
            prod = (stack_a[:, : ends[top - 1]].T @ y).to(_F64)  # (Σ_{i<top} d_i, d_j)
            cross[:top, j] = torch.stack([blk.square().sum() for blk in prod.split(da[:top])])
        if same:
            cross = cross + cross.triu(1).T
            return cross, cross.diagonal().clone(), cross.diagonal().clone()
        norm_a = torch.stack([torch.linalg.norm((x.T @ x).to(_F64)) ** 2 for x in xa])  # (A,)
        norm_b = torch.stack([torch.linalg.norm((y.T @ y).to(_F64)) ** 2 for y in xb])  # (B,)
        return cross, norm_a, norm_b
    sides = (xa,) if same else (xa, xb)
    budget = max(1, int(block_mb * 2**20 / (8 * sum(map(len, sides)))))  # Gram entries per layer per block
    per_layer = min(max(budget, n), n * n)
    buffers = [torch.empty(len(side) * per_layer, dtype=xa[0].dtype, device=dev) for side in sides]
    wide = [torch.empty_like(b, dtype=_F64) if b.dtype != _F64 else b for b in buffers]  # float64 sums
    cross = torch.zeros(la, lb, dtype=_F64, device=dev)
    norm_a = torch.zeros(la, dtype=_F64, device=dev)
    norm_b = torch.zeros(lb, dtype=_F64, device=dev)
    r0 = 0
    while r0 < n:
        r1 = min(n, r0 + max(1, budget // (n - r0)))  # rows r0:r1 against columns r0:n (upper triangle)
        blocks = []
        for side, buf, buf64 in zip(sides, buffers, wide):
            size = len(side) * (r1 - r0) * (n - r0)
            p = buf[:size].view(len(side), r1 - r0, n - r0)  # (L, rows, n - r0)
            for i, x in enumerate(side):
                torch.mm(x[r0:r1], x[r0:].T, out=p[i])  # rows r0:r1 of Gram i from column r0 on
            p64 = p if buf64 is buf else buf64[:size].view_as(p).copy_(p)  # (L, rows, n - r0) float64
            p64[:, :, : r1 - r0] *= 0.5**0.5  # the square diagonal part counts once, the rest twice
            blocks.append(p64.reshape(len(side), -1))  # (L, rows * (n - r0))
        pa, pb = blocks[0], blocks[-1]
        cross += 2.0 * (pa @ pb.T)  # (A, B)
        if not same:
            norm_a += 2.0 * torch.linalg.vector_norm(pa, dim=1) ** 2
            norm_b += 2.0 * torch.linalg.vector_norm(pb, dim=1) ** 2
        r0 = r1
    if same:
        return cross, cross.diagonal().clone(), cross.diagonal().clone()
    return cross, norm_a, norm_b


def _gram_layers(reps: list[torch.Tensor], sigma_frac: float) -> torch.Tensor:
    """Stacked centred RBF Grams (L, n, n), each scaled to unit Frobenius norm (0 if degenerate)."""
    out = []
    for x in reps:
        kc = _centre_gram(gram_rbf(x, sigma_frac))  # (n, n)
        nrm = torch.linalg.norm(kc)
        out.append(kc / nrm if float(nrm) > 0 else kc.zero_())
    return torch.stack(out)  # (L, n, n)


def _minibatch_matrix(
    reps_a: Sequence[torch.Tensor], reps_b: Sequence[torch.Tensor] | None, batch_size: int, seed: int, block_mb: float
) -> torch.Tensor:
    """Minibatch unbiased linear CKA for all pairs (A, B); each layer's batch products formed once.

    With column-centred batch rows (HSIC_1 is shift-invariant for linear kernels) K1 = 0, so with
    k = diag(K): K̃1 = -k, 1ᵀK̃1 = -Σk, tr(K̃L̃) = <K, L> - kᵀl, 1ᵀK̃L̃1 = kᵀl, and Song et al.'s
    HSIC_1 = [<K, L> - (1 + 2/(b-2)) kᵀl + Σk Σl / ((b-1)(b-2))] / (b(b-3)). <K, L> comes from the
    linear all-pairs routine (Gram blocks or feature products), so no b x b Gram is ever held.
    """
    n, dev = reps_a[0].shape[0], reps_a[0].device
    if batch_size < 4:
        raise ValueError(f"unbiased HSIC needs batches of >= 4 rows, got batch_size={batch_size}")
    b = min(batch_size, n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(dev)  # (n,)
    lb = len(reps_a if reps_b is None else reps_b)
    hsic_ab = torch.zeros(len(reps_a), lb, dtype=_F64, device=dev)
    hsic_a, hsic_b = torch.zeros(len(reps_a), dtype=_F64, device=dev), torch.zeros(lb, dtype=_F64, device=dev)
    var_a, var_b = torch.zeros(len(reps_a), dtype=torch.bool, device=dev), torch.zeros(lb, dtype=torch.bool, device=dev)
    c1, c2, scale = 1.0 + 2.0 / (b - 2), 1.0 / ((b - 1) * (b - 2)), 1.0 / (b * (b - 3))
    for start in range(0, n - b + 1, b):
        idx = perm[start : start + b]  # (b,)
        xa, za = _centred_layers([r[idx] for r in reps_a], "a", _F64)  # each (b, d_i)
        xb, zb = (None, za) if reps_b is None else _centred_layers([r[idx] for r in reps_b], "b", _F64)
        cross, norm_a, norm_b = _linear_matrix(xa, xb, block_mb)  # <K_i, L_j> (A, B), ||K_i||² (A,), ||L_j||² (B,)
        ka = torch.stack([(x * x).sum(1) for x in xa])  # (A, b) Gram diagonals
        kb = ka if xb is None else torch.stack([(y * y).sum(1) for y in xb])  # (B, b)
        sa, sb = ka.sum(1), kb.sum(1)  # (A,), (B,)
        hsic_ab += scale * (cross - c1 * (ka @ kb.T) + c2 * sa[:, None] * sb[None, :])
        hsic_a += scale * (norm_a - c1 * (ka * ka).sum(1) + c2 * sa * sa)
        hsic_b += scale * (norm_b - c1 * (kb * kb).sum(1) + c2 * sb * sb)
        var_a |= ~za
        var_b |= ~zb
    ok = var_a[:, None] & var_b[None, :] & (hsic_a[:, None] > 0) & (hsic_b[None, :] > 0)  # (A, B)
    den = (hsic_a.clamp_min(0)[:, None] * hsic_b.clamp_min(0)[None, :]).sqrt()  # (A, B)
    return torch.where(ok, hsic_ab / torch.where(ok, den, 1.0), 0.0)


_FAST_KINDS = {
    "linear": "linear",
    "linear_cka": "linear",
    "rbf": "rbf",
    "rbf_cka": "rbf",
    "unbiased": "unbiased",
    "unbiased_cka": "unbiased",
    "minibatch": "minibatch",
    "minibatch_cka": "minibatch",
}
_FAST_FUNCS = {linear_cka: "linear", rbf_cka: "rbf", unbiased_cka: "unbiased", minibatch_cka: "minibatch"}
_KIND_OPTIONS = {"linear": {}, "rbf": {"sigma_frac": 0.8}, "unbiased": {}, "minibatch": {"batch_size": 1024, "seed": 0}}


def cka_matrix(
    reps_a: Sequence[torch.Tensor],
    reps_b: Sequence[torch.Tensor] | None = None,
    kind: str | Metric = "linear",
    *,
    dtype: torch.dtype = torch.float64,
    block_mb: float = 256.0,
    **options: Any,
) -> torch.Tensor:
    """Similarity of every layer of ``reps_a`` with every layer of ``reps_b`` -> ``(A, B)`` float64.

    ``reps_a``: A tensors ``(n, d_i)``; ``reps_b``: B tensors ``(n, d_j)`` with the same n, or
    None to compare ``reps_a`` with itself (half the work). ``kind``: "linear" (default),
    "rbf", "unbiased", "minibatch" (or their METRICS names / functions) share per-layer work:
    each layer is centred and its Gram (or feature products) formed once, and all pairs come from
    batched products; ``options`` go to the kind (``sigma_frac``; ``batch_size``, ``seed``). Any
    other METRICS name or callable is evaluated pair by pair with ``options``. Entry (i, j)
    equals the scalar metric of (reps_a[i], reps_b[j]), zero-variance rule included. ``dtype``
    (float32/float64) is the precision of the linear kind's matmuls (float32 mainly pays on GPUs);
    the sums of their entries over a Gram are always accumulated in float64. ``block_mb`` bounds
    the working Gram blocks of the linear, unbiased and minibatch kinds in float64 bytes (x 1.5
    with float32); on top, the linear kind holds one centred copy of every layer; "rbf" holds
    (A + B) centred n x n Grams.
    """
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    if not block_mb > 0:
        raise ValueError(f"block_mb must be > 0, got {block_mb}")
    fast = next((v for f, v in _FAST_FUNCS.items() if f is kind), None) if callable(kind) else _FAST_KINDS.get(kind)
    if fast is None:
        metric = resolve_metric(kind)
        _matrix_inputs(reps_a, reps_b, 2)
        others = reps_a if reps_b is None else reps_b
        return torch.tensor(
            [[metric(x, y, **options) for y in others] for x in reps_a], dtype=_F64, device=reps_a[0].device
        )
    unknown = set(options) - set(_KIND_OPTIONS[fast])
    if unknown:
        raise ValueError(
            f"unknown option(s) {sorted(unknown)} for kind {fast!r}; allowed: {sorted(_KIND_OPTIONS[fast])}"
        )
    opts = {**_KIND_OPTIONS[fast], **options}
    _matrix_inputs(reps_a, reps_b, 4 if fast in ("unbiased", "minibatch") else 2)
    if fast == "unbiased":
        return _minibatch_matrix(reps_a, reps_b, reps_a[0].shape[0], 0, block_mb).clamp(0.0, 1.0)
    if fast == "minibatch":
        return _minibatch_matrix(reps_a, reps_b, opts["batch_size"], opts["seed"], block_mb).clamp(0.0, 1.0)
    xa, za = _centred_layers(reps_a, "a", _F64 if fast == "rbf" else dtype)
    xb, zb = (None, za) if reps_b is None else _centred_layers(reps_b, "b", _F64 if fast == "rbf" else dtype)
    if fast == "rbf":
        ga = _gram_layers(xa, opts["sigma_frac"])  # (A, n, n)
        gb = ga if xb is None else _gram_layers(xb, opts["sigma_frac"])  # (B, n, n)
        cross = ga.reshape(len(ga), -1) @ gb.reshape(len(gb), -1).T  # (A, B)
    else:
        cross, sa, sb = _linear_matrix(xa, xb, block_mb)  # (A, B), (A,), (B,)
        cross = cross / (sa[:, None] * sb[None, :]).sqrt().clamp_min(torch.finfo(_F64).tiny)
    ok = ~za[:, None] & ~zb[None, :]  # (A, B)
    return torch.where(ok, cross, 0.0).clamp(0.0, 1.0)
