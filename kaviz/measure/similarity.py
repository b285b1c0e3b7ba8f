"""Representation similarity: the CKA variants and the registry of every similarity (CKA here,
Procrustes, SVCCA and PWCCA in :mod:`kaviz.measure.cca`; all layer pairs at once in
:mod:`kaviz.measure.cka_matrix`).

Rules shared by every function here (attention maps live in :mod:`kaviz.measure.attention`):

* A representation is an ``(n, d)`` tensor: n examples (rows, e.g. tokens) by d features. Two
  representations must have the same n, in the same order; widths may differ. Any real dtype
  (float16/bfloat16/float32/float64) on any device; results are computed on the inputs' device.
* Arithmetic is float64 after column-centring. Scalar metrics return a Python ``float``;
  ``cka_matrix`` returns a float64 tensor. ``cka_matrix(..., dtype=torch.float32)`` runs the
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

from collections.abc import Callable

import torch

from kaviz.measure.cca import procrustes, procrustes_similarity, pwcca, svcca  # noqa: F401  (listed in METRICS)
from kaviz.measure.reps import _check_rep, _f64, _pair, _unit

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
    from kaviz.measure.cka_matrix import cka_matrix  # the batched estimator lives with the all-pairs code

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
