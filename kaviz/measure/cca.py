"""Orthogonal Procrustes distance, SVCCA and PWCCA between two representations (the rules of
:mod:`kaviz.measure.similarity` apply; that module re-exports these and lists them in ``METRICS``)."""

from __future__ import annotations

import torch

from kaviz.measure.reps import _F64, _pair, _row_space, _unit


def procrustes_similarity(x: torch.Tensor, y: torch.Tensor) -> float:
    """||X̂ᵀ Ŷ||_* in [0, 1] for centred, Frobenius-normalised X̂ (n, d1), Ŷ (n, d2)."""
    (xc, zx), (yc, zy) = _pair(x, y)
    if zx or zy:
        return 0.0
    xr, yr = _row_space(xc / torch.linalg.norm(xc)), _row_space(yc / torch.linalg.norm(yc))
    return _unit(torch.linalg.svdvals(xr.T @ yr).sum())


def procrustes(x: torch.Tensor, y: torch.Tensor) -> float:
    """Orthogonal Procrustes distance of Ding et al. 2021, in [0, 2] (0 = identical up to rotation).

    2 - 2 ||X̂ᵀŶ||_* on centred, Frobenius-normalised X̂, Ŷ; equal to min over orthogonal R of
    ||X̂ R - Ŷ||²_F (the narrower one zero-padded when widths differ).
    """
    return 2.0 - 2.0 * procrustes_similarity(x, y)


def _svd_basis(xc: torch.Tensor, keep: float, max_dims: int) -> torch.Tensor:
    """Orthonormal ``(n, k)`` basis of the top singular directions of centred ``xc`` (n, d).

    k = fewest directions whose variance share reaches ``keep``, capped by the numerical rank
    and ``max_dims``.
    """
    u, s, _ = torch.linalg.svd(xc, full_matrices=False)  # u (n, r), s (r,)
    rank = int((s > s[0] * max(xc.shape) * torch.finfo(_F64).eps).sum())
    share = torch.cumsum(s * s, 0) / (s * s).sum()  # (r,)
    k = int((share < keep - 1e-12).sum()) + 1
    return u[:, : max(1, min(k, rank, max_dims))]  # (n, k)


def _cca_inputs(
    x: torch.Tensor, y: torch.Tensor, keep: float, rows_per_dim: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None:
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    if not rows_per_dim >= 1.0:
        raise ValueError(f"rows_per_dim must be >= 1, got {rows_per_dim}")
    (xc, zx), (yc, zy) = _pair(x, y, min_rows=3)
    if zx or zy:
        return None
    max_dims = max(1, int(x.shape[0] / rows_per_dim))
    return xc, yc, _svd_basis(xc, keep, max_dims), _svd_basis(yc, keep, max_dims)


def svcca(x: torch.Tensor, y: torch.Tensor, keep: float = 0.99, rows_per_dim: float = 5.0) -> float:
    """SVCCA (Raghu et al. 2017) of ``x`` (n, d1), ``y`` (n, d2): mean canonical correlation, in [0, 1].

    Each side keeps its top singular directions explaining ``keep`` of the variance, at most
    ``n // rows_per_dim`` of them (the n < d rule: CCA of k directions from n rows drifts to all
    ones as k -> n, so dimensions are reduced, highest variance first, to keep >= rows_per_dim
    rows per dimension). Mean of the min(k_x, k_y) canonical correlations.
    """
    parts = _cca_inputs(x, y, keep, rows_per_dim)
    if parts is None:
        return 0.0
    _, _, ux, uy = parts
    return _unit(torch.linalg.svdvals(ux.T @ uy).clamp(0.0, 1.0).mean())


def pwcca(x: torch.Tensor, y: torch.Tensor, rows_per_dim: float = 5.0) -> float:
    """Projection-weighted CCA (Morcos et al. 2018) of ``x`` (n, d1), ``y`` (n, d2), in [0, 1].

    CCA on all numerically non-zero directions (capped as in :func:`svcca`); the canonical
    correlations ρ_i are weighted by α_i = Σ_j |<h_i, z_j>| with h_i the unit canonical variates
    and z_j the centred neurons of the side with fewer CCA directions (x on a tie), normalised
    to sum 1. Not symmetric in x, y. Morcos et al.'s code adds the neuron means back before
    weighting; here neurons are centred, so the weights do not depend on activation offsets.
    """
    parts = _cca_inputs(x, y, 1.0, rows_per_dim)
    if parts is None:
        return 0.0
    xc, yc, ux, uy = parts
    a, rho, bh = torch.linalg.svd(ux.T @ uy, full_matrices=False)  # a (kx, k), rho (k,), bh (k, ky)
    h, z = (ux @ a, xc) if ux.shape[1] <= uy.shape[1] else (uy @ bh.T, yc)  # h (n, k) orthonormal
    alpha = (h.T @ z).abs().sum(1)  # (k,)
    return _unit((alpha * rho.clamp(0.0, 1.0)).sum() / alpha.sum())
