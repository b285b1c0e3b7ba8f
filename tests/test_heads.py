"""Heads through the architecture table (kaviz.core.heads): removing one head zeroes exactly its
slices in fused, Conv1D and separate layouts, and grouped-query K/V heads go only with their group."""

from __future__ import annotations

import pytest
import torch

from kaviz.core.heads import dead_heads, head_masks, zero_heads
from kaviz.core.structure import describe, dims, oriented, prunable_linears, role_weight, structure_of
from tests.test_structure import tiny


def _zeroed(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Boolean map of the entries that became zero."""
    return (after == 0) & (before != 0)


@pytest.mark.parametrize("family", ["gpt2", "modernbert", "phi3", "llama", "bert"])
def test_zeroing_a_head_zeroes_exactly_its_slices(family):
    model = tiny(family)
    d = dims(model)
    hd, head = d["head_dim"], 1
    out = zero_heads(model, {1: [head]})
    before, after = prunable_linears(model), prunable_linears(out)
    st = structure_of(model)
    for name in before:
        wb, wa = oriented(before[name]).detach(), oriented(after[name]).detach()  # (out, in)
        expect = torch.zeros_like(wb, dtype=torch.bool)
        layer, _ = describe(name, model)
        if layer == 1:
            path = name.split(f".{layer}.", 1)[1]
            start = 0
            for role in st.matrices[path]:
                size = {"query": d["heads"] * hd, "key": d["kv_heads"] * hd, "value": d["kv_heads"] * hd}.get(
                    role, d["intermediate"] if role in ("ffn_in", "ffn_gate") else d["hidden"]
                )
                if role == "query":
                    expect[start + head * hd : start + (head + 1) * hd] = True
                if role in ("key", "value") and d["kv_heads"] == d["heads"]:
                    expect[start + head * hd : start + (head + 1) * hd] = True
                if role == "attn_out":
                    expect[:, head * hd : (head + 1) * hd] = True
                start += size
        assert torch.equal(_zeroed(wb, wa), expect), name
        assert torch.equal(wa[~expect], wb[~expect]), name  # nothing else moved
    assert dead_heads(out) == {(1, head)}
    assert dead_heads(model) == set()
    for m in prunable_linears(model).values():  # the model given was not changed
        assert bool((oriented(m) != 0).all())


@pytest.mark.parametrize("family", ["llama", "phi3", "qwen2", "mistral"])
def test_grouped_query_heads_share_key_value_rows(family):
    """4 query heads read 2 K/V heads (0,1 -> 0; 2,3 -> 1): K/V rows go only with the whole group."""
    model = tiny(family)
    d = dims(model)
    assert (d["heads"], d["kv_heads"]) == (4, 2)
    hd = d["head_dim"]
    k0 = role_weight(model, 0, "key")
    one = zero_heads(model, {0: [1]})
    assert torch.equal(role_weight(one, 0, "key"), k0)  # head 0 still reads K/V head 0
    both = zero_heads(model, {0: [0, 1]})
    k = role_weight(both, 0, "key")
    assert bool((k[:hd] == 0).all()) and torch.equal(k[hd:], k0[hd:])
    assert bool((role_weight(both, 0, "value")[:hd] == 0).all())
    assert dead_heads(both) == {(0, 0), (0, 1)}
    # a K/V head zeroed directly kills every query head that reads it
    with torch.no_grad():
        gone = zero_heads(model, {})
        role_weight(gone, 1, "key")[hd:] = 0
    assert dead_heads(gone) == {(1, 2), (1, 3)}


def test_head_masks_are_shaped_like_the_stored_weights():
    model = tiny("gpt2")
    masks = head_masks(model, {0: [0, 3]})
    for name, m in prunable_linears(model).items():
        assert masks[name].shape == m.weight.shape  # Conv1D: (in, out)
    with pytest.raises(ValueError, match="heads 0..3"):
        head_masks(model, {0: [4]})
