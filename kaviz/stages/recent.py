"""The methods researchers compare against today, as recipes with the paper methods' signature
``(ctx, sparsity, seed, budget=None) -> Outcome``:

- ``movement``: learned importance scores with a straight-through top-K mask on the cubic schedule,
  from the fine-tuned teacher (Sanh et al. 2020; :mod:`kaviz.train.movement`), cross-entropy or,
  with ``pruning.movement_distill``, the knowledge-aware losses;
- ``wanda`` and ``sparsegpt``: one-shot, layer by layer on ``pruning.calibration_examples``
  training examples (Sun et al. 2023; Frantar & Alistarh 2023; :mod:`kaviz.train.oneshot`), then
  ``pruning.recovery_steps`` of fine-tuning with the masks fixed (0 = none);
- ``structured``: whole heads and FFN neurons removed by gradient importance on the calibration set
  (Michel et al. 2019; Kwon et al. 2022; :mod:`kaviz.train.structured`) to the target fraction of
  encoder weights, then ``recovery_steps`` of knowledge-aware distillation.

A structured unit's checkpoint is the *masked* full-size model (removed heads' and neurons' rows and
columns are zeros), so every reader of checkpoints (knowledge tables, attention maps, comparisons)
works unchanged and marks the removed heads; :func:`kaviz.train.structured_shrink.plan_from_zeros` recovers the plan and
:func:`kaviz.train.structured_shrink.shrink` the physically smaller model (what inference timing measures).
"""

from __future__ import annotations

import time

import torch
from torch import nn

from kaviz.stages.context import Context
from kaviz.stages.recipe import Outcome, distill_fn, pattern_info, student_steps, train
from kaviz.train.loop import ce_loss
from kaviz.train.movement import MovementPruner, MovementScores
from kaviz.train.oneshot import prune_sparsegpt, prune_wanda
from kaviz.train.pruning import MaskSet
from kaviz.train.structured import importance, plan
from kaviz.train.structured_shrink import mask_model


def movement(ctx: Context, sparsity: float, seed: int, budget: float | None = None) -> Outcome:
    """Movement pruning (top-K) from the teacher for the unit's budget; scores train at
    ``pruning.score_learning_rate`` without weight decay, as in the official code."""
    p = ctx.cfg.pruning
    torch.manual_seed(seed)
    model = ctx.teacher_copy()
    scores = MovementScores(model, "topK", pattern=p.pattern).attach(model)
    steps = student_steps(ctx, budget)
    pruner = MovementPruner(scores, sparsity, steps, n_updates=p.mask_updates, ramp_end=p.ramp_end)
    extra: list[nn.Module] = [scores]
    loss_fn = ce_loss
    if p.movement_distill:
        crit, loss_fn = distill_fn(ctx, model, ctx.teacher())
        extra.append(crit)
    res = train(
        ctx,
        model,
        lr=p.learning_rate,
        steps=steps,
        loss_fn=loss_fn,
        seed=seed,
        extra_modules=extra,
        groups=[scores.param_group(lr=p.score_learning_rate)],
        on_step=pruner.step,
        desc=f"movement {sparsity:g}",
    )
    pruner.finish()  # leaves plain linears whose zeros are the final mask
    info = {"init": "teacher", "mask_updates": pruner.n_updates_done, "distill": p.movement_distill}
    return Outcome(model, res, {**info, **pattern_info(ctx)})


def _calibrated(ctx: Context, seed: int) -> tuple[list[dict], dict]:
    batches, idx = ctx.calibration(seed)
    info = {"calibration_examples": len(idx), "calibration_seed": seed, "calibration_indices": idx}
    return batches, info


def _recover(ctx: Context, model: nn.Module, seed: int, desc: str, loss_fn=ce_loss, **kw):
    """``pruning.recovery_steps`` of training with the model's zeros kept (None when 0 steps)."""
    steps = ctx.cfg.pruning.recovery_steps
    if steps <= 0:
        return None
    masks = MaskSet.from_zeros(model)
    lr = ctx.cfg.pruning.learning_rate
    return train(
        ctx, model, lr=lr, steps=steps, loss_fn=loss_fn, seed=seed, on_step=lambda _s: masks.apply(), desc=desc, **kw
    )


def _oneshot(ctx: Context, sparsity: float, seed: int, name: str, prune) -> Outcome:
    p = ctx.cfg.pruning
    model = ctx.teacher_copy().to(ctx.device)
    batches, info = _calibrated(ctx, seed)
    t0 = time.perf_counter()
    prune(model, [dict(b) for b in batches], sparsity, p.pattern)
    info["prune_seconds"] = time.perf_counter() - t0
    res = _recover(ctx, model, seed, f"{name} {sparsity:g} recovery")
    return Outcome(model, res, {"init": "teacher", "recovery_steps": p.recovery_steps, **info, **pattern_info(ctx)})


def wanda(ctx: Context, sparsity: float, seed: int, budget: float | None = None) -> Outcome:
    """Wanda: |W_ij| * ||X_j||_2 per output row, one shot on the calibration set."""
    return _oneshot(ctx, sparsity, seed, "wanda", prune_wanda)


def sparsegpt(ctx: Context, sparsity: float, seed: int, budget: float | None = None) -> Outcome:
    """SparseGPT: OBS mask selection and weight update in column blocks, one shot on the calibration set."""
    return _oneshot(ctx, sparsity, seed, "sparsegpt", prune_sparsegpt)


def structured(ctx: Context, sparsity: float, seed: int, budget: float | None = None) -> Outcome:
    """Remove the least important heads and FFN neurons (mask gradients on the calibration set) until
    ``sparsity`` of the encoder weights are gone; then ``recovery_steps`` of knowledge-aware distillation."""
    p = ctx.cfg.pruning
    model = ctx.teacher_copy().to(ctx.device)
    batches, info = _calibrated(ctx, seed)
    t0 = time.perf_counter()
    heads, neurons = importance(model, batches, kind=p.structured_importance)
    chosen = plan(heads, neurons, model, sparsity)
    mask_model(model, chosen)
    info["prune_seconds"] = time.perf_counter() - t0
    info["removed_heads"] = {str(k): v for k, v in chosen["heads"].items() if v}
    info["removed_neurons"] = int(sum(len(v) for v in chosen["neurons"].values()))
    res = None
    if p.recovery_steps > 0:
        crit, loss_fn = distill_fn(ctx, model, ctx.teacher())
        res = _recover(ctx, model, seed, f"structured {sparsity:g} recovery", loss_fn, extra_modules=[crit])
    return Outcome(model, res, {"init": "teacher", "recovery_steps": p.recovery_steps, **info})


def structured_limit(config) -> float:
    """The largest fraction of encoder linear weights structured pruning can remove from a model with
    this (transformers) config: every layer keeps one head (``4 * d * d_head`` weights) and one FFN
    neuron (``2 * d``) of its ``4 d^2 + 2 d * intermediate``."""
    from kaviz.core.structure import STRUCTURES, config_dims

    st = STRUCTURES.get(getattr(config, "model_type", None))
    if st is None:
        return 1.0  # structure_of reports the unsupported architecture when the unit runs
    dd = config_dims(config, st)
    d, heads, inter = dd["hidden"], dd["heads"], dd["intermediate"]
    return 1.0 - (4 * d * (d // heads) + 2 * d) / (4 * d * d + 2 * d * inter)


METHODS = {"movement": movement, "wanda": wanda, "sparsegpt": sparsegpt, "structured": structured}
