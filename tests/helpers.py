"""Builders shared by several test files: tiny BERT models, store configs and unit plans, tidy metric rows."""

from __future__ import annotations

import pandas as pd

from kaviz.core.config import RunConfig
from kaviz.store import unit_id


def store_config(name: str = "r1", **kw) -> dict:
    return RunConfig(name=name, methods=["knowledge-aware", "oneshot-magnitude"], sparsities=[0.5, 0.9], **kw).to_dict()


def store_units(methods=("knowledge-aware",), sparsities=(0.5, 0.9), seeds=(42,)) -> list[dict]:
    out = [{"unit": "pretrained", "stage": "pretrained"}, {"unit": "finetuned", "stage": "finetuned"}]
    for m in methods:
        for s in sparsities:
            for seed in seeds:
                uid = unit_id("pruned", m, s, seed)
                out.append({"unit": uid, "stage": "pruned", "method": m, "sparsity": s, "seed": seed})
    return out


def metric_rows(stage, method, sparsity, seed, values: dict[str, float]) -> list[dict]:
    unit = stage if stage != "pruned" else f"pruned_{method}_s{sparsity:g}_seed{seed}"
    return [
        {"run": "r", "stage": stage, "method": method, "sparsity": sparsity, "seed": seed, "unit": unit}
        | {"metric": k, "value": v}
        for k, v in values.items()
    ]


def sample_metrics() -> pd.DataFrame:
    """Teacher 0.9, pre-trained 0.5; oneshot at 0.5 (one seed) and 0.9 (two seeds: 0.6, 0.7);
    small-dense at 0.5 and 0.9; measured sparsity = target - 0.01."""
    rows = metric_rows("pretrained", "pretrained", 0.0, 1, {"score": 0.5, "f1": 0.4, "encoder_sparsity": 0.0})
    rows += metric_rows("finetuned", "finetuned", 0.0, 1, {"score": 0.9, "f1": 0.8, "encoder_sparsity": 0.0})
    for method, s, seed, score in [
        ("oneshot-magnitude", 0.5, 1, 0.8),
        ("oneshot-magnitude", 0.9, 1, 0.6),
        ("oneshot-magnitude", 0.9, 2, 0.7),
        ("small-dense", 0.5, 1, 0.85),
        ("small-dense", 0.9, 1, 0.75),
    ]:
        rows += metric_rows(
            "pruned", method, s, seed, {"score": score, "f1": score - 0.1, "encoder_sparsity": s - 0.01}
        )
    return pd.DataFrame(rows)


def tiny_bert(
    layers: int = 2,
    hidden: int = 32,
    heads: int = 4,
    inter: int = 64,
    num_labels: int = 2,
    seed: int = 0,
    vocab: int = 100,
    *,
    cls: str = "BertForSequenceClassification",
    kaviz_attention: bool = True,
    **config,
):
    """A tiny BERT built in code (no download), seeded: ``cls`` is any ``transformers`` Bert class;
    ``kaviz_attention`` switches on kaviz's eager attention that also returns pre-softmax scores;
    ``config`` adds BertConfig fields (e.g. ``initializer_range``)."""
    import torch
    import transformers

    from kaviz.train.models import register_attention

    torch.manual_seed(seed)
    cfg = transformers.BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=inter,
        num_labels=num_labels,
        **{"max_position_embeddings": 64, **config},
    )
    model = getattr(transformers, cls)(cfg)
    if kaviz_attention:
        model.set_attn_implementation(register_attention())
    return model
