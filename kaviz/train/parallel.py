"""Data-parallel runs over several processes with HF Accelerate.

Launch the same ``kaviz run`` under ``accelerate launch`` (GPUs) or ``torchrun --nproc_per_node N``
(CPU, over gloo): when ``WORLD_SIZE`` > 1 the pipeline builds an ``accelerate.Accelerator`` whose
data loaders split every batch of ``training.batch_size`` across the processes (so the global
batch, the data order and the learning-rate schedule are those of one process) and whose
wrapped model averages gradients. Masks are recomputed from the synchronised weights on every
process, so they agree without being sent.

Only the main process writes the run store; every process evaluates its copy and appends what
it ended with (metrics and a digest of the masks) to ``ranks/rank<N>.jsonl`` in the run, which
is how tests check that the processes agree. Unit-parallel ranks (:mod:`kaviz.stages.unit_parallel`)
each write their own units; :func:`save_pretrained` saves a checkpoint on any rank.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kaviz.core.structure import prunable_linears

RANKS_DIR = "ranks"


def world_size() -> int:
    """Processes of this launch (``WORLD_SIZE`` set by torchrun / accelerate launch; 1 otherwise)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def make_accelerator(device: str, batch_size: int) -> Any:
    """An ``Accelerator`` when launched on several processes, else ``None`` (plain single-process path)."""
    n = world_size()
    if n == 1:
        return None
    if batch_size % n:
        raise ValueError(
            f"training.batch_size {batch_size} must be divisible by the {n} processes of this launch "
            "(each process trains on an equal slice of every batch)"
        )
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration

    return Accelerator(
        cpu=device == "cpu" or not torch.cuda.is_available(),
        dataloader_config=DataLoaderConfiguration(split_batches=True),
        mixed_precision="no",  # kaviz applies its own autocast (training.precision)
    )


def device_label(device: torch.device, processes: int | None = None) -> str:
    """'cpu (2 threads)', 'cuda (NVIDIA H200)', with the process count of a data-parallel launch
    (``processes``; default: the launch's ``WORLD_SIZE``)."""
    if device.type == "cuda" and torch.cuda.is_available():
        label = f"cuda ({torch.cuda.get_device_name(device)})"
    elif device.type == "cpu":
        label = f"cpu ({torch.get_num_threads()} threads)"
    else:
        label = str(device)
    n = world_size() if processes is None else processes
    return label + (f" x {n} processes" if n > 1 else "")


def mask_digest(model: nn.Module) -> str:
    """sha256 of which prunable encoder weights are zero: equal digests mean equal masks."""
    h = hashlib.sha256()
    for name, lin in prunable_linears(model).items():
        h.update(name.encode())
        h.update((lin.weight.detach() == 0).cpu().numpy().tobytes())
    return h.hexdigest()


def record(run_path: Path, rank: int, unit: str, metrics: dict[str, float], model: nn.Module) -> None:
    """Append this process's end state of ``unit`` to ``ranks/rank<rank>.jsonl`` in the run."""
    folder = Path(run_path) / RANKS_DIR
    folder.mkdir(exist_ok=True)
    line = {"unit": unit, "metrics": {k: float(v) for k, v in metrics.items()}, "masks": mask_digest(model)}
    with open(folder / f"rank{rank}.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(line, sort_keys=True) + "\n")


def read_records(run_path: Path) -> dict[int, list[dict]]:
    """``{rank: [record, ...]}`` of a data-parallel run (empty for a single-process run)."""
    out: dict[int, list[dict]] = {}
    for p in sorted((Path(run_path) / RANKS_DIR).glob("rank*.jsonl")):
        lines = p.read_text(encoding="utf-8").splitlines()
        out[int(p.stem[4:])] = [json.loads(x) for x in lines if x.strip()]
    return out


class FollowerRun:
    """A non-main process's view of the run: reads pass through, writes are dropped (the main
    process writes the store)."""

    WRITES = frozenset(
        {
            "set_status",
            "log",
            "start_unit",
            "finish_unit",
            "fail_unit",
            "save_checkpoint",
            "save_tokenizer",
            "write_unit_table",
            "write_table",
        }
    )

    def __init__(self, run: Any):
        self._run = run

    def __getattr__(self, name: str) -> Any:
        if name in self.WRITES:
            return lambda *args, **kwargs: None
        return getattr(self._run, name)


def save_pretrained(model: nn.Module, folder: str | Path) -> None:
    """``model.save_pretrained(folder)``, also on a torch.distributed rank other than 0: transformers
    5 writes nothing there (it expects rank 0 to save a model all ranks share), but a unit-parallel
    rank trains units of its own. There the config and ``model.safetensors`` (shared tensors kept
    once, as save_pretrained does) are written directly, in the layout ``from_pretrained`` reads."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_rank() != 0):
        model.save_pretrained(folder)
        return
    from safetensors.torch import save_model

    model.config.save_pretrained(folder)
    save_model(model, str(Path(folder) / "model.safetensors"), metadata={"format": "pt"})
