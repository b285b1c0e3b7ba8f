"""Small random models of every family in :data:`kaviz.core.structure.STRUCTURES`, built in code.

``model.name_or_path: tiny:<model_type>`` (e.g. ``tiny:gpt2``, ``tiny:llama``) runs the whole
pipeline offline on a 2-layer, 32-wide model of that family with the packaged tokenizer: what the
parametrised family tests use, and a quick way to check a new structure row end to end. ``tiny``
alone is the 4-layer, 64-wide BERT of ``kaviz demo --tiny``.
"""

from __future__ import annotations

from typing import Any

from kaviz.core.errors import KavizError

_COMMON = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}
_GQA = {**_COMMON, "num_key_value_heads": 2}  # two query heads per K/V head

#: model_type -> (transformers config class name, its arguments beyond vocabulary and labels)
TINY_FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "bert": ("BertConfig", _COMMON),
    "roberta": ("RobertaConfig", _COMMON),
    "xlm-roberta": ("XLMRobertaConfig", _COMMON),
    "distilbert": ("DistilBertConfig", {"dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 64}),
    "electra": ("ElectraConfig", {**_COMMON, "embedding_size": 32}),
    "deberta-v2": ("DebertaV2Config", _COMMON),
    "modernbert": ("ModernBertConfig", _COMMON),
    "gpt2": ("GPT2Config", {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_inner": 64}),
    "llama": ("LlamaConfig", _GQA),
    "qwen2": ("Qwen2Config", _GQA),
    "mistral": ("MistralConfig", _GQA),
    "phi3": ("Phi3Config", _GQA),
}


class UnknownTinyFamilyError(KavizError, ValueError):
    """``tiny:<family>`` names a family without a tiny config."""


def tiny_family(name: str) -> str:
    """The model_type of a ``tiny`` / ``tiny:<model_type>`` model name (``tiny`` alone is BERT)."""
    _, _, family = name.partition(":")
    family = family or "bert"
    if family not in TINY_FAMILIES:
        raise UnknownTinyFamilyError(
            f"model {name!r}: no tiny config for {family!r}; known: " + ", ".join(f"tiny:{f}" for f in TINY_FAMILIES)
        )
    return family


def tiny_family_config(family: str, vocab_size: int, num_labels: int, tokenizer: Any = None):
    """A transformers config for a 2-layer, 32-wide random model of ``family`` (positions 128).

    Special token ids come from ``tokenizer`` when given (pad, and cls/sep as bos/eos), so decoders
    find the last real token through ``pad_token_id`` and no id lies outside the vocabulary.
    """
    import transformers

    cls_name, extra = TINY_FAMILIES[tiny_family(f"tiny:{family}")]
    pad = getattr(tokenizer, "pad_token_id", None) or 0
    bos = getattr(tokenizer, "cls_token_id", None) or getattr(tokenizer, "bos_token_id", None) or pad
    eos = getattr(tokenizer, "sep_token_id", None) or getattr(tokenizer, "eos_token_id", None) or pad
    ids = {"pad_token_id": pad, "bos_token_id": bos, "eos_token_id": eos}
    if family == "modernbert":
        ids |= {"cls_token_id": bos, "sep_token_id": eos}
    positions = {"gpt2": {"n_positions": 128}}.get(family, {"max_position_embeddings": 128})
    return getattr(transformers, cls_name)(vocab_size=vocab_size, num_labels=num_labels, **extra, **positions, **ids)
