"""The stages' training recipes: teacher fine-tuning and the five pruning methods.

Each method is a plain function ``(ctx, sparsity, seed) -> Outcome`` registered in
:data:`METHODS`; ``ctx`` (:class:`kaviz.pipeline.Context`) hands out fresh copies of the
pre-trained model and the fine-tuned teacher, the training data and the config.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from kaviz.config import DistillConfig
from kaviz.distill import DistillLoss
from kaviz.models import small_dense_student
from kaviz.pruning import CubicPruner, MaskSet, prune_magnitude
from kaviz.structure import dims
from kaviz.train import TrainResult, ce_loss, num_steps, train_loop

if TYPE_CHECKING:
    from kaviz.pipeline import Context


@dataclass
class Outcome:
    model: nn.Module
    result: TrainResult | None = None
    info: dict = field(default_factory=dict)


def _train(
    ctx: Context, model: nn.Module, *, lr: float, steps: int, loss_fn, seed: int, desc: str, **kw
) -> TrainResult:
    torch.manual_seed(seed)
    tr = ctx.cfg.training
    return train_loop(
        model,
        ctx.train_loader(seed),
        steps=steps,
        lr=lr,
        loss_fn=loss_fn,
        device=ctx.device,
        weight_decay=tr.weight_decay,
        warmup_ratio=tr.warmup_ratio,
        desc=desc,
        progress=ctx.progress,
        precision=tr.precision,
        accelerator=ctx.accelerator,
        **kw,
    )


def student_steps(ctx: Context) -> int:
    p = ctx.cfg.pruning
    return num_steps(ctx.n_train, ctx.cfg.training.batch_size, p.epochs, p.max_steps)


def finetune(ctx: Context, seed: int) -> Outcome:
    """Teacher: the pre-trained model fine-tuned on the task with cross-entropy (MSE for regression)."""
    tr = ctx.cfg.training
    model = ctx.pretrained()
    steps = num_steps(ctx.n_train, tr.batch_size, tr.epochs, tr.max_steps)
    res = _train(ctx, model, lr=tr.learning_rate, steps=steps, loss_fn=ce_loss, seed=seed, desc="fine-tune teacher")
    return Outcome(model, res)


def oneshot_magnitude(ctx: Context, sparsity: float, seed: int) -> Outcome:
    """Magnitude-prune the teacher per matrix at the target, no retraining."""
    model = ctx.teacher_copy()
    prune_magnitude(model, sparsity)
    return Outcome(model, None, {"init": "teacher"})


def gradual_magnitude(ctx: Context, sparsity: float, seed: int) -> Outcome:
    """From the teacher: cubic schedule, cross-entropy on labels (Zhu & Gupta)."""
    p = ctx.cfg.pruning
    model = ctx.teacher_copy()
    steps = student_steps(ctx)
    pruner = CubicPruner(MaskSet(model), sparsity, steps, p.mask_updates, p.ramp_end)
    res = _train(
        ctx,
        model,
        lr=p.learning_rate,
        steps=steps,
        loss_fn=ce_loss,
        seed=seed,
        on_step=pruner.step,
        desc=f"gradual-magnitude {sparsity:g}",
    )
    pruner.finish()
    return Outcome(model, res, {"init": "teacher", "mask_updates": pruner.n_updates_done})


def distill_objective(
    student: nn.Module, teacher: nn.Module, cfg: DistillConfig, device: torch.device, regression: bool = False
) -> tuple[DistillLoss, Callable]:
    """The distillation criterion (train its projection with the student) and a ``loss_fn`` that
    runs the teacher once per batch under ``no_grad`` and the student with every layer's output."""
    ds, dt = dims(student), dims(teacher)
    crit = DistillLoss(
        ds["num_layers"],
        dt["num_layers"],
        ds["hidden"],
        dt["hidden"],
        cfg.temperature,
        cfg.alpha_att,
        cfg.alpha_hid,
        cfg.alpha_pred,
        regression=regression,
    ).to(device)
    teacher.to(device).eval()

    def loss_fn(model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        labels = batch.pop("labels")
        with torch.no_grad():
            t_out = teacher(**batch, output_hidden_states=True, output_attentions=True)
        s_out = model(**batch, output_hidden_states=True, output_attentions=True)
        batch["labels"] = labels
        return crit(s_out, t_out, labels)

    return crit, loss_fn


def _distill_fn(ctx: Context, student: nn.Module, teacher: nn.Module) -> tuple[DistillLoss, Callable]:
    return distill_objective(student, teacher, ctx.cfg.distill, ctx.device, ctx.spec.is_regression)


def knowledge_aware(ctx: Context, sparsity: float, seed: int) -> Outcome:
    """The paper: student from the pre-trained model, distilled from the teacher at every layer
    (attention scores, hidden states, logits) while pruned per matrix on the cubic schedule."""
    p = ctx.cfg.pruning
    torch.manual_seed(seed)
    student = ctx.pretrained() if p.student_init == "pretrained" else ctx.teacher_copy()
    crit, loss_fn = _distill_fn(ctx, student, ctx.teacher())
    steps = student_steps(ctx)
    pruner = CubicPruner(MaskSet(student), sparsity, steps, p.mask_updates, p.ramp_end)
    res = _train(
        ctx,
        student,
        lr=p.learning_rate,
        steps=steps,
        loss_fn=loss_fn,
        seed=seed,
        on_step=pruner.step,
        extra_modules=[crit],
        desc=f"knowledge-aware {sparsity:g}",
    )
    pruner.finish()
    return Outcome(student, res, {"init": p.student_init, "mask_updates": pruner.n_updates_done, "layer_map": crit.map})


def small_dense(ctx: Context, sparsity: float, seed: int) -> Outcome:
    """TinyBERT-style comparator: fewer layers (and width) with the same non-zero budget, from the
    pre-trained model's layers, distilled with the same losses, no pruning."""
    p = ctx.cfg.pruning
    torch.manual_seed(seed)
    student, lmap = small_dense_student(ctx.pretrained(), sparsity, p.small_dense_layers)
    crit, loss_fn = _distill_fn(ctx, student, ctx.teacher())
    steps = student_steps(ctx)
    res = _train(
        ctx,
        student,
        lr=p.learning_rate,
        steps=steps,
        loss_fn=loss_fn,
        seed=seed,
        extra_modules=[crit],
        desc=f"small-dense {sparsity:g}",
    )
    d = dims(student)
    return Outcome(
        student,
        res,
        {
            "init": "pretrained",
            "layer_map": lmap,
            "layers": d["num_layers"],
            "hidden": d["hidden"],
            "intermediate": d["intermediate"],
        },
    )


def upstream_magnitude(ctx: Context, sparsity: float, seed: int) -> Outcome:
    """Prune the *pre-trained* model by magnitude first, then fine-tune on the task with masks fixed
    (student budget, teacher learning rate)."""
    model = ctx.pretrained()
    masks = prune_magnitude(model, sparsity)
    res = _train(
        ctx,
        model,
        lr=ctx.cfg.training.learning_rate,
        steps=student_steps(ctx),
        loss_fn=ce_loss,
        seed=seed,
        on_step=lambda _step: masks.apply(),
        desc=f"upstream-magnitude {sparsity:g}",
    )
    return Outcome(model, res, {"init": "pretrained"})


METHODS: dict[str, Callable[[Context, float, int], Outcome]] = {
    "oneshot-magnitude": oneshot_magnitude,
    "gradual-magnitude": gradual_magnitude,
    "knowledge-aware": knowledge_aware,
    "small-dense": small_dense,
    "upstream-magnitude": upstream_magnitude,
}
