"""The training loop shared by fine-tuning and every pruning method, and evaluation.

A method is a ``loss_fn(model, batch) -> {"loss": tensor, ...}`` plus an ``on_step(step)``
callback (mask updates / re-application after every optimizer step).

Speed notes (see ``benchmarks/bench_train.py``): batches are padded per batch (not to
``max_length``) by the collator and tokenised once per run; CUDA batches come from pinned memory
with non-blocking copies; ``precision="bf16"`` runs forward and loss under ``torch.autocast``
(weights and optimizer state stay float32). Data-parallel training over several processes goes
through an ``accelerate.Accelerator`` (see :mod:`kaviz.train.parallel`).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from kaviz.train.bertadam import BertAdam

LossFn = Callable[[nn.Module, dict], dict[str, torch.Tensor]]


@dataclass
class TrainResult:
    steps: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    epochs: list[dict[str, float]] = field(default_factory=list)  # per-epoch dev scores, when evaluated

    @property
    def final_loss(self) -> float:
        return self.history[-1]["loss"] if self.history else float("nan")


def num_steps(n_examples: int, batch_size: int, epochs: float, max_steps: int | None) -> int:
    if max_steps is not None:
        return max_steps
    return max(1, math.ceil(n_examples / batch_size * epochs))


def make_loader(
    dataset,
    collator,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    device: torch.device | None = None,
    lengths: list[int] | None = None,
) -> DataLoader:
    """Batches padded per batch by ``collator``. With ``lengths`` (and ``shuffle``), examples of
    similar length are batched together (``transformers``' length-grouped sampler: random
    mega-batches of 50 batches, sorted by length), which cuts the padding computed on."""
    g = torch.Generator()
    g.manual_seed(seed)
    pin = device is not None and device.type == "cuda"
    if shuffle and lengths is not None:
        from transformers.trainer_pt_utils import LengthGroupedSampler

        sampler = LengthGroupedSampler(batch_size, lengths=list(lengths), generator=g)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collator, pin_memory=pin)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=collator, generator=g, pin_memory=pin)


def _cycle(loader: DataLoader) -> Iterator[dict]:
    while True:
        yield from loader


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> 'bf16' on a CUDA device that supports it, else 'fp32'; other values pass through."""
    if precision == "auto":
        ok = device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return "bf16" if ok else "fp32"
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")
    return precision


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast for the forward pass and loss when asked for; a no-op for fp32."""
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class _Objective(nn.Module):
    """The student and the loss's own modules (e.g. the distillation projection) as one module, so
    that data-parallel wrapping syncs every trained parameter; the teacher lives in ``loss_fn``."""

    def __init__(self, model: nn.Module, extra: list[nn.Module], loss_fn: LossFn):
        super().__init__()
        self.model, self.extra, self.loss_fn = model, nn.ModuleList(extra), loss_fn

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        return self.loss_fn(self.model, batch)


def param_groups(modules: Iterable[nn.Module], weight_decay: float, own: Iterable[dict] = ()) -> list[dict]:
    """AdamW groups: no decay on biases and LayerNorm weights (BERT convention); ``own`` groups
    (e.g. movement scores with their own learning rate) keep their settings and their parameters
    are left out of the default two."""
    own = list(own)
    taken = {id(p) for g in own for p in g["params"]}
    decay, no_decay = [], []
    for module in modules:
        for name, p in module.named_parameters():
            if not p.requires_grad or id(p) in taken:
                continue
            (no_decay if p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}, *own]


def train_loop(
    model: nn.Module,
    loader: DataLoader,
    *,
    steps: int,
    lr: float,
    loss_fn: LossFn,
    device: torch.device,
    weight_decay: float = 0.01,
    warmup_ratio: float = 0.0,
    extra_modules: Iterable[nn.Module] = (),
    groups: Iterable[dict] = (),
    on_step: Callable[[int], None] | None = None,
    desc: str = "train",
    progress: bool = True,
    log_every: int = 10,
    precision: str = "fp32",
    accelerator: Any = None,
    should_stop: Callable[[int], bool] | None = None,
    optimizer: str = "adamw",
) -> TrainResult:
    """Run ``steps`` optimizer steps (linear warm-up over ``warmup_ratio`` of them, then constant lr);
    ``optimizer``: "adamw" (torch) or "bertadam" (the paper's code, :mod:`kaviz.train.bertadam`).

    ``groups``: optimizer groups with their own settings (parameters of ``extra_modules`` that
    train at another learning rate, e.g. movement scores); the rest get the default two groups.

    ``should_stop(step)`` is asked after every step (after ``on_step``); True ends training there
    (the teacher's epoch-wise plateau stop).

    With an ``accelerate.Accelerator`` the student (with ``extra_modules``) is wrapped for
    data-parallel training and each process trains on its slice of every batch; ``model`` itself
    is trained in place either way.
    """
    objective = _Objective(model, list(extra_modules), loss_fn).to(device).train()
    fused = device.type in ("cpu", "cuda")  # one kernel per step instead of a dozen per parameter group
    groups_ = param_groups([objective], weight_decay, groups)
    if optimizer == "bertadam":
        opt: torch.optim.Optimizer = BertAdam(groups_, lr=lr, weight_decay=weight_decay)
    elif optimizer == "adamw":
        opt = torch.optim.AdamW(groups_, lr=lr, fused=fused)
    else:
        raise ValueError(f"optimizer {optimizer!r} is not 'adamw' or 'bertadam'")
    warm = int(steps * warmup_ratio)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
    step_fn: nn.Module = objective
    if accelerator is not None:
        step_fn, opt, loader = accelerator.prepare(objective, opt, loader)
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    running: dict[str, torch.Tensor] = {}  # summed on the device: no host sync per step
    batches = _cycle(loader)
    for step in range(1, steps + 1):
        batch = _to(next(batches), device)
        with autocast(precision, device):
            out = step_fn(batch)
        opt.zero_grad(set_to_none=True)
        if accelerator is not None:
            accelerator.backward(out["loss"])
        else:
            out["loss"].backward()
        opt.step()
        sched.step()
        if on_step is not None:
            on_step(step)
        for k, v in out.items():
            running[k] = running[k] + v.detach().float() if k in running else v.detach().float()
        if step % log_every == 0 or step == steps:
            n = log_every if step % log_every == 0 else step % log_every
            row = {"step": float(step), **{k: float(v) / n for k, v in running.items()}}
            history.append(row)
            running = {}
            bar.set_postfix(loss=f"{row['loss']:.4f}")
        bar.update(1)
        if should_stop is not None and should_stop(step):
            if running:
                n = step % log_every
                history.append({"step": float(step), **{k: float(v) / n for k, v in running.items()}})
            break
    bar.close()
    return TrainResult(steps=step, seconds=time.perf_counter() - start, history=history)


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Logits ``(n, num_labels)`` and labels ``(n,)`` over a loader, in order."""
    model.to(device).eval()
    logits, labels = [], []
    for batch in loader:
        batch = _to(batch, device)
        y = batch.pop("labels")
        logits.append(model(**batch).logits.float().cpu())
        labels.append(y.cpu())
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


def ce_loss(model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
    """Task loss on gold labels (cross-entropy, or MSE for regression: the model's own loss)."""
    return {"loss": model(**batch).loss}
