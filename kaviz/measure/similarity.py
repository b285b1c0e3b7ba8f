"""Representation similarity: CKA variants, all-pairs CKA, and (from :mod:`kaviz.measure.cca`) Procrustes, SVCCA, PWCCA.

Rules shared by every function here (attention maps live in :mod:`kaviz.measure.attention`):

* A representation is an ``(n, d)`` tensor: n examples (rows, e.g. tokens) by d features. Two
  representations must have the same n, in the same order; widths may differ. Any real dtype
  (float16/bfloat16/float32/float64) on any device; results are computed on the inputs' device.
* Arithmetic is float64 after column-centring. Scalar metrics return a Python ``float``;
  :func:`cka_matrix` returns a float64 tensor. ``cka_matrix(..., dtype=torch.float32)`` runs the
  big products in float32 but still accumulates the pair sums in float64.
* Direction: ``HIGHER_IS_SIMILAR[name]``. Every similarity is in [0, 1] (clamped to that range
  against rounding); ``procrustes`` is a distance in [0, 2].
* Zero-variance rule: a representation whose column-centred values are all zero (every row
  identical, e.g. a fully pruned layer emitting a constant) has no geometry to compare. Any
  similarity involving it (itself included) is 0.0 and its Procrustes distance is 2.0, never NaN.
  "All zero" means centred Frobenius norm <= ``kaviz.measure.reps.ZERO_VAR_RTOL`` x the uncentred one.
* ValueError for a non-2-D or non-finite input, a row-count mismatch (naming both shapes), too
  few rows for the estimator, or an unknown metric name (listing the known ones).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

# attention-map metrics live in their own module; re-exported so kaviz.measure.similarity is the one entry point
from kaviz.measure.attention import (  # noqa: F401
    attention_cosine,
    attention_entropy,
    attention_js,
    attention_kl,
    attention_table,
)
from kaviz.measure.cca import procrustes, procrustes_similarity, pwcca, svcca  # noqa: F401  (listed in METRICS)
from kaviz.measure.reps import _F64, _centre, _check_rep, _check_same_rows, _f64, _pair, _unit

Metric = Callable[..., float]  # (x (n, d1), y (n, d2), **options) -> float


# ---------------------------------------------------------------- kernels and HSIC


def gram_linear(x: torch.Tensor) -> torch.Tensor:
    """Linear Gram matrix ``x xᵀ`` of an ``(n, d)`` representation -> ``(n, n)`` float64."""
    _check_rep(x, "x")
    x = _f64(x, "x")
    return x @ x.T  # (n, n)


def gram_rbf(x: torch.Tensor, sigma_frac: float = 0.8) -> torch.Tensor:
    """RBF Gram ``exp(-||x_i - x_j||² / (2 σ²))`` of an ``(n, d)`` representation -> ``(n, n)`` float64.

    σ = ``sigma_frac`` x the median Euclidean distance over distinct pairs i < j (Kornblith et
    al.'s code takes the median of squared distances with the zero diagonal included; this uses
    the pairs only). If more than half the pairs coincide (median 0) the median of the non-zero
    distances is used; if every row is identical all distances are 0 and σ = 1.
    """
    _check_rep(x, "x")
    if not sigma_frac > 0:
        raise ValueError(f"sigma_frac must be > 0, got {sigma_frac}")
    x = _f64(x, "x")
    xc = x - x.mean(0, keepdim=True)  # (n, d), centring leaves distances unchanged
    sq = (xc * xc).sum(1)  # (n,)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (xc @ xc.T)).clamp_min_(0.0)  # (n, n) squared distances
    d2.fill_diagonal_(0.0)
    sigma = sigma_frac * _median_pair_distance(d2)
    return torch.exp(-d2 / (2.0 * sigma**2))  # (n, n)


def _median_pair_distance(d2: torch.Tensor) -> float:
    """Median distance over pairs i < j from the (n, n) squared-distance matrix with zero diagonal.

    Each pair appears twice off the diagonal, so the pair median is the mean of the two middle
    off-diagonal values; the n diagonal zeros are the n smallest entries and are skipped.
    """
    n = d2.shape[0]
    if n < 2:
        return 1.0
    flat = d2.reshape(-1)  # (n²,)
    m = n * (n - 1) // 2
    lo = torch.kthvalue(flat, n + m).values.sqrt()
    hi = torch.kthvalue(flat, n + m + 1).values.sqrt()
    med = float((lo + hi) / 2)
    if med > 0:
        return med
    nonzero = flat[flat > 0].sqrt()
    return float(nonzero.median()) if nonzero.numel() else 1.0


def _centre_gram(k: torch.Tensor) -> torch.Tensor:
    """H K H with H = I - 11ᵀ/n, for an ``(n, n)`` Gram, without forming H."""
    return k - k.mean(0, keepdim=True) - k.mean(1, keepdim=True) + k.mean()  # (n, n)


def _check_grams(gram_x: torch.Tensor, gram_y: torch.Tensor, min_n: int) -> tuple[torch.Tensor, torch.Tensor]:
    for name, g in (("gram_x", gram_x), ("gram_y", gram_y)):
        if not isinstance(g, torch.Tensor) or g.ndim != 2 or g.shape[0] != g.shape[1]:
            raise ValueError(f"{name} must be a square (n, n) Gram matrix, got {getattr(g, 'shape', type(g))}")
    if gram_x.shape != gram_y.shape:
        raise ValueError(f"Gram matrices must match, got gram_x {tuple(gram_x.shape)} and gram_y {tuple(gram_y.shape)}")
    if gram_x.shape[0] < min_n:
        raise ValueError(f"need n >= {min_n}, got Gram matrices of shape {tuple(gram_x.shape)}")
    return _f64(gram_x, "gram_x"), _f64(gram_y, "gram_y")


def hsic(gram_x: torch.Tensor, gram_y: torch.Tensor) -> float:
    """Biased HSIC (Gretton et al. 2005) of ``(n, n)`` Grams K = gram_x, L = gram_y: tr(K H L H) / (n - 1)²."""
    k, m = _check_grams(gram_x, gram_y, 2)
    n = k.shape[0]
    return float((_centre_gram(k) * m.T).sum() / (n - 1) ** 2)


def unbiased_hsic(gram_x: torch.Tensor, gram_y: torch.Tensor) -> float:
    """Unbiased HSIC_1 (Song et al. 2012, eq. 5) of two ``(n, n)`` Grams, n >= 4.

    With K̃, L̃ = gram_x, gram_y with zeroed diagonals:
    [tr(K̃L̃) + 1ᵀK̃1 · 1ᵀL̃1 / ((n-1)(n-2)) - 2/(n-2) · 1ᵀK̃L̃1] / (n(n-3)).
    """
    k, m = _check_grams(gram_x, gram_y, 4)
    n = k.shape[0]
    k = k.clone().fill_diagonal_(0.0)  # (n, n)
    m = m.clone().fill_diagonal_(0.0)  # (n, n)
    trace = (k * m.T).sum()
    cross = k.sum(0) @ m.sum(1)  # 1ᵀ K̃ L̃ 1
    return float((trace + k.sum() * m.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * cross) / (n * (n - 3)))


# ---------------------------------------------------------------- CKA


def _use_gram(n: int, d1: int, d2: int) -> bool:
    """Gram form costs ~n²(d1 + d2), feature form ~n(d1² + d2² + d1 d2): pick the cheaper."""
    return n * (d1 + d2 + 3) < d1 * d1 + d2 * d2 + d1 * d2


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA (Kornblith et al. 2019) of ``x`` (n, d1) and ``y`` (n, d2), in [0, 1].

    ||Ycᵀ Xc||²_F / (||Xcᵀ Xc||_F ||Ycᵀ Yc||_F) on column-centred X, Y, or equivalently
    <K, L>_F / (||K||_F ||L||_F) with K = Xc Xcᵀ (n x n): whichever needs fewer flops.
    """
    (xc, zx), (yc, zy) = _pair(x, y)
    if zx or zy:
        return 0.0
    if _use_gram(xc.shape[0], xc.shape[1], yc.shape[1]):
        kx, ky = xc @ xc.T, yc @ yc.T  # (n, n), (n, n)
        return _unit((kx * ky).sum() / (torch.linalg.norm(kx) * torch.linalg.norm(ky)))
    cross = torch.linalg.norm(yc.T @ xc) ** 2  # from (d2, d1)
    return _unit(cross / (torch.linalg.norm(xc.T @ xc) * torch.linalg.norm(yc.T @ yc)))


def rbf_cka(x: torch.Tensor, y: torch.Tensor, sigma_frac: float = 0.8) -> float:
    """RBF-kernel CKA of ``x`` (n, d1), ``y`` (n, d2) in [0, 1]: biased HSIC of centred RBF Grams
    (bandwidth per :func:`gram_rbf`), HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)). Memory O(n²)."""
    (xc, zx), (yc, zy) = _pair(x, y)
    if zx or zy:
        return 0.0
    kc, lc = _centre_gram(gram_rbf(xc, sigma_frac)), _centre_gram(gram_rbf(yc, sigma_frac))  # (n, n) each
    den = torch.linalg.norm(kc) * torch.linalg.norm(lc)
    return _unit((kc * lc).sum() / den) if float(den) > 0 else 0.0


def minibatch_cka(x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024, seed: int = 0) -> float:
    """Minibatch linear CKA (Nguyen, Raghu & Kornblith 2021) of ``x`` (n, d1), ``y`` (n, d2).

    mean_b HSIC_1(K_b, L_b) / sqrt(mean_b HSIC_1(K_b, K_b) · mean_b HSIC_1(L_b, L_b)) over
    minibatches b with unbiased HSIC_1 (:func:`unbiased_hsic`) of linear Grams. Rows are shuffled
    by ``torch.randperm(n, generator=torch.Generator().manual_seed(seed))`` and cut into
    ``n // batch_size`` consecutive batches; the last ``n % batch_size`` shuffled rows are dropped
    (one batch of all n rows if n <= batch_size). Only one batch is copied to float64 at a time:
    extra memory is about 8 bytes x (2 batch_size (d1 + d2) + 2 batch_size²) (batch copies and
    Gram row blocks, the latter capped at 256 MiB; or d x d products in the feature form when
    cheaper), independent of n. A mean self-HSIC <= 0 gives 0.0.
    """
    return float(cka_matrix([x], [y], kind="minibatch", batch_size=batch_size, seed=seed)[0, 0])


def unbiased_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Full-batch CKA from unbiased HSIC_1 (Song et al. 2012) of linear Grams: one batch of all n rows."""
    _check_rep(x, "x")
    return minibatch_cka(x, y, batch_size=x.shape[0])


# ---------------------------------------------------------------- registry


METRICS: dict[str, Metric] = {
    "linear_cka": linear_cka,
    "rbf_cka": rbf_cka,
    "unbiased_cka": unbiased_cka,
    "minibatch_cka": minibatch_cka,
    "procrustes_similarity": procrustes_similarity,
    "procrustes": procrustes,
    "svcca": svcca,
    "pwcca": pwcca,
}
HIGHER_IS_SIMILAR: dict[str, bool] = {name: name != "procrustes" for name in METRICS}


def resolve_metric(metric: str | Metric) -> Metric:
    """A METRICS name or a callable ``(x (n, d1), y (n, d2)) -> float`` -> the callable."""
    if callable(metric):
        return metric
    if metric not in METRICS:
        raise ValueError(f"unknown similarity metric {metric!r}; known: {', '.join(METRICS)}")
    return METRICS[metric]


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
