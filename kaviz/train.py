"""The training loop shared by fine-tuning and every pruning method, and evaluation.

A method is a ``loss_fn(model, batch) -> {"loss": tensor, ...}`` plus an ``on_step(step)``
callback (mask updates / re-application after every optimizer step).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

LossFn = Callable[[nn.Module, dict], dict[str, torch.Tensor]]


@dataclass
class TrainResult:
    steps: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def final_loss(self) -> float:
        return self.history[-1]["loss"] if self.history else float("nan")


def num_steps(n_examples: int, batch_size: int, epochs: float, max_steps: int | None) -> int:
    if max_steps is not None:
        return max_steps
    return max(1, math.ceil(n_examples / batch_size * epochs))


def make_loader(
    dataset, collator, batch_size: int, *, shuffle: bool, seed: int = 0, device: torch.device | None = None
) -> DataLoader:
    g = torch.Generator()
    g.manual_seed(seed)
    pin = device is not None and device.type == "cuda"
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=collator, generator=g, pin_memory=pin)


def _cycle(loader: DataLoader) -> Iterator[dict]:
    while True:
        yield from loader


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def param_groups(modules: Iterable[nn.Module], weight_decay: float) -> list[dict]:
    """AdamW groups: no decay on biases and LayerNorm weights (BERT convention)."""
    decay, no_decay = [], []
    for module in modules:
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


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
    on_step: Callable[[int], None] | None = None,
    desc: str = "train",
    progress: bool = True,
    log_every: int = 10,
) -> TrainResult:
    """Run ``steps`` AdamW steps (linear warm-up, then constant lr, as the paper)."""
    extra = list(extra_modules)
    model.to(device).train()
    for m in extra:
        m.to(device).train()
    opt = torch.optim.AdamW(param_groups([model, *extra], weight_decay), lr=lr)
    warm = int(steps * warmup_ratio)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    running: dict[str, float] = {}
    batches = _cycle(loader)
    for step in range(1, steps + 1):
        batch = _to(next(batches), device)
        out = loss_fn(model, batch)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        sched.step()
        if on_step is not None:
            on_step(step)
        for k, v in out.items():
            running[k] = running.get(k, 0.0) + float(v.detach())
        if step % log_every == 0 or step == steps:
            n = log_every if step % log_every == 0 else step % log_every
            row = {"step": float(step), **{k: v / n for k, v in running.items()}}
            history.append(row)
            running = {}
            bar.set_postfix(loss=f"{row['loss']:.4f}")
        bar.update(1)
    bar.close()
    return TrainResult(steps=steps, seconds=time.perf_counter() - start, history=history)


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
