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
    describe,
    dims,
    oriented,
    parts,
    prunable_linears,
    role_weight,
    roles_of,
    structure_of,
)
from kaviz.train.families import TINY_FAMILIES, UnknownTinyFamilyError, tiny_family, tiny_family_config


def tiny(family: str, seed: int = 0) -> nn.Module:
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(tiny_family_config(family, 100, 2)).eval()


def test_every_row_has_a_tiny_family_and_back():
    assert set(TINY_FAMILIES) == set(STRUCTURES)  # every row runs end to end in tests/test_families.py


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
