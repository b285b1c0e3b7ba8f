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
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file
from torch import nn

from kaviz.measure.sparse_formats import (  # noqa: F401  (CSRLinear, load_sparse, ...: this module's API too)
    CSRLinear,
    _plain_state,
    _sparse_names,
    load_sparse,
    save_sparse,
    semi_structured_model,
    sparse_linear_model,
)
from kaviz.train.pruning import sparsity_summary

Variant = Literal["dense", "sparse", "semi-structured"]
VARIANTS: tuple[str, ...] = ("dense", "sparse", "semi-structured")
COLUMNS = [
    "variant", "batch_size", "seq_len", "device", "median_s", "p10_s", "p90_s", "examples_per_s",
    "peak_bytes", "model_bytes", "disk_bytes", "disk_fp16_bytes", "params", "nonzero_params", "note",
]  # fmt: skip


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
