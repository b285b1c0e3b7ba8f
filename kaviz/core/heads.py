"""Attention heads through the architecture table: which K/V head a query head reads, masks that
remove heads, and heads whose weights are gone. Fused (row-slices of one matrix), grouped-query
(K/V heads shared by ``heads / kv_heads`` query heads) and Conv1D (stored ``(in, out)``) layouts
come from :mod:`kaviz.core.structure`; nothing here branches on a family.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from kaviz.core.structure import dims, is_transposed, oriented, parts, prunable_linears


def kv_group(model: nn.Module, head: int) -> int:
    """The K/V head that query head ``head`` reads (itself without grouped-query attention)."""
    d = dims(model)
    return head // (d["heads"] // d["kv_heads"])


def head_masks(model: nn.Module, heads: dict[int, list[int]]) -> dict[str, torch.Tensor]:
    """Boolean keep-masks (shaped like each stored weight) that remove the given query heads
    ``{layer: [head, ...]}``: each head's query rows and attention-output columns; a K/V head's rows
    only when *every* query head it serves is removed (grouped-query attention shares them)."""
    d = dims(model)
    hd, group = d["head_dim"], d["heads"] // d["kv_heads"]
    lins = prunable_linears(model)
    keep = {name: torch.ones(oriented(m).shape, dtype=torch.bool) for name, m in lins.items()}  # (out, in)
    for p in parts(model):
        gone = sorted(set(heads.get(p.layer, ())))
        bad = [h for h in gone if not 0 <= h < d["heads"]]
        if bad:
            raise ValueError(f"layer {p.layer} has heads 0..{d['heads'] - 1}; asked to remove {bad}")
        if p.role == "query":
            for h in gone:
                keep[p.name][p.rows.start + h * hd : p.rows.start + (h + 1) * hd] = False
        elif p.role in ("key", "value"):
            for g in range(d["kv_heads"]):
                if all(q in gone for q in range(g * group, (g + 1) * group)):
                    keep[p.name][p.rows.start + g * hd : p.rows.start + (g + 1) * hd] = False
        elif p.role == "attn_out":
            for h in gone:
                keep[p.name][p.rows, h * hd : (h + 1) * hd] = False
    return {name: (k.T if is_transposed(lins[name]) else k) for name, k in keep.items()}


@torch.no_grad()
def zero_heads(model: nn.Module, heads: dict[int, list[int]]) -> nn.Module:
    """A copy of ``model`` with the given query heads removed by zeroing (see :func:`head_masks`)."""
    out = copy.deepcopy(model)
    lins = prunable_linears(out)
    for name, keep in head_masks(out, heads).items():
        lins[name].weight.mul_(keep.to(lins[name].weight.dtype))
    return out


@torch.no_grad()
def dead_heads(model: nn.Module) -> set[tuple[int, int]]:
    """(layer, query head), 0-based, whose query rows, or the rows of the K/V head it reads, are all
    zero: their attention maps carry no content (uniform over the keys)."""
    d = dims(model)
    hd, group = d["head_dim"], d["heads"] // d["kv_heads"]
    lins = prunable_linears(model)
    out = set()
    for p in parts(model):
        if p.role not in ("query", "key"):
            continue
        w = oriented(lins[p.name])[p.rows]  # (n * hd, in)
        dead = (w.reshape(-1, hd * w.shape[1]) == 0).all(dim=1)  # (n,)
        for k in torch.nonzero(dead).flatten().tolist():
            qs = [k] if p.role == "query" else range(k * group, (k + 1) * group)
            out |= {(p.layer, q) for q in qs}
    return out
