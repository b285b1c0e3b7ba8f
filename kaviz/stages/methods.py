"""The stages' training recipes: teacher fine-tuning and the five pruning methods.

Each method is a plain function ``(ctx, sparsity, seed, budget=None) -> Outcome`` (``budget``: student
epochs, None for the run's main budget) registered in
:data:`METHODS`; ``ctx`` (:class:`kaviz.stages.context.Context`) hands out fresh copies of the
pre-trained model and the fine-tuned teacher, the training data and the config.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from kaviz.core.config import DistillConfig
from kaviz.core.structure import dims
from kaviz.train.distill import DistillLoss
from kaviz.train.loop import TrainResult, ce_loss, num_steps, train_loop
from kaviz.train.models import small_dense_student
from kaviz.train.pruning import CubicPruner, MaskSet, prune_magnitude

if TYPE_CHECKING:
    from kaviz.stages.context import Context


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


def student_steps(ctx: Context, budget: float | None = None) -> int:
    """Optimizer steps of a student: ``budget`` epochs of the training set when given, else the run's
    main budget (``pruning.max_steps``, or ``pruning.epochs``)."""
    p = ctx.cfg.pruning
    if budget is not None:
        return num_steps(ctx.n_train, ctx.cfg.training.batch_size, budget, None)
    return num_steps(ctx.n_train, ctx.cfg.training.batch_size, p.epochs, p.max_steps)


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
    res = _train(
        ctx,
        model,
        lr=tr.learning_rate,
        steps=steps,
        loss_fn=ce_loss,
        seed=seed,
        desc="fine-tune teacher",
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


def _pattern_info(ctx: Context) -> dict:
    """The N:M pattern a unit was pruned with, for its info (nothing when unstructured)."""
    return {"pattern": ctx.cfg.pruning.pattern} if ctx.cfg.pruning.pattern else {}


def oneshot_magnitude(ctx: Context, sparsity: float, seed: int, budget: float | None = None) -> Outcome:
    """Magnitude-prune the teacher per matrix at the target, no retraining."""
    model = ctx.teacher_copy()
    prune_magnitude(model, sparsity, ctx.cfg.pruning.pattern)
    return Outcome(model, None, {"init": "teacher", **_pattern_info(ctx)})


def _train_pruning(
    ctx: Context, model: nn.Module, sparsity: float, seed: int, budget: float | None, loss_fn, desc: str, **kw
) -> tuple[TrainResult, CubicPruner]:
    """Train ``model`` for the unit's budget while pruning it per matrix on the cubic schedule
    (masks recomputed ``pruning.mask_updates`` times, re-applied after every step)."""
    p = ctx.cfg.pruning
    steps = student_steps(ctx, budget)
    pruner = CubicPruner(MaskSet(model, pattern=p.pattern), sparsity, steps, p.mask_updates, p.ramp_end)
    res = _train(
        ctx, model, lr=p.learning_rate, steps=steps, loss_fn=loss_fn, seed=seed, on_step=pruner.step, desc=desc, **kw
    )
    pruner.finish()
    return res, pruner


def gradual_magnitude(ctx: Context, sparsity: float, seed: int, budget: float | None = None) -> Outcome:
    """From the teacher: cubic schedule, cross-entropy on labels (Zhu & Gupta)."""
    model = ctx.teacher_copy()
    res, pruner = _train_pruning(ctx, model, sparsity, seed, budget, ce_loss, f"gradual-magnitude {sparsity:g}")
    return Outcome(model, res, {"init": "teacher", "mask_updates": pruner.n_updates_done, **_pattern_info(ctx)})


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


def knowledge_aware(ctx: Context, sparsity: float, seed: int, budget: float | None = None) -> Outcome:
    """The paper: student from the pre-trained model, distilled from the teacher at every layer
    (attention scores, hidden states, logits) while pruned per matrix on the cubic schedule."""
    p = ctx.cfg.pruning
    torch.manual_seed(seed)
    student = ctx.pretrained() if p.student_init == "pretrained" else ctx.teacher_copy()
    crit, loss_fn = _distill_fn(ctx, student, ctx.teacher())
    desc = f"knowledge-aware {sparsity:g}"
    res, pruner = _train_pruning(ctx, student, sparsity, seed, budget, loss_fn, desc, extra_modules=[crit])
    info = {"init": p.student_init, "mask_updates": pruner.n_updates_done, "layer_map": crit.map}
    return Outcome(student, res, {**info, **_pattern_info(ctx)})


def small_dense(ctx: Context, sparsity: float, seed: int, budget: float | None = None) -> Outcome:
    """TinyBERT-style comparator: fewer layers (and width) with the same non-zero budget, from the
    pre-trained model's layers, distilled with the same losses, no pruning."""
    p = ctx.cfg.pruning
    torch.manual_seed(seed)
    student, lmap = small_dense_student(ctx.pretrained(), sparsity, p.small_dense_layers)
    crit, loss_fn = _distill_fn(ctx, student, ctx.teacher())
    steps = student_steps(ctx, budget)
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


def upstream_magnitude(ctx: Context, sparsity: float, seed: int, budget: float | None = None) -> Outcome:
    """Prune the *pre-trained* model by magnitude first, then fine-tune on the task with masks fixed
    (student budget, teacher learning rate)."""
    model = ctx.pretrained()
    masks = prune_magnitude(model, sparsity)
    res = _train(
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
}
