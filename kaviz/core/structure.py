"""Architectures described as data: where the layers, their weight matrices and their roles live.

One row per ``config.model_type`` (nn_pruning's ``LAYER_PATTERNS`` idea). Masks, sparsity tables,
per-head zero detection, small-dense students, distillation, capture and every metric read only
this table, so supporting a new architecture means adding a row here (see the README, "Model
families").

A row names, inside one layer, each prunable weight matrix and the *roles* it holds, in the order
of its output rows:

- separate projections: ``"attention.self.query": ("query",)``;
- fused projections: ``"attn.Wqkv": ("query", "key", "value")`` (ModernBERT, GPT-2 ``c_attn``, Phi-3
  ``qkv_proj``); a role is then a row-slice of the fused matrix, sized from the config;
- gated FFNs: ``ffn_gate`` (the gate), ``ffn_in`` (the up projection) and ``ffn_out`` (down);
- grouped-query attention: ``kv_heads_attr`` names the config field with the number of K/V heads
  (each K/V head serves ``heads / kv_heads`` query heads);
- GPT-2's ``Conv1D`` stores weights as ``(in, out)``: ``transposed=True``; :func:`oriented` gives
  every matrix as an ``(out, in)`` view, so the code that prunes rows or input columns never
  branches on the family;
- ``attention``: what ``outputs.attentions`` holds with kaviz's attention implementation:
  ``"scores"`` (pre-softmax, every family on transformers' AttentionInterface) or ``"probs"``
  (families with their own attention code, e.g. DeBERTa-v2, which return probabilities).

Role sizes: query ``heads * head_dim``; key and value ``kv_heads * head_dim``; ffn_gate and ffn_in
``intermediate``; attn_out and ffn_out ``hidden``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from kaviz.core.errors import KavizError

#: Every role a matrix (or a row-slice of a fused one) can hold, in display order.
ROLES = ("query", "key", "value", "attn_out", "ffn_gate", "ffn_in", "ffn_out")
ATTENTION_ROLES = ("query", "key", "value", "attn_out")


@dataclass(frozen=True)
class Structure:
    """Where things are in a ``*ForSequenceClassification`` model of one architecture."""

    base: str  # attribute holding the base model, e.g. "bert"
    layers: str  # dotted path from the base model to the ModuleList of layers
    matrices: dict[str, tuple[str, ...]]  # dotted path inside one layer -> roles, in output-row order
    embeddings: str = "embeddings"  # dotted path from the base model to the input embeddings (attribution)
    num_layers_attr: str = "num_hidden_layers"
    hidden_attr: str = "hidden_size"
    heads_attr: str = "num_attention_heads"
    intermediate_attr: str = "intermediate_size"  # None in the config -> 4 * hidden (GPT-2's n_inner)
    kv_heads_attr: str | None = None  # grouped-query attention: config field with the K/V head count
    head_dim_attr: str | None = None  # config field with the head size when it is not hidden / heads
    transposed: bool = False  # weights stored (in, out), GPT-2's Conv1D
    attention: Literal["scores", "probs"] = "scores"  # what outputs.attentions holds
    causal: bool = False  # a decoder (causal LM): perplexity and completion probes apply
    extra: dict[str, str] = field(default_factory=dict)  # free notes shown in the README table

    @property
    def linears(self) -> dict[str, str]:
        """role -> dotted path of the matrix holding it (fused roles share a path)."""
        return {role: path for path, roles in self.matrices.items() for role in roles}

    @property
    def fused(self) -> bool:
        return any(len(roles) > 1 for roles in self.matrices.values())

    @property
    def gated(self) -> bool:
        return any("ffn_gate" in roles for roles in self.matrices.values())


_BERT = {
    "attention.self.query": ("query",),
    "attention.self.key": ("key",),
    "attention.self.value": ("value",),
    "attention.output.dense": ("attn_out",),
    "intermediate.dense": ("ffn_in",),
    "output.dense": ("ffn_out",),
}
_LLAMA = {
    "self_attn.q_proj": ("query",),
    "self_attn.k_proj": ("key",),
    "self_attn.v_proj": ("value",),
    "self_attn.o_proj": ("attn_out",),
    "mlp.gate_proj": ("ffn_gate",),
    "mlp.up_proj": ("ffn_in",),
    "mlp.down_proj": ("ffn_out",),
}
_DECODER = dict(
    base="model", layers="layers", embeddings="embed_tokens", kv_heads_attr="num_key_value_heads",
    head_dim_attr="head_dim", causal=True,
)  # fmt: skip

STRUCTURES: dict[str, Structure] = {
    "bert": Structure(base="bert", layers="encoder.layer", matrices=_BERT),
    "roberta": Structure(base="roberta", layers="encoder.layer", matrices=_BERT),
    "xlm-roberta": Structure(base="roberta", layers="encoder.layer", matrices=_BERT),
    "electra": Structure(base="electra", layers="encoder.layer", matrices=_BERT),
    "distilbert": Structure(
        base="distilbert",
        layers="transformer.layer",
        matrices={
            "attention.q_lin": ("query",),
            "attention.k_lin": ("key",),
            "attention.v_lin": ("value",),
            "attention.out_lin": ("attn_out",),
            "ffn.lin1": ("ffn_in",),
            "ffn.lin2": ("ffn_out",),
        },
        num_layers_attr="n_layers",
        hidden_attr="dim",
        heads_attr="n_heads",
        intermediate_attr="hidden_dim",
    ),
    "deberta-v2": Structure(
        base="deberta",
        layers="encoder.layer",
        matrices={
            "attention.self.query_proj": ("query",),
            "attention.self.key_proj": ("key",),
            "attention.self.value_proj": ("value",),
            "attention.output.dense": ("attn_out",),
            "intermediate.dense": ("ffn_in",),
            "output.dense": ("ffn_out",),
        },
        attention="probs",
    ),
    "modernbert": Structure(
        base="model",
        layers="layers",
        matrices={
            "attn.Wqkv": ("query", "key", "value"),
            "attn.Wo": ("attn_out",),
            "mlp.Wi": ("ffn_in", "ffn_gate"),  # input, gate = Wi(x).chunk(2)
            "mlp.Wo": ("ffn_out",),
        },
    ),
    "gpt2": Structure(
        base="transformer",
        layers="h",
        matrices={
            "attn.c_attn": ("query", "key", "value"),
            "attn.c_proj": ("attn_out",),
            "mlp.c_fc": ("ffn_in",),
            "mlp.c_proj": ("ffn_out",),
        },
        embeddings="wte",
        num_layers_attr="n_layer",
        hidden_attr="n_embd",
        heads_attr="n_head",
        intermediate_attr="n_inner",
        transposed=True,
        causal=True,
    ),
    "llama": Structure(matrices=_LLAMA, **_DECODER),
    "qwen2": Structure(matrices=_LLAMA, **_DECODER),
    "mistral": Structure(matrices=_LLAMA, **_DECODER),
    "phi3": Structure(
        matrices={
            "self_attn.qkv_proj": ("query", "key", "value"),
            "self_attn.o_proj": ("attn_out",),
            "mlp.gate_up_proj": ("ffn_gate", "ffn_in"),  # gate, up = gate_up_proj(x).chunk(2)
            "mlp.down_proj": ("ffn_out",),
        },
        **_DECODER,
    ),
}


class UnsupportedArchitectureError(KavizError, ValueError):
    """The model's architecture has no row in :data:`STRUCTURES`."""


def structure_for(model_type: str | None) -> Structure:
    if model_type not in STRUCTURES:
        raise UnsupportedArchitectureError(
            f"architecture {model_type!r} is not described in kaviz.core.structure.STRUCTURES "
            f"(known: {', '.join(sorted(STRUCTURES))}); add a Structure row naming its base model attribute, "
            "its layer list and, per layer, the dotted paths of its weight matrices with the roles each holds "
            "(query/key/value/attn_out/ffn_gate/ffn_in/ffn_out; several for a fused matrix), plus the config "
            "fields for layers, width, heads (and K/V heads) and FFN size"
        )
    return STRUCTURES[model_type]


def structure_of(model: nn.Module) -> Structure:
    return structure_for(getattr(getattr(model, "config", None), "model_type", None))


def base_model(model: nn.Module) -> nn.Module:
    return getattr(model, structure_of(model).base)


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's transformer layers (encoder or decoder blocks)."""
    return base_model(model).get_submodule(structure_of(model).layers)


def embeddings(model: nn.Module) -> nn.Module:
    """The input embedding module (what attribution attributes to)."""
    return base_model(model).get_submodule(structure_of(model).embeddings)


def config_dims(config, st: Structure | None = None) -> dict[str, int]:
    """num_layers, hidden, heads, kv_heads, head_dim, intermediate of a transformers config."""
    st = st or structure_for(getattr(config, "model_type", None))
    hidden, heads = getattr(config, st.hidden_attr), getattr(config, st.heads_attr)
    kv = getattr(config, st.kv_heads_attr, None) if st.kv_heads_attr else None
    head_dim = getattr(config, st.head_dim_attr, None) if st.head_dim_attr else None
    inter = getattr(config, st.intermediate_attr, None)
    return {
        "num_layers": getattr(config, st.num_layers_attr),
        "hidden": hidden,
        "heads": heads,
        "kv_heads": kv or heads,
        "head_dim": head_dim or hidden // heads,
        "intermediate": inter or 4 * hidden,
    }


def dims(model: nn.Module) -> dict[str, int]:
    """num_layers, hidden, heads, kv_heads, head_dim, intermediate of a model's config."""
    return config_dims(model.config, structure_of(model))


def role_size(role: str, d: dict[str, int]) -> int:
    """Output rows a role takes in a matrix (``d`` from :func:`dims`)."""
    if role == "query":
        return d["heads"] * d["head_dim"]
    if role in ("key", "value"):
        return d["kv_heads"] * d["head_dim"]
    if role in ("ffn_gate", "ffn_in"):
        return d["intermediate"]
    if role in ("attn_out", "ffn_out"):
        return d["hidden"]
    raise ValueError(f"unknown role {role!r}; known: {', '.join(ROLES)}")


def is_transposed(module: nn.Module) -> bool:
    """A weight stored ``(in, out)`` (transformers' ``Conv1D``, GPT-2) rather than ``(out, in)``."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def oriented(module: nn.Module) -> torch.Tensor:
    """The module's weight as an ``(out, in)`` view (in-place edits reach the parameter)."""
    return module.weight.T if is_transposed(module) else module.weight


def in_features(module: nn.Module) -> int:
    return oriented(module).shape[1]


def prunable_linears(model: nn.Module) -> dict[str, nn.Module]:
    """Weight matrices that pruning touches, by full module name, in layer then table order.

    ``nn.Linear`` (or ``Conv1D`` for GPT-2; use :func:`oriented` for an ``(out, in)`` view).
    Embeddings, biases, norms, pooler and classifier are not included: they stay dense.
    """
    st = structure_of(model)
    prefix = f"{st.base}.{st.layers}"
    out: dict[str, nn.Module] = {}
    for i, layer in enumerate(encoder_layers(model)):
        for path in st.matrices:
            mod = layer.get_submodule(path)
            if not isinstance(mod, nn.Linear) and not is_transposed(mod):
                raise UnsupportedArchitectureError(
                    f"{prefix}.{i}.{path} is {type(mod).__name__}, not nn.Linear (or transformers' Conv1D)"
                )
            out[f"{prefix}.{i}.{path}"] = mod
    return out


def _split(name: str, st: Structure) -> tuple[int, str]:
    rest = name[len(f"{st.base}.{st.layers}.") :]
    idx, _, path = rest.partition(".")
    return int(idx), path


def describe(name: str, model: nn.Module) -> tuple[int, str]:
    """(layer index, role) of a full name from :func:`prunable_linears`; a fused matrix's role is its
    roles joined by ``+`` (e.g. ``"query+key+value"``)."""
    st = structure_of(model)
    idx, path = _split(name, st)
    return idx, "+".join(st.matrices[path])


@dataclass(frozen=True)
class Part:
    """One role of one layer: which matrix holds it and which of its ``(out, in)`` rows."""

    name: str  # full module name (a key of prunable_linears)
    layer: int
    role: str
    rows: slice


def role_rows(roles: tuple[str, ...], d: dict[str, int]) -> dict[str, slice]:
    """Row slice of each role in a matrix holding ``roles`` (in that order)."""
    out, start = {}, 0
    for role in roles:
        size = role_size(role, d)
        out[role] = slice(start, start + size)
        start += size
    return out


def parts(model: nn.Module) -> list[Part]:
    """Every (layer, role) with its matrix and rows, in layer then :data:`ROLES` order.

    Checks that each matrix has exactly the rows its roles need (a table row that does not match
    the model raises :class:`UnsupportedArchitectureError` naming the matrix).
    """
    st, d = structure_of(model), dims(model)
    out = []
    for name, mod in prunable_linears(model).items():
        layer, path = _split(name, st)
        roles, have = st.matrices[path], oriented(mod).shape[0]
        # one role: every row (a structurally shrunk layer has fewer than the config says)
        rows = role_rows(roles, d) if len(roles) > 1 else {roles[0]: slice(0, have)}
        need = sum(s.stop - s.start for s in rows.values())
        if have != need:
            raise UnsupportedArchitectureError(
                f"{name} has {have} output rows but its roles {st.matrices[path]} need {need} "
                f"(dims {d}); the structure row does not match this model"
            )
        out += [Part(name, layer, role, s) for role, s in rows.items()]
    order = {r: k for k, r in enumerate(ROLES)}
    return sorted(out, key=lambda p: (p.layer, order[p.role]))


def role_weight(model: nn.Module, layer: int, role: str) -> torch.Tensor:
    """The ``(rows, in)`` view of one role's weights in one layer (edits reach the model)."""
    lins = prunable_linears(model)
    for p in parts(model):
        if p.layer == layer and p.role == role:
            return oriented(lins[p.name])[p.rows]
    raise ValueError(f"layer {layer} has no role {role!r} (roles: {', '.join(_roles(model))})")


def _roles(model: nn.Module) -> list[str]:
    present = {r for roles in structure_of(model).matrices.values() for r in roles}
    return [r for r in ROLES if r in present]


def roles_of(model: nn.Module) -> list[str]:
    """The roles this architecture has, in :data:`ROLES` order (no ``ffn_gate`` unless gated)."""
    return _roles(model)


def attention_kind(model: nn.Module) -> Literal["scores", "probs"]:
    """What ``outputs.attentions`` holds for this model with kaviz's attention implementation."""
    return structure_of(model).attention


def attention_scores(model: nn.Module, attentions: torch.Tensor) -> torch.Tensor:
    """Pre-softmax scores from what a model's ``outputs.attentions`` holds: as they are for
    ``attention="scores"`` rows; log-probabilities for ``"probs"`` rows (softmax gives the same
    probabilities back; padded keys, probability 0, become the dtype's minimum, as masked scores)."""
    if attention_kind(model) == "scores":
        return attentions
    low = torch.finfo(attentions.dtype).min
    return torch.where(attentions > 0, attentions.clamp_min(torch.finfo(attentions.dtype).tiny).log(), low)
