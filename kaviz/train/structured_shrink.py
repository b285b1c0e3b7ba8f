"""Applying a structured plan (:func:`kaviz.train.structured.plan`): zero the planned heads and
neurons in place (:func:`mask_model`, the "masked original") or remove them physically
(:func:`shrink`), and read back what a model has kept (:func:`kept_heads`, :func:`plan_from_zeros`,
:func:`structured_sparsity`).

Plan ids index the model as given (original ids for a dense model). :func:`mask_model` and
:func:`shrink` change ``model`` in place (new Parameters: build optimizers and MaskSets after).
"""

from __future__ import annotations

import torch
from torch import nn

from kaviz.core.structure import dims, encoder_layers, structure_of
from kaviz.train.models import encoder_params
from kaviz.train.structured import CONFIG_KEY, _Layer, _layers, check_supported


def _kept(lay: _Layer, plan: dict) -> tuple[list[int], list[int]]:
    """Kept head ids and neuron ids of one layer, after checking the plan against it."""
    heads = sorted(set(plan.get("heads", {}).get(lay.index, [])))
    neurons = sorted(set(plan.get("neurons", {}).get(lay.index, [])))
    for kind, ids, n in (("head", heads, lay.heads), ("neuron", neurons, lay.neurons)):
        if ids and not 0 <= ids[0] <= ids[-1] < n:
            raise ValueError(f"plan removes {kind} ids {ids} from layer {lay.index}, which has {n} {kind}s")
        if len(ids) == n:
            raise ValueError(f"plan removes every {kind} of layer {lay.index}; keep at least one")
    return [h for h in range(lay.heads) if h not in heads], [u for u in range(lay.neurons) if u not in neurons]


def _check_layers(model: nn.Module, plan: dict) -> list[_Layer]:
    layers = _layers(model)
    for kind in ("heads", "neurons"):
        bad = [k for k in plan.get(kind, {}) if not (isinstance(k, int) and 0 <= k < len(layers))]
        if bad:
            raise ValueError(f"plan names layers {bad} in {kind!r}; the model has layers 0..{len(layers) - 1}")
    return layers


def _head_rows(heads: list[int], head_size: int) -> torch.Tensor:
    """Row (or column) indices of the given heads in a (nh * hs)-wide projection."""
    return (torch.tensor(heads)[:, None] * head_size + torch.arange(head_size)).reshape(-1)


@torch.no_grad()
def mask_model(model: nn.Module, plan: dict) -> nn.Module:
    """Zero, in place, the planned heads' Q/K/V rows and biases and attention-output columns, and the
    planned neurons' FFN-in rows and biases and FFN-out columns (the "masked original"); returns it."""
    for lay in _check_layers(model, plan):
        kept_h, kept_n = _kept(lay, plan)
        gone_h = [h for h in range(lay.heads) if h not in kept_h]
        gone_n = torch.tensor([u for u in range(lay.neurons) if u not in kept_n], dtype=torch.long)
        rows = _head_rows(gone_h, lay.head_size) if gone_h else torch.empty(0, dtype=torch.long)
        for role in ("query", "key", "value"):
            lin = lay.lin(role)
            lin.weight[rows.to(lin.weight.device)] = 0
            if lin.bias is not None:
                lin.bias[rows.to(lin.bias.device)] = 0
        attn_out = lay.lin("attn_out")
        attn_out.weight[:, rows.to(attn_out.weight.device)] = 0
        ffn_in, ffn_out = lay.lin("ffn_in"), lay.lin("ffn_out")
        ffn_in.weight[gone_n.to(ffn_in.weight.device)] = 0
        if ffn_in.bias is not None:
            ffn_in.bias[gone_n.to(ffn_in.bias.device)] = 0
        ffn_out.weight[:, gone_n.to(ffn_out.weight.device)] = 0
    return model


def _select(lin: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping ``index`` along ``dim`` of the weight (0: outputs, 1: inputs); same dtype/device."""
    w = lin.weight
    index = index.to(w.device)
    shape = list(w.shape)
    shape[dim] = len(index)
    new = nn.Linear(shape[1], shape[0], bias=lin.bias is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w.index_select(dim, index))
        if lin.bias is not None:
            new.bias.copy_(lin.bias[index] if dim == 0 else lin.bias)
    for p, q in zip(new.parameters(), lin.parameters()):
        p.requires_grad_(q.requires_grad)
    return new


def _resize(lay: _Layer, heads: list[int], neurons: list[int]) -> None:
    rows = _head_rows(heads, lay.head_size)
    for role in ("query", "key", "value"):
        setattr(*lay.parent(role), _select(lay.lin(role), rows, 0))
    setattr(*lay.parent("attn_out"), _select(lay.lin("attn_out"), rows, 1))
    idx = torch.tensor(neurons, dtype=torch.long)
    setattr(*lay.parent("ffn_in"), _select(lay.lin("ffn_in"), idx, 0))
    setattr(*lay.parent("ffn_out"), _select(lay.lin("ffn_out"), idx, 1))
    attn = lay.parent("query")[0]
    if hasattr(attn, lay.heads_attr):
        setattr(attn, lay.heads_attr, len(heads))
    if hasattr(attn, "all_head_size"):
        attn.all_head_size = len(heads) * lay.head_size


def shrink(model: nn.Module, plan: dict) -> nn.Module:
    """Physically remove the planned heads and neurons, in place; returns ``model``.

    Q/K/V become ``(kept_heads * d_head, d)`` and the attention output ``(d, kept_heads * d_head)``;
    FFN-in becomes ``(kept_neurons, d)`` and FFN-out ``(d, kept_neurons)``. Logits equal those of
    :func:`mask_model` on the same plan. The per-layer shapes and the original ids of the removed
    heads go into ``config.kaviz_structured`` so that :func:`load_shrunk` can rebuild the model.
    """
    layers = _check_layers(model, plan)
    full, original = dims(model)["heads"], kept_heads(model)
    for lay in layers:
        kept_h, kept_n = _kept(lay, plan)
        original[lay.index] = [original[lay.index][h] for h in kept_h]
        _resize(lay, kept_h, kept_n)
    setattr(
        model.config,
        CONFIG_KEY,
        {
            "heads": [lay.heads for lay in layers],
            "intermediate": [lay.neurons for lay in layers],
            "pruned_heads": {str(i): [h for h in range(full) if h not in kept] for i, kept in enumerate(original)},
        },
    )
    return model


def kept_heads(model: nn.Module) -> list[list[int]]:
    """Original ids of the heads each encoder layer still has (all for a dense model): index a dense
    teacher's attentions ``(B, H, T, T)`` with them to compare with a shrunk student's ``(B, h_l, T, T)``."""
    pruned = (getattr(model.config, CONFIG_KEY, None) or {}).get("pruned_heads", {})
    full = range(dims(model)["heads"])
    return [[h for h in full if h not in pruned.get(str(i), [])] for i in range(len(encoder_layers(model)))]


def structured_sparsity(model: nn.Module, reference_encoder_params: int) -> float:
    """``1 - encoder linear weights now / reference_encoder_params`` (the dense teacher's count), so a
    shrunk model sits on the same sparsity axis as unstructured pruning."""
    if reference_encoder_params <= 0:
        raise ValueError(f"reference_encoder_params must be positive, got {reference_encoder_params}")
    return 1.0 - encoder_params(model) / reference_encoder_params


@torch.no_grad()
def plan_from_zeros(model: nn.Module) -> dict:
    """The structured plan a masked model carries: per layer, the heads whose attention-output columns
    are all zero and the FFN neurons whose FFN-out columns are all zero (what they write is gone).
    Layers keep at least one head and one neuron (a layer with none found keeps its first)."""
    check_supported(model)
    st, d = structure_of(model), dims(model)
    head_size = d["hidden"] // d["heads"]
    out: dict = {"heads": {}, "neurons": {}}
    for i, layer in enumerate(encoder_layers(model)):
        attn_out = layer.get_submodule(st.linears["attn_out"]).weight  # (hidden, heads * head_size)
        ffn_out = layer.get_submodule(st.linears["ffn_out"]).weight  # (hidden, intermediate)
        dead_h = (attn_out.reshape(attn_out.shape[0], -1, head_size) == 0).all(dim=2).all(dim=0)  # (heads,)
        dead_n = (ffn_out == 0).all(dim=0)  # (intermediate,)
        heads = dead_h.nonzero().flatten().tolist()
        neurons = dead_n.nonzero().flatten().tolist()
        out["heads"][i] = heads[:-1] if len(heads) == dead_h.numel() else heads
        out["neurons"][i] = neurons[:-1] if len(neurons) == dead_n.numel() else neurons
    return out
