"""The architecture table (kaviz.core.structure) on tiny random models of every family it describes.

Fused projections (GPT-2 ``c_attn``, ModernBERT ``Wqkv``, Phi-3 ``qkv_proj``), GPT-2's transposed
``Conv1D``, gated FFNs and grouped-query attention are checked against the layouts transformers'
own forward code uses (slices computed here by hand, from the config).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kaviz.core.structure import (
    STRUCTURES,
    UnsupportedArchitectureError,
    dead_heads,
    describe,
    dims,
    head_masks,
    oriented,
    parts,
    prunable_linears,
    role_weight,
    roles_of,
    structure_of,
    zero_heads,
)
from kaviz.train.families import TINY_FAMILIES, UnknownTinyFamilyError, tiny_family, tiny_family_config


def tiny(family: str, seed: int = 0) -> nn.Module:
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(tiny_family_config(family, 100, 2)).eval()


def test_every_row_has_a_tiny_family_and_back():
    assert set(TINY_FAMILIES) <= set(STRUCTURES)
    assert set(STRUCTURES) - set(TINY_FAMILIES) == {"xlm-roberta"}  # same code as roberta


@pytest.mark.parametrize("family", list(TINY_FAMILIES))
def test_parts_cover_every_row_of_every_matrix_once(family):
    model = tiny(family)
    d = dims(model)
    lins = prunable_linears(model)
    covered = {name: torch.zeros(oriented(m).shape[0], dtype=torch.int) for name, m in lins.items()}
    for p in parts(model):
        covered[p.name][p.rows] += 1
    assert all(bool((c == 1).all()) for c in covered.values())
    roles = roles_of(model)
    assert len(parts(model)) == d["num_layers"] * len(roles)
    gated = family in ("modernbert", "llama", "qwen2", "mistral", "phi3")
    assert ("ffn_gate" in roles) == gated
    q = role_weight(model, 0, "query")
    assert q.shape == (d["heads"] * d["head_dim"], d["hidden"])
    assert role_weight(model, 0, "key").shape == (d["kv_heads"] * d["head_dim"], d["hidden"])


def test_fused_roles_are_the_slices_the_forward_uses():
    """GPT-2 splits c_attn's output into q, k, v; Phi-3 qkv_proj likewise, with fewer K/V rows;
    ModernBERT's Wi gives (input, gate) and Phi-3's gate_up_proj (gate, up)."""
    gpt2 = tiny("gpt2")
    w = gpt2.transformer.h[0].attn.c_attn.weight  # (in, 3 * hidden): Conv1D
    assert torch.equal(role_weight(gpt2, 0, "key"), w[:, 32:64].T)
    phi = tiny("phi3")
    qkv = phi.model.layers[1].self_attn.qkv_proj.weight  # (4*8 + 2*8 + 2*8, 32)
    assert qkv.shape[0] == 64
    assert torch.equal(role_weight(phi, 1, "value"), qkv[48:64])
    gu = phi.model.layers[1].mlp.gate_up_proj.weight
    assert torch.equal(role_weight(phi, 1, "ffn_gate"), gu[:64]) and torch.equal(role_weight(phi, 1, "ffn_in"), gu[64:])
    mb = tiny("modernbert")
    wi = mb.model.layers[0].mlp.Wi.weight
    assert torch.equal(role_weight(mb, 0, "ffn_in"), wi[:64]) and torch.equal(role_weight(mb, 0, "ffn_gate"), wi[64:])
    assert describe("transformer.h.1.attn.c_attn", gpt2) == (1, "query+key+value")


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


def test_unknown_architecture_names_the_fields_to_add():
    with pytest.raises(UnsupportedArchitectureError, match="roles each holds"):
        structure_of(nn.Linear(2, 2))


def test_a_row_that_does_not_match_the_model_is_refused(monkeypatch):
    from kaviz.core import structure

    model = tiny("gpt2")
    bad = structure.Structure(**{**STRUCTURES["gpt2"].__dict__, "matrices": {"attn.c_attn": ("query", "key")}})
    monkeypatch.setitem(structure.STRUCTURES, "gpt2", bad)
    with pytest.raises(UnsupportedArchitectureError, match="c_attn has 96 output rows"):
        parts(model)


def test_tiny_family_names():
    assert tiny_family("tiny") == "bert" and tiny_family("tiny:gpt2") == "gpt2"
    with pytest.raises(UnknownTinyFamilyError, match="tiny:llama"):
        tiny_family("tiny:t5")
