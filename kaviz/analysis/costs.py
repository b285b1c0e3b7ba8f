"""What a unit buys at inference, measured on this machine (the ``inference`` unit table).

For every unit: latency of a forward at each batch size of ``analysis.inference_batch_sizes``
(median of ``inference_repeats`` timed passes after 3 warm-up passes), peak memory allocated during
the forward, parameters, non-zeros and bytes on disk, for

- ``dense``: the model as stored (masked weights are zeros in dense matrices: no faster);
- ``sparse``: the prunable linears as CSR matrices where at least half their weights are zero
  (``torch.sparse``; on a CPU this pays off only at high sparsity, and the table says so);
- ``shrunk``: for structured units, the physically smaller model (:func:`kaviz.train.structured_shrink.shrink`);
- ``semi-structured``: 2:4 units on a CUDA device that supports ``to_sparse_semi_structured``.

Each row carries the dense teacher's median at the same batch size and sequence length, measured
right before the unit in the same process (``reference_median_s``: paired, so that load from other
work on the machine hits both alike), and ``speedup = reference_median_s / median_s``: a speedup
below 1 is shown as it is. Inputs are the first examples of the analysis probe set
(repeated to fill a batch), padded to the probe's longest example.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import torch
from torch import nn

from kaviz.core.config import AnalysisConfig
from kaviz.measure.capture import ProbeInputs
from kaviz.measure.inference import measure_inference
from kaviz.train.structured_shrink import plan_from_zeros, shrink

#: Columns of the ``inference`` unit table (measure_inference's, plus the teacher reference).
EXTRA_COLUMNS = ["reference_median_s", "reference_disk_bytes", "speedup", "size_ratio"]


def probe_batches(probe: ProbeInputs):
    """``make_batch(b)``: the first ``b`` probe examples (cycled when ``b`` exceeds the probe set)."""

    def make_batch(b: int) -> dict:
        idx = torch.arange(b) % len(probe)
        batch = {"input_ids": probe.input_ids[idx], "attention_mask": probe.attention_mask[idx]}
        if probe.token_type_ids is not None:
            batch["token_type_ids"] = probe.token_type_ids[idx]
        return batch

    return make_batch


def measure_unit(
    model: nn.Module,
    probe: ProbeInputs,
    acfg: AnalysisConfig,
    device: torch.device,
    *,
    pattern: str | None = None,
    structured: bool = False,
    dense_only: bool = False,
) -> pd.DataFrame:
    """The ``inference`` rows of one unit (without the teacher reference; see :func:`with_reference`):
    ``dense`` and ``sparse`` (``dense_only``: the first alone), ``semi-structured`` for 2:4 units on
    CUDA, and ``shrunk`` for a ``structured`` unit (its masked model shrunk by
    :func:`kaviz.train.structured_shrink.plan_from_zeros`)."""
    kw = {
        "batch_sizes": tuple(acfg.inference_batch_sizes),
        "device": device,
        "repeats": acfg.inference_repeats,
    }
    make_batch = probe_batches(probe)
    variants = ["dense"] if dense_only else ["dense", "sparse"]
    if pattern == "2:4" and device.type == "cuda" and not dense_only:
        variants.append("semi-structured")
    rows = [measure_inference(model, make_batch, variants=tuple(variants), **kw)]
    if structured:
        small = shrink(copy.deepcopy(model), plan_from_zeros(model))
        rows.append(measure_inference(small, make_batch, variants=("dense",), **kw).assign(variant="shrunk"))
    return pd.concat(rows, ignore_index=True)


def with_reference(rows: pd.DataFrame, teacher: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with the teacher's dense median and file size at the same batch size and sequence
    length, the speedup (teacher median / median) and the size ratio (size on disk / teacher's)."""
    ref = teacher[teacher["variant"] == "dense"][["batch_size", "seq_len", "median_s", "disk_bytes"]]
    ref = ref.rename(columns={"median_s": "reference_median_s", "disk_bytes": "reference_disk_bytes"})
    out = rows.drop(columns=[c for c in EXTRA_COLUMNS if c in rows.columns]).merge(
        ref, on=["batch_size", "seq_len"], how="left"
    )
    out["speedup"] = out["reference_median_s"] / out["median_s"]
    out["size_ratio"] = out["disk_bytes"] / out["reference_disk_bytes"]
    return out.replace([np.inf, -np.inf], np.nan)
