"""Architectures described as data: where the encoder layers and their linear maps live.

One row per ``config.model_type``. Pruning, distillation and small-dense construction read only
this table, so supporting a new BERT-like architecture means adding a row here.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from kaviz.core.errors import KavizError

ROLES = ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")


@dataclass(frozen=True)
class Structure:
    """Where things are in a ``*ForSequenceClassification`` model of one architecture."""

    base: str  # attribute holding the base model, e.g. "bert"
    layers: str  # dotted path from the base model to the ModuleList of encoder layers
    linears: dict[str, str]  # role -> dotted path inside one layer
    num_layers_attr: str = "num_hidden_layers"
    hidden_attr: str = "hidden_size"
    heads_attr: str = "num_attention_heads"
    intermediate_attr: str = "intermediate_size"


_BERT_LINEARS = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attn_out": "attention.output.dense",
    "ffn_in": "intermediate.dense",
    "ffn_out": "output.dense",
}

STRUCTURES: dict[str, Structure] = {
    "bert": Structure(base="bert", layers="encoder.layer", linears=_BERT_LINEARS),
    "roberta": Structure(base="roberta", layers="encoder.layer", linears=_BERT_LINEARS),
    "xlm-roberta": Structure(base="roberta", layers="encoder.layer", linears=_BERT_LINEARS),
    "electra": Structure(base="electra", layers="encoder.layer", linears=_BERT_LINEARS),
    "distilbert": Structure(
        base="distilbert",
        layers="transformer.layer",
        linears={
            "query": "attention.q_lin",
            "key": "attention.k_lin",
            "value": "attention.v_lin",
            "attn_out": "attention.out_lin",
            "ffn_in": "ffn.lin1",
            "ffn_out": "ffn.lin2",
        },
        num_layers_attr="n_layers",
        hidden_attr="dim",
        heads_attr="n_heads",
        intermediate_attr="hidden_dim",
    ),
}


class UnsupportedArchitectureError(KavizError, ValueError):
    """The model's architecture has no row in :data:`STRUCTURES`."""


def structure_of(model: nn.Module) -> Structure:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in STRUCTURES:
        raise UnsupportedArchitectureError(
            f"architecture {model_type!r} is not described in kaviz.core.structure.STRUCTURES "
            f"(known: {', '.join(sorted(STRUCTURES))}); add a Structure row naming its base model attribute, "
            "its encoder layer list and the dotted paths of Q/K/V/attention-output/FFN linears"
        )
    return STRUCTURES[model_type]


def base_model(model: nn.Module) -> nn.Module:
    return getattr(model, structure_of(model).base)


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    return base_model(model).get_submodule(structure_of(model).layers)


def prunable_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """Encoder linears that pruning touches, by full module name, in layer then role order.

    Embeddings, biases, LayerNorm, pooler and classifier are not included: they stay dense.
    """
    st = structure_of(model)
    prefix = f"{st.base}.{st.layers}"
    out: dict[str, nn.Linear] = {}
    for i, layer in enumerate(encoder_layers(model)):
        for role in ROLES:
            mod = layer.get_submodule(st.linears[role])
            if not isinstance(mod, nn.Linear):
                raise UnsupportedArchitectureError(
                    f"{prefix}.{i}.{st.linears[role]} is {type(mod).__name__}, not nn.Linear"
                )
            out[f"{prefix}.{i}.{st.linears[role]}"] = mod
    return out


def describe(name: str, model: nn.Module) -> tuple[int, str]:
    """(layer index, role) of a full linear name returned by :func:`prunable_linears`."""
    st = structure_of(model)
    rest = name[len(f"{st.base}.{st.layers}.") :]
    idx, _, path = rest.partition(".")
    role = next(r for r, p in st.linears.items() if p == path)
    return int(idx), role


def dims(model: nn.Module) -> dict[str, int]:
    """num_layers, hidden, heads, intermediate of a model's config."""
    st, cfg = structure_of(model), model.config
    return {
        "num_layers": getattr(cfg, st.num_layers_attr),
        "hidden": getattr(cfg, st.hidden_attr),
        "heads": getattr(cfg, st.heads_attr),
        "intermediate": getattr(cfg, st.intermediate_attr),
    }
