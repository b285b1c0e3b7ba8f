"""The stages' training recipes: teacher fine-tuning, the paper's five pruning methods, and the
registry of every method (the recent ones live in :mod:`kaviz.stages.recent`).

Each method is a plain function ``(ctx, sparsity, seed, budget=None) -> Outcome`` (``budget``: student
epochs, None for the run's main budget) registered in
:data:`METHODS`; ``ctx`` (:class:`kaviz.stages.context.Context`) hands out fresh copies of the
pre-trained model and the fine-tuned teacher, the training data and the config.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from kaviz.core.structure import dims
from kaviz.stages import recent
from kaviz.stages.recipe import (
    Outcome,
    distill_fn,
    pattern_info,
    student_steps,
    train,
    train_pruning,
)
from kaviz.train.loop import ce_loss, num_steps
from kaviz.train.models import small_dense_student
from kaviz.train.pruning import prune_magnitude

if TYPE_CHECKING:
    from kaviz.stages.context import Context


class PlateauStop:
    """``should_stop`` for the teacher: at every epoch's end, score ``model`` on dev; stop once one more
    epoch gained less than ``delta`` points (score x100), keeping the best epoch's weights.

    ``rows`` holds one dict per epoch: epoch, step, score (and the task's other dev metrics), seconds.
    """

    def __init__(
        self,
        model: nn.Module,
        evaluate: Callable[[nn.Module], dict],
        steps_per_epoch: int,
        delta: float,
        log: Callable[[str], None] | None = None,
    ):
        self.model, self.evaluate, self.spe, self.delta = model, evaluate, steps_per_epoch, delta
        self.log = log or (lambda msg: None)
        self.rows: list[dict[str, float]] = []
        self.best_score = float("-inf")
        self.best_state: dict[str, torch.Tensor] | None = None
        self.stopped_early = False
        self._t0 = time.perf_counter()

    def __call__(self, step: int) -> bool:
        if step % self.spe:
            return False
        scores = self.evaluate(self.model)
        self.model.train()
        epoch = step // self.spe
        self.rows.append(
            {"epoch": float(epoch), "step": float(step), **scores, "seconds": time.perf_counter() - self._t0}
        )
        self.log(f"teacher epoch {epoch}: dev score {scores['score']:.4f} after {step} steps")
        if scores["score"] > self.best_score:
            self.best_score = scores["score"]
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        if len(self.rows) >= 2:
            gain = 100.0 * (self.rows[-1]["score"] - self.rows[-2]["score"])
            if gain < self.delta:
                self.stopped_early = True
                return True
        return False

    def restore_best(self) -> int:
        """Load the best epoch's weights into the model; returns that epoch (1-based)."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        best = max(self.rows, key=lambda r: r["score"]) if self.rows else None
        return int(best["epoch"]) if best else 0


def finetune(ctx: Context, seed: int) -> Outcome:
    """Teacher: the pre-trained model fine-tuned on the task with cross-entropy (MSE for regression).

    With ``training.plateau_delta`` it is scored on dev after every epoch and stops at its plateau
    (see :class:`PlateauStop`); the per-epoch scores come back in ``result.epochs``."""
    tr = ctx.cfg.training
    model = ctx.pretrained()
    steps = num_steps(ctx.n_train, tr.batch_size, tr.epochs, tr.max_steps)
    stop = None
    if tr.plateau_delta is not None:
        spe = num_steps(ctx.n_train, tr.batch_size, 1.0, None)
        stop = PlateauStop(model, ctx.evaluate, spe, tr.plateau_delta, log=ctx.run.log)
    res = train(
        ctx,
        model,
        lr=tr.learning_rate,
        steps=steps,
        loss_fn=ce_loss,
        seed=seed,
        desc="fine-tune teacher",
        student=False,
        should_stop=stop,
    )
    info: dict = {}
    if stop is not None:
        res.epochs = stop.rows
        info = {
            "epochs_trained": len(stop.rows),
            "best_epoch": stop.restore_best(),
            "plateau_delta": tr.plateau_delta,
            "stopped_at_plateau": stop.stopped_early,
        }
    return Outcome(model, res, info)


def oneshot_magnitude(ctx: Context, sparsity: float, seed: int, budget: float | None = None) -> Outcome:
    """Magnitude-prune the teacher per matrix at the target, no retraining."""
    model = ctx.teacher_copy()
    prune_magnitude(model, sparsity, ctx.cfg.pruning.pattern)
    return Outcome(model, None, {"init": "teacher", **pattern_info(ctx)})


def gradual_magnitude(ctx: Context, sparsity: float, seed: int, budget: float | None = None) -> Outcome:
    """From the teacher: cubic schedule, cross-entropy on labels (Zhu & Gupta)."""
    model = ctx.teacher_copy()
    res, pruner = train_pruning(ctx, model, sparsity, seed, budget, ce_loss, f"gradual-magnitude {sparsity:g}")
    return Outcome(model, res, {"init": "teacher", "mask_updates": pruner.n_updates_done, **pattern_info(ctx)})


def knowledge_aware(ctx: Context, sparsity: float, seed: int, budget: float | None = None) -> Outcome:
    """The paper: student from the pre-trained model, distilled from the teacher at every layer
    (attention scores, hidden states, logits) while pruned per matrix on the cubic schedule."""
    p = ctx.cfg.pruning
    torch.manual_seed(seed)
    student = ctx.pretrained() if p.student_init == "pretrained" else ctx.teacher_copy()
    crit, loss_fn = distill_fn(ctx, student, ctx.teacher())
    desc = f"knowledge-aware {sparsity:g}"
    res, pruner = train_pruning(ctx, student, sparsity, seed, budget, loss_fn, desc, extra_modules=[crit])
    info = {"init": p.student_init, "mask_updates": pruner.n_updates_done, "layer_map": crit.map}
    return Outcome(student, res, {**info, **pattern_info(ctx)})


def small_dense(ctx: Context, sparsity: float, seed: int, budget: float | None = None) -> Outcome:
    """TinyBERT-style comparator: fewer layers (and width) with the same non-zero budget, from the
    pre-trained model's layers, distilled with the same losses, no pruning."""
    p = ctx.cfg.pruning
    torch.manual_seed(seed)
    student, lmap = small_dense_student(ctx.pretrained(), sparsity, p.small_dense_layers)
    crit, loss_fn = distill_fn(ctx, student, ctx.teacher())
    steps = student_steps(ctx, budget)
    res = train(
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


def upstream_magnitude(ctx: Context, sparsity: float, seed: int, budget: float | None = None) -> Outcome:
    """Prune the *pre-trained* model by magnitude first, then fine-tune on the task with masks fixed
    (student budget, teacher learning rate)."""
    model = ctx.pretrained()
    masks = prune_magnitude(model, sparsity)
    res = train(
        ctx,
        model,
        lr=ctx.cfg.training.learning_rate,
        steps=student_steps(ctx, budget),
        loss_fn=ce_loss,
        seed=seed,
        on_step=lambda _step: masks.apply(),
        desc=f"upstream-magnitude {sparsity:g}",
    )
    return Outcome(model, res, {"init": "pretrained"})


METHODS: dict[str, Callable[..., Outcome]] = {  # (ctx, sparsity, seed, budget=None) -> Outcome
    "oneshot-magnitude": oneshot_magnitude,
    "gradual-magnitude": gradual_magnitude,
    "knowledge-aware": knowledge_aware,
    "small-dense": small_dense,
    "upstream-magnitude": upstream_magnitude,
    **recent.METHODS,
}
