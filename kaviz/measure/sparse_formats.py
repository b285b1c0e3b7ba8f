"""Sparse weights in the formats inference can use: CSR on disk (:func:`save_sparse`,
:func:`load_sparse`: values and int32 indices in a safetensors file), CSR in memory
(:class:`CSRLinear`, :func:`sparse_linear_model`) and 2:4 semi-structured on CUDA
(:func:`semi_structured_model`). :mod:`kaviz.measure.inference` times and sizes them.
"""

from __future__ import annotations

import contextlib
import copy
import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from kaviz.core.structure import oriented, prunable_linears

_CSR_META = "kaviz_csr"  # safetensors metadata key: JSON {weight key: [rows, cols]}
_VALUES, _COLS, _ROWS = ".csr_values", ".csr_col_indices", ".csr_crow_indices"


@contextlib.contextmanager
def _quiet_csr() -> Iterator[None]:
    """Silence torch's 'Sparse CSR tensor support is in beta' notice (once per process otherwise)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        yield


def _plain_state(model: nn.Module, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """CPU state dict safetensors can write: no shared storage, contiguous, floats cast to ``dtype``."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        if v.untyped_storage().data_ptr() in seen or v.numel() * v.element_size() != v.untyped_storage().nbytes():
            v = v.clone()
        seen.add(v.untyped_storage().data_ptr())
        out[k] = v.contiguous()
    return out


def save_sparse(model: nn.Module, path: str | Path, *, dtype: torch.dtype | None = None) -> Path:
    """Write the state dict to ``path`` (safetensors), each prunable encoder weight as CSR when
    that takes fewer bytes than dense: ``<key>.csr_values`` (nnz,), ``<key>.csr_col_indices`` int32
    (nnz,), ``<key>.csr_crow_indices`` int32 (rows + 1,); shapes in the ``kaviz_csr`` metadata.
    Floating tensors are cast to ``dtype`` first (e.g. ``torch.float16``). Read with :func:`load_sparse`."""
    state = _plain_state(model, dtype)
    shapes: dict[str, list[int]] = {}
    for name in prunable_linears(model):
        key = f"{name}.weight"
        w = state[key]  # (out, in)
        nnz = int(torch.count_nonzero(w))
        csr_bytes = nnz * (w.element_size() + 4) + (w.shape[0] + 1) * 4
        if nnz >= 2**31 or csr_bytes >= w.numel() * w.element_size():
            continue  # dense is smaller (or int32 column indices cannot address it)
        with _quiet_csr():
            csr = w.to_sparse_csr()
        del state[key]
        state[key + _VALUES] = csr.values().contiguous()  # (nnz,)
        state[key + _COLS] = csr.col_indices().to(torch.int32)  # (nnz,)
        state[key + _ROWS] = csr.crow_indices().to(torch.int32)  # (rows + 1,)
        shapes[key] = list(w.shape)
    save_file(state, str(path), metadata={_CSR_META: json.dumps(shapes)})
    return Path(path)


def load_sparse(path: str | Path) -> dict[str, torch.Tensor]:
    """The dense state dict (CPU tensors) of a file written by :func:`save_sparse`."""
    with safe_open(str(path), framework="pt") as f:
        shapes = json.loads((f.metadata() or {}).get(_CSR_META, "{}"))
    state = load_file(str(path))
    for key, shape in shapes.items():
        values, cols, rows = (state.pop(key + s) for s in (_VALUES, _COLS, _ROWS))
        with _quiet_csr():  # invariants checked: the file may be damaged
            csr = torch.sparse_csr_tensor(rows.long(), cols.long(), values, tuple(shape), check_invariants=True)
        state[key] = csr.to_dense()
    return state


class CSRLinear(nn.Module):
    """``y = x @ W.T + b`` with ``W`` (out, in) held as a ``torch.sparse_csr`` buffer (for timing).

    Computed as ``addmm(b, W, x.T).T``: sparse-times-dense with the sparse matrix on the left is
    the fast CSR path on CPU (MKL); ``F.linear(x, W_csr)`` is several times slower."""

    def __init__(self, linear: nn.Module):
        super().__init__()
        weight = oriented(linear).detach()  # (out, in), also for a Conv1D
        self.out_features, self.in_features = weight.shape
        with _quiet_csr():
            w = weight.contiguous().to_sparse_csr()  # int32 indices: 8 bytes per fp32 non-zero, not 12
            rows, cols = w.crow_indices().int(), w.col_indices().int()
            w = torch.sparse_csr_tensor(rows, cols, w.values(), w.shape, check_invariants=False)
            self.register_buffer("weight_csr", w)
        self.register_buffer("bias", linear.bias.detach().clone() if linear.bias is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, self.in_features)  # (N, in)
        b = self.bias[:, None] if self.bias is not None else torch.zeros((), dtype=x.dtype, device=x.device)
        y = torch.addmm(b, self.weight_csr, x2.T)  # (out, N)
        return y.T.reshape(*x.shape[:-1], self.out_features)  # (..., out)


def _sparse_names(model: nn.Module, min_sparsity: float) -> list[str]:
    with torch.no_grad():
        return [n for n, lin in prunable_linears(model).items()
                if 1.0 - int(torch.count_nonzero(lin.weight)) / lin.weight.numel() >= min_sparsity]  # fmt: skip


def sparse_linear_model(model: nn.Module, min_sparsity: float = 0.5) -> nn.Module:
    """A deep copy of ``model`` whose prunable encoder linears with at least ``min_sparsity`` zeros
    (fraction in [0, 1]) are :class:`CSRLinear`. Same outputs as the dense model up to float
    rounding; only meant for timing (no gradients, no ``.weight``). ``model`` is not modified."""
    if not 0.0 <= min_sparsity <= 1.0:
        raise ValueError(f"min_sparsity must be in [0, 1], got {min_sparsity}")
    names = _sparse_names(model, min_sparsity)
    out = copy.deepcopy(model)
    lins = prunable_linears(out)
    for name in names:
        parent, _, attr = name.rpartition(".")
        setattr(out.get_submodule(parent), attr, CSRLinear(lins[name]))
    return out


def _is_2to4(w: torch.Tensor) -> bool:
    return w.shape[-1] % 4 == 0 and bool(((w.detach() != 0).reshape(-1, 4).sum(1) <= 2).all())


def semi_structured_model(model: nn.Module) -> tuple[nn.Module, int]:
    """A deep copy of ``model`` (on CUDA) whose 2:4-sparse prunable linears hold their weight as
    ``torch.sparse.to_sparse_semi_structured`` tensors, and how many were converted. Raises what
    torch raises where the GPU, dtype or shapes are unsupported (e.g. float32 or small matrices)."""
    from torch.sparse import to_sparse_semi_structured

    out = copy.deepcopy(model)
    n = 0
    for lin in prunable_linears(out).values():
        if isinstance(lin, nn.Linear) and _is_2to4(lin.weight):
            lin.weight = nn.Parameter(to_sparse_semi_structured(lin.weight.detach()), requires_grad=False)
            n += 1
    return out, n
