"""What every method's recipe uses: the unit's outcome, a training run on the task's data with the
run's settings, the student budget in steps, training while pruning on the cubic schedule, and the
distillation objective (teacher once per batch under ``no_grad``, student with every layer)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from kaviz.train.distill import DistillLoss, distill_objective  # noqa: F401  (distill_objective: re-exported)
from kaviz.train.loop import TrainResult, num_steps, train_loop
from kaviz.train.pruning import CubicPruner, MaskSet

if TYPE_CHECKING:
    from kaviz.stages.context import Context


@dataclass
class Outcome:
    model: nn.Module
    result: TrainResult | None = None
    info: dict = field(default_factory=dict)


def train(
    ctx: Context,
    model: nn.Module,
    *,
    lr: float,
    steps: int,
    loss_fn,
    seed: int,
    desc: str,
    student: bool = True,
    **kw,
) -> TrainResult:
    """Train ``model`` on the task's training batches; a student (not the teacher's fine-tuning)
    takes ``pruning.warmup_ratio`` and ``pruning.optimizer``."""
    torch.manual_seed(seed)
    tr, p = ctx.cfg.training, ctx.cfg.pruning
    warmup = p.warmup_ratio if student and p.warmup_ratio is not None else tr.warmup_ratio
    return train_loop(
        model,
        ctx.train_loader(seed),
        steps=steps,
        lr=lr,
        loss_fn=loss_fn,
        device=ctx.device,
        weight_decay=tr.weight_decay,
        warmup_ratio=warmup,
        optimizer=p.optimizer if student else "adamw",
        desc=desc,
        progress=ctx.progress,
        precision=tr.precision,
        accelerator=ctx.accelerator,
        **kw,
    )


def student_steps(ctx: Context, budget: float | None = None) -> int:
    """Optimizer steps of a student: ``budget`` epochs of the training set when given, else the run's
    main budget (``pruning.max_steps``, or ``pruning.epochs``)."""
    p = ctx.cfg.pruning
    if budget is not None:
        return num_steps(ctx.n_train, ctx.cfg.training.batch_size, budget, None)
    return num_steps(ctx.n_train, ctx.cfg.training.batch_size, p.epochs, p.max_steps)


def train_pruning(
    ctx: Context, model: nn.Module, sparsity: float, seed: int, budget: float | None, loss_fn, desc: str, **kw
) -> tuple[TrainResult, CubicPruner]:
    """Train ``model`` for the unit's budget while pruning it per matrix on the cubic schedule
    (masks recomputed ``pruning.mask_updates`` times, re-applied after every step)."""
    p = ctx.cfg.pruning
    steps = student_steps(ctx, budget)
    pruner = CubicPruner(MaskSet(model, pattern=p.pattern), sparsity, steps, p.mask_updates, p.ramp_end)
    res = train(
        ctx, model, lr=p.learning_rate, steps=steps, loss_fn=loss_fn, seed=seed, on_step=pruner.step, desc=desc, **kw
    )
    pruner.finish()
    return res, pruner


def distill_fn(ctx: Context, student: nn.Module, teacher: nn.Module) -> tuple[DistillLoss, Callable]:
    return distill_objective(student, teacher, ctx.cfg.distill, ctx.device, ctx.spec.is_regression)


def pattern_info(ctx: Context) -> dict:
    """The N:M pattern a unit was pruned with, for its info (nothing when unstructured)."""
    return {"pattern": ctx.cfg.pruning.pattern} if ctx.cfg.pruning.pattern else {}
