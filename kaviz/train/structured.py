"""Structured pruning: remove whole attention heads and FFN neurons, physically shrinking the model.

Importance follows Michel et al. 2019, "Are Sixteen Heads Really Better than One?"
(github.com/pmichel31415/are-16-heads-really-better-than-1) and Kwon et al. 2022, "A Fast
Post-Training Pruning Framework for Transformers" (github.com/WoosukKwon/retraining-free-pruning):
multiplicative masks xi = 1 scale each head's context and each FFN neuron's activation, and a unit
scores sum_batches |dL/dxi| (Michel, ``"taylor"``) or sum_batches (dL/dxi)^2 (Kwon's empirical
Fisher, ``"fisher"``). :func:`plan` spends a parameter budget with Kwon's costs: a head is
``4 * d * d_head`` encoder weights (its Q/K/V rows, its attention-output columns), a neuron ``2 * d``
(its FFN-in row, its FFN-out column).

Saving and loading. transformers 5 removed ``PreTrainedModel.prune_heads`` and
``config.pruned_heads``, so a checkpoint of a shrunk model does not load into the class its config
names (the tensors are smaller than the config says). :func:`~kaviz.train.structured_shrink.shrink`
therefore keeps the config's head count and FFN size (so ``d_head = hidden / heads`` still holds)
and records the per-layer shapes in ``config.kaviz_structured``; ``save_pretrained`` writes that field to config.json, and
:func:`kaviz.train.structured_io.load_shrunk` (or ``shrunk_class(cls).from_pretrained``) rebuilds the smaller modules before
the weights are read. BERT-like attention in transformers 5 infers the head count from the
projection width (``view(..., -1, d_head)``), so no forward code changes.

Applying a plan (masking, shrinking, reading back what a model kept) is in
:mod:`kaviz.train.structured_shrink`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from typing import Literal

import torch
from torch import nn

from kaviz.core.structure import UnsupportedArchitectureError, dims, encoder_layers, structure_of
from kaviz.train.models import encoder_params, eval_mode

Kind = Literal["fisher", "taylor"]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, labels) -> scalar loss
CONFIG_KEY = "kaviz_structured"


class _Layer:
    """One encoder layer's six linears and its current head / neuron counts."""

    def __init__(self, model: nn.Module, index: int, layer: nn.Module, head_size: int):
        self.index, self.module, self.head_size = index, layer, head_size
        self.paths = structure_of(model).linears
        self.heads_attr = structure_of(model).heads_attr

    def lin(self, role: str) -> nn.Linear:
        return self.module.get_submodule(self.paths[role])

    def parent(self, role: str) -> tuple[nn.Module, str]:
        """The module holding a role's linear (for "query": the attention with its head count), and its name."""
        path, _, name = self.paths[role].rpartition(".")
        return (self.module.get_submodule(path) if path else self.module), name

    @property
    def heads(self) -> int:
        return self.lin("query").out_features // self.head_size

    @property
    def neurons(self) -> int:
        return self.lin("ffn_in").out_features


class StructuredUnsupportedError(UnsupportedArchitectureError):
    """Structured pruning of a layout it does not (yet) handle: fused, gated, grouped or Conv1D."""


def check_supported(model: nn.Module) -> None:
    """Structured pruning removes rows and columns of separate Q/K/V, attention-output, FFN-in and
    FFN-out linears; fused, gated, grouped-query and Conv1D layouts are refused by name."""
    st, d = structure_of(model), dims(model)
    why = [
        label
        for label, bad in (
            ("fused projections", st.fused),
            ("a gated FFN", st.gated),
            ("grouped-query attention", d["kv_heads"] != d["heads"]),
            ("transposed Conv1D weights", st.transposed),
            ("a head size other than hidden / heads", d["head_dim"] * d["heads"] != d["hidden"]),
        )
        if bad
    ]
    if why:
        raise StructuredUnsupportedError(
            f"structured pruning does not support {model.config.model_type!r} ({', '.join(why)}); "
            "use an unstructured or N:M method for this family"
        )


def _layers(model: nn.Module) -> list[_Layer]:
    check_supported(model)
    head_size = dims(model)["hidden"] // dims(model)["heads"]
    return [_Layer(model, i, layer, head_size) for i, layer in enumerate(encoder_layers(model))]


def head_cost(model: nn.Module) -> int:
    """Encoder weights one head holds: ``4 * d * d_head`` (Kwon et al. 2022)."""
    return 4 * dims(model)["hidden"] * _layers(model)[0].head_size


def neuron_cost(model: nn.Module) -> int:
    """Encoder weights one FFN neuron holds: ``2 * d`` (Kwon et al. 2022)."""
    return 2 * dims(model)["hidden"]


def _task_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on class ids; MSE when the model has one output (regression)."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if logits.shape[-1] == 1:
        return nn.functional.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
    return nn.functional.cross_entropy(logits, labels.long())


def _scale_heads(mask: torch.Tensor, head_size: int):
    def hook(_: nn.Module, args: tuple) -> tuple:
        x = args[0]  # (B, T, nh * hs)
        x = (x.unflatten(-1, (-1, head_size)) * mask[:, None]).flatten(-2)  # (B, T, nh, hs) -> (B, T, nh * hs)
        return (x, *args[1:])

    return hook


def _scale_neurons(mask: torch.Tensor):
    return lambda _, args: (args[0] * mask, *args[1:])  # (B, T, I) * (I,)


def _pad(rows: list[torch.Tensor]) -> torch.Tensor:
    """Stack per-layer vectors into (layers, max length), NaN where a shrunk layer has fewer units."""
    out = torch.full((len(rows), max(len(r) for r in rows)), math.nan)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def importance(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    loss_fn: LossFn | None = None,
    kind: Kind = "fisher",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient importance of every head and FFN neuron on task data (the model is not changed).

    ``batches`` are model inputs plus ``labels``; the loss is ``loss_fn(logits, labels)``, by default
    cross-entropy (MSE for a one-output regression model). Masks of ones are applied by forward
    pre-hooks on the attention-output and FFN-output linears; ``kind="fisher"`` sums the squared
    per-batch mask gradients (Kwon et al.), ``"taylor"`` their absolute values (Michel et al.).
    Runs in eval mode (no dropout). Returns ``head_scores (layers, heads)`` and
    ``neuron_scores (layers, intermediate)``, float32 on the CPU; a shrunk model's missing units are NaN.
    """
    if kind not in ("fisher", "taylor"):
        raise ValueError(f"importance kind must be 'fisher' or 'taylor', got {kind!r}")
    loss_fn = loss_fn or _task_loss
    layers = _layers(model)
    w = layers[0].lin("query").weight
    head_masks = [torch.ones(lay.heads, device=w.device, dtype=w.dtype, requires_grad=True) for lay in layers]
    neuron_masks = [torch.ones(lay.neurons, device=w.device, dtype=w.dtype, requires_grad=True) for lay in layers]
    totals = [torch.zeros(m.numel(), dtype=torch.float32) for m in head_masks + neuron_masks]
    handles = []
    for lay, hm, nm in zip(layers, head_masks, neuron_masks):
        handles.append(lay.lin("attn_out").register_forward_pre_hook(_scale_heads(hm, lay.head_size)))
        handles.append(lay.lin("ffn_out").register_forward_pre_hook(_scale_neurons(nm)))
    n_batches = 0
    try:
        with eval_mode(model):
            for batch in batches:
                batch = {k: v.to(w.device) if torch.is_tensor(v) else v for k, v in batch.items()}
                if "labels" not in batch:
                    raise ValueError(f"importance needs batches with 'labels'; got keys {sorted(batch)}")
                labels = batch.pop("labels")
                loss = loss_fn(model(**batch).logits, labels)
                grads = torch.autograd.grad(loss, head_masks + neuron_masks)
                for total, g in zip(totals, grads):
                    g = g.detach().float().cpu()
                    total += g.pow(2) if kind == "fisher" else g.abs()
                n_batches += 1
    finally:
        for h in handles:
            h.remove()
    if n_batches == 0:
        raise ValueError("importance needs at least one batch of task data; got none")
    return _pad(totals[: len(layers)]), _pad(totals[len(layers) :])


def plan(head_scores: torch.Tensor, neuron_scores: torch.Tensor, model: nn.Module, target: float) -> dict:
    """Heads and neurons to remove so that at least ``target`` of the encoder weights go.

    ``head_scores (layers, >= heads)`` and ``neuron_scores (layers, >= intermediate)`` come from
    :func:`importance` (higher = more important). Units are taken greedily in increasing
    importance per weight (score / cost, Kwon's costs) while they fit the budget
    ``need = ceil(target * encoder_params)``; the smallest unit left then crosses it (a neuron while
    any can go, else a head), and chosen units are put back, most important per weight first, while
    ``need`` still holds. So ``need <= removed < need + cost of one neuron`` (one head once a
    layer's neurons are spent). A layer always keeps at least one head and one neuron.

    Returns ``{"heads": {layer: [ids]}, "neurons": {layer: [ids]}, "removed_fraction": float}``.
    Raises ValueError on a target outside (0, 1), on scores of the wrong shape, or on a target
    that needs emptying a layer.
    """
    if isinstance(target, bool) or not isinstance(target, numbers.Real) or not 0.0 < target < 1.0:
        raise ValueError(f"target (fraction of encoder weights to remove) must be in (0, 1), got {target!r}")
    layers = _layers(model)
    for name, scores, count in (("head", head_scores, "heads"), ("neuron", neuron_scores, "neurons")):
        need = max(getattr(lay, count) for lay in layers)
        if scores.dim() != 2 or scores.shape[0] != len(layers) or scores.shape[1] < need:
            raise ValueError(
                f"{name}_scores must have shape ({len(layers)}, >= {need}) for this model, got {tuple(scores.shape)}"
            )
    costs = {"heads": head_cost(model), "neurons": neuron_cost(model)}
    total = encoder_params(model)
    need = math.ceil(target * total - 1e-9)
    most = sum((lay.heads - 1) * costs["heads"] + (lay.neurons - 1) * costs["neurons"] for lay in layers)
    if need > most:
        raise ValueError(
            f"target {target} would remove {need} of {total} encoder weights, but keeping one head and one "
            f"FFN neuron per layer allows at most {most} ({most / total:.4f}); lower the target"
        )
    items = []  # (score per weight, kind, layer, unit id)
    for kind, scores, count in (("heads", head_scores, "heads"), ("neurons", neuron_scores, "neurons")):
        s = scores.detach().float().cpu()
        for lay in layers:
            for u in range(getattr(lay, count)):
                v = float(s[lay.index, u])
                if math.isnan(v):
                    raise ValueError(f"{kind[:-1]} {u} of layer {lay.index} has a NaN score")
                items.append((v / costs[kind], kind, lay.index, u))
    items.sort()
    left = {kind: [getattr(lay, kind) for lay in layers] for kind in costs}  # units not removed
    chosen, skipped, removed = [], [], 0
    for item in items:  # greedy knapsack: least important per weight first, while it fits the budget
        kind, layer = item[1], item[2]
        if left[kind][layer] == 1:
            continue
        if removed + costs[kind] > need:
            skipped.append(item)
            continue
        left[kind][layer] -= 1
        chosen.append(item)
        removed += costs[kind]
    if removed < need:  # cross the target with the smallest unit still removable, least important first
        last = min((it for it in skipped if left[it[1]][it[2]] > 1), key=lambda it: (costs[it[1]], it[0]))
        chosen.append(last)
        removed += costs[last[1]]
    for item in sorted(chosen, reverse=True):  # put back what the overshoot allows, most important first
        if removed - need < min(costs.values()):
            break
        if removed - costs[item[1]] >= need:
            chosen.remove(item)
            removed -= costs[item[1]]
    out: dict = {"heads": {}, "neurons": {}}
    for _, kind, layer, u in sorted(chosen, key=lambda it: (it[1], it[2], it[3])):
        out[kind].setdefault(layer, []).append(u)
    out["removed_fraction"] = removed / total
    return out
