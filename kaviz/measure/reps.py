"""Checks and centring shared by the representation-similarity metrics (:mod:`kaviz.measure.similarity`,
:mod:`kaviz.measure.cca`): see :mod:`kaviz.measure.similarity` for the rules they enforce."""

from __future__ import annotations

from collections.abc import Sequence

import torch

ZERO_VAR_RTOL = 1e-10
_F64 = torch.float64


def _check_rep(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (n, d), got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (n, d), got shape {tuple(x.shape)}")
    if x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"{name} must be a real-valued tensor, got dtype {x.dtype}")


def _f64(x: torch.Tensor, name: str) -> torch.Tensor:
    """``x`` as float64 on its device, rejecting NaN/inf."""
    x = x.detach().to(_F64)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} (shape {tuple(x.shape)}) contains NaN or inf values")
    return x


def _check_same_rows(reps: Sequence[tuple[str, torch.Tensor]], min_rows: int) -> None:
    (name0, x0), *rest = reps
    for name, x in rest:
        if x.shape[0] != x0.shape[0]:
            raise ValueError(
                f"{name0} and {name} must have the same number of rows n, "
                f"got {name0} {tuple(x0.shape)} and {name} {tuple(x.shape)}"
            )
        if x.device != x0.device:
            raise ValueError(f"{name0} is on {x0.device} but {name} is on {x.device}")
    if x0.shape[0] < min_rows:
        raise ValueError(f"need at least {min_rows} rows (examples), got {name0} of shape {tuple(x0.shape)}")


def _pair(
    x: torch.Tensor, y: torch.Tensor, min_rows: int = 2
) -> tuple[tuple[torch.Tensor, bool], tuple[torch.Tensor, bool]]:
    """Validate x (n, d1), y (n, d2) -> (centred float64 x, x has zero variance), same for y."""
    _check_rep(x, "x")
    _check_rep(y, "y")
    _check_same_rows([("x", x), ("y", y)], min_rows)
    return _centre(x, "x"), _centre(y, "y")


def _centre(x: torch.Tensor, name: str = "x") -> tuple[torch.Tensor, bool]:
    """Column-centred float64 copy of ``x`` (n, d) and whether it has zero variance; rejects NaN/inf."""
    xc = x.detach().to(_F64, copy=True)  # (n, d), never aliases the caller's tensor
    mean = xc.mean(0, keepdim=True)  # (1, d); NaN/inf anywhere in a column makes its mean non-finite
    if not bool(torch.isfinite(mean).all()):
        raise ValueError(f"{name} (shape {tuple(x.shape)}) contains NaN or inf values")
    xc.sub_(mean)
    centred = torch.linalg.vector_norm(xc)
    total = (centred**2 + x.shape[0] * mean.square().sum()).sqrt()  # ||x||_F without another pass
    return xc, bool(centred <= ZERO_VAR_RTOL * total)


def _unit(v: torch.Tensor | float) -> float:
    return min(max(float(v), 0.0), 1.0)


def _row_space(xc: torch.Tensor) -> torch.Tensor:
    """``(n, min(n, d))`` matrix Z with Z Zᵀ = xc xcᵀ: same Gram, Frobenius and nuclear norms of
    cross products; used when d > n so that later products are n x n rather than d x d."""
    if xc.shape[1] <= xc.shape[0]:
        return xc
    u, s, _ = torch.linalg.svd(xc, full_matrices=False)  # u (n, n), s (n,)
    return u * s  # (n, n)
