"""What pruning buys at inference: forward latency, peak memory of a forward, bytes on disk.

* Latency: wall seconds of ``model(**batch)`` under ``torch.inference_mode()`` in eval mode,
  median and 10th/90th percentiles over repeats after warm-up (CUDA synchronised around each).
* Memory: peak bytes *allocated during* one forward (activations, workspaces, outputs), above what
  was allocated before it; the model's own tensors are counted apart (``model_bytes``).
* Disk: the state dict as safetensors, dense and with each prunable encoder weight stored as CSR
  (values + int32 column indices + int32 row pointers) where that is smaller; fp32 and fp16.

Variants (:func:`measure_inference`): ``"dense"`` (the model as is, masked weights stored densely;
a structurally shrunk model is measured as dense), ``"sparse"`` (linears >= ``min_sparsity`` sparse
as :class:`CSRLinear`), on CUDA ``"semi-structured"`` (2:4 weights, ``to_sparse_semi_structured``).
Speedups below 1x are reported as they are: sparse kernels are often slower than dense ones.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from kaviz.core.structure import oriented, prunable_linears
from kaviz.train.pruning import sparsity_summary

Variant = Literal["dense", "sparse", "semi-structured"]
VARIANTS: tuple[str, ...] = ("dense", "sparse", "semi-structured")
COLUMNS = [
    "variant", "batch_size", "seq_len", "device", "median_s", "p10_s", "p90_s", "examples_per_s",
    "peak_bytes", "model_bytes", "disk_bytes", "disk_fp16_bytes", "params", "nonzero_params", "note",
]  # fmt: skip
_CSR_META = "kaviz_csr"  # safetensors metadata key: JSON {weight key: [rows, cols]}
_VALUES, _COLS, _ROWS = ".csr_values", ".csr_col_indices", ".csr_crow_indices"


@contextlib.contextmanager
def _quiet_csr() -> Iterator[None]:
    """Silence torch's 'Sparse CSR tensor support is in beta' notice (once per process otherwise)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        yield


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the block; every module's training flag is restored afterwards."""
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags.items():
            m.training = flag


def _device_of(model: nn.Module, batch: dict) -> torch.device:
    for v in batch.values():
        if isinstance(v, torch.Tensor):
            return v.device
    return next(model.parameters()).device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(model: nn.Module, batch: dict, *, warmup: int = 3, repeats: int = 10) -> dict[str, float]:
    """Wall seconds (``time.perf_counter``) of one ``model(**batch)`` in eval mode under inference mode.

    ``warmup`` untimed calls, then ``median_s``, ``p10_s``, ``p90_s``, ``min_s``, ``mean_s`` (seconds)
    over ``repeats`` timed calls. On CUDA the device is synchronised around each call.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    device = _device_of(model, batch)
    times: list[float] = []
    with _eval_mode(model), torch.inference_mode():
        for i in range(warmup + repeats):
            _sync(device)
            t0 = time.perf_counter()
            model(**batch)
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    t = np.asarray(times)  # (repeats,) seconds
    p10, med, p90 = np.percentile(t, [10, 50, 90])
    return {"median_s": float(med), "p10_s": float(p10), "p90_s": float(p90),
            "min_s": float(t.min()), "mean_s": float(t.mean()), "repeats": float(repeats)}  # fmt: skip


def _cpu_peak_bytes(run: Callable[[], object]) -> int | None:
    """Peak of the running sum of the CPU allocator's allocations/frees recorded by the profiler."""
    from torch.profiler import ProfilerActivity, profile

    os.environ.setdefault("KINETO_LOG_LEVEL", "99")  # kineto prints "profiler_start/stop" lines otherwise
    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            run()
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    except (AttributeError, RuntimeError):  # private result API moved, or a profiler already running
        return None
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        if e.device_type() == torch.autograd.DeviceType.CPU:
            live += e.nbytes()  # + allocation, - free
            peak = max(peak, live)
    return peak


def peak_memory(model: nn.Module, batch: dict) -> int | None:
    """Peak bytes allocated during one ``model(**batch)`` (eval, inference mode), above the bytes
    allocated before it: activations, workspaces and outputs. Weights and inputs are not included
    (see :func:`model_bytes`); frees of tensors that existed before the call do not lower the peak.

    * CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus the bytes
      allocated before the call (exact for PyTorch's caching allocator; cached-but-free blocks and
      cuBLAS/cuSPARSE workspaces allocated outside it are not counted).
    * CPU: the peak running sum of the PyTorch profiler's memory events (``profile_memory=True``)
      in time order: every tensor the c10 CPU allocator hands out, not memory that oneDNN/MKL (MKL's
      sparse CSR kernels too) or Python allocate themselves. Reads the profiler's private
      ``kineto_results``; None if that is unavailable or another profiler is active. The first
      profiled call in a process takes seconds. Not the RSS high-water mark (``getrusage``): that
      only moves when a forward exceeds every earlier peak of the process (e.g. model loading).
    """
    device = _device_of(model, batch)

    def run() -> object:
        with _eval_mode(model), torch.inference_mode():
            return model(**batch)

    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run()
        _sync(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    return _cpu_peak_bytes(run)


def _tensor_bytes(t: torch.Tensor) -> int:
    if t.layout == torch.sparse_csr:
        return sum(x.numel() * x.element_size() for x in (t.values(), t.crow_indices(), t.col_indices()))
    parts = [getattr(t, a, None) for a in ("packed", "meta", "packed_t", "meta_t")]  # 2:4 semi-structured
    if any(isinstance(p, torch.Tensor) for p in parts):
        return sum(p.numel() * p.element_size() for p in parts if isinstance(p, torch.Tensor))
    return t.numel() * t.element_size()


def model_bytes(model: nn.Module) -> int:
    """Bytes the model's parameters and buffers occupy in memory (CSR: values + indices)."""
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return sum(_tensor_bytes(t) for t in tensors.values())


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


def disk_sizes(model: nn.Module, tmpdir: str | Path) -> dict[str, int]:
    """Bytes on disk of the model's state dict as safetensors, written into the folder ``tmpdir``:
    ``dense``, ``sparse`` (:func:`save_sparse`), ``dense_fp16``, ``sparse_fp16`` (floats as fp16)."""
    folder = Path(tmpdir)
    folder.mkdir(parents=True, exist_ok=True)
    sizes: dict[str, int] = {}
    for suffix, dtype in (("", None), ("_fp16", torch.float16)):
        dense, sparse = folder / f"dense{suffix}.safetensors", folder / f"sparse{suffix}.safetensors"
        save_file(_plain_state(model, dtype), str(dense))
        save_sparse(model, sparse, dtype=dtype)
        sizes |= {f"dense{suffix}": dense.stat().st_size, f"sparse{suffix}": sparse.stat().st_size}
    return sizes


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


def _build_variant(dense: nn.Module, variant: str, min_sparsity: float) -> tuple[nn.Module | None, str]:
    """(model or None when it does not apply, note)."""
    if variant == "dense":
        return dense, ""
    if variant == "sparse":
        n = len(_sparse_names(dense, min_sparsity))
        if n == 0:
            return None, f"not applicable: no prunable linear is >= {min_sparsity:g} sparse"
        return sparse_linear_model(dense, min_sparsity), f"{n} linears as CSR"
    if _device_of(dense, {}).type != "cuda":
        return None, "not applicable: semi-structured 2:4 kernels need CUDA"
    try:
        model, n = semi_structured_model(dense)
    except (RuntimeError, NotImplementedError, ValueError, ImportError) as e:
        return None, f"unsupported: {type(e).__name__}: {e}"[:300]
    if n == 0:
        return None, "not applicable: no prunable linear is 2:4 sparse"
    return model, f"{n} linears as 2:4 semi-structured"


def measure_inference(
    model: nn.Module,
    make_batch: Callable[[int], dict],
    *,
    batch_sizes: Sequence[int] = (1, 32),
    variants: Sequence[Variant] = ("dense", "sparse"),
    device: str | torch.device = "cpu",
    repeats: int = 10,
    warmup: int = 3,
    tmpdir: str | Path | None = None,
    min_sparsity: float = 0.5,
) -> pd.DataFrame:
    """One row per (variant, batch size), columns :data:`COLUMNS`.

    ``make_batch(b)`` returns the keyword inputs of a batch of ``b`` examples (``input_ids`` of
    shape (b, T) gives ``seq_len``); tensors are moved to ``device``. Times in seconds,
    ``examples_per_s = batch_size / median_s``; ``peak_bytes`` from :func:`peak_memory` (NaN where
    unmeasurable), ``model_bytes`` from :func:`model_bytes`; ``disk_bytes``/``disk_fp16_bytes`` are
    the dense or sparse safetensors file (:func:`disk_sizes`; NaN for semi-structured, which kaviz
    does not save); ``params``/``nonzero_params`` count the given model's parameters. A variant
    that does not apply or is unsupported keeps its row with NaN measurements and a ``note``.
    ``model`` is not modified (a copy is moved when ``device`` differs from its own).
    """
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    if not batch_sizes or any(int(b) < 1 for b in batch_sizes):
        raise ValueError(f"batch_sizes must be positive integers, got {list(batch_sizes)}")
    dev = torch.device(device)
    summary = sparsity_summary(model)
    counts = {"params": int(summary["params"]), "nonzero_params": int(summary["nonzero_params"])}
    with contextlib.ExitStack() as stack:
        folder = tmpdir if tmpdir is not None else stack.enter_context(tempfile.TemporaryDirectory())
        sizes = disk_sizes(model, folder)
    dense = model if next(model.parameters()).device == dev else copy.deepcopy(model).to(dev)
    rows = []
    for variant in variants:
        built, note = _build_variant(dense, variant, min_sparsity)
        disk = {"disk_bytes": sizes.get(variant, np.nan), "disk_fp16_bytes": sizes.get(f"{variant}_fp16", np.nan)}
        for b in batch_sizes:
            batch = {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in make_batch(int(b)).items()}
            row = {"variant": variant, "batch_size": int(b), "seq_len": _seq_len(batch), "device": str(dev),
                   **disk, **counts, "note": note}  # fmt: skip
            try:
                t = time_forward(built, batch, warmup=warmup, repeats=repeats) if built is not None else None
            except (RuntimeError, NotImplementedError) as e:  # e.g. no CSR kernel for this dtype/device
                if variant == "dense":
                    raise
                t, row["note"] = None, f"unsupported: {type(e).__name__}: {e}"[:300]
            if t is not None:
                peak = peak_memory(built, batch)
                row |= {"median_s": t["median_s"], "p10_s": t["p10_s"], "p90_s": t["p90_s"],
                        "examples_per_s": int(b) / t["median_s"], "model_bytes": model_bytes(built),
                        "peak_bytes": np.nan if peak is None else peak}  # fmt: skip
            rows.append(row)
    return pd.DataFrame(rows).reindex(columns=COLUMNS)


def _seq_len(batch: dict) -> int:
    for key in ("input_ids", "inputs_embeds", "attention_mask"):
        if isinstance(batch.get(key), torch.Tensor):
            return int(batch[key].shape[1])
    raise ValueError(f"batch has no input_ids, inputs_embeds or attention_mask; keys: {list(batch)}")


def speedup_table(rows: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Per row of ``rows`` (variant, batch size): ``speedup = reference median_s / median_s`` (>1 is
    faster, <1 slower, kept as is), ``size_ratio = disk_bytes / reference disk_bytes`` (<1 is
    smaller) and ``memory_ratio`` of ``peak_bytes``, against the ``"dense"`` rows of ``reference``
    (the dense teacher's :func:`measure_inference` table) with the same batch size, sequence length
    and device. Rows without a matching reference row get NaN."""
    keys = [k for k in ("batch_size", "seq_len", "device") if k in rows and k in reference]
    ref = reference[reference.variant == "dense"][[*keys, "median_s", "disk_bytes", "peak_bytes"]]
    if ref.duplicated(keys).any():
        raise ValueError(f"reference has several dense rows for one {keys}; pass one model's table")
    ref = ref.rename(columns={c: f"reference_{c}" for c in ("median_s", "disk_bytes", "peak_bytes")})
    out = rows[["variant", *keys, "median_s", "disk_bytes", "peak_bytes"]].merge(ref, on=keys, how="left")
    out["speedup"] = out.reference_median_s / out.median_s
    out["size_ratio"] = out.disk_bytes / out.reference_disk_bytes
    out["memory_ratio"] = out.peak_bytes / out.reference_peak_bytes
    return out
