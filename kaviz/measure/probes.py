"""Probes of what a model knows: task knowledge per layer, and general (pre-training) knowledge.

* :func:`linear_probe` fits a linear model on each layer's sentence features and scores it on a
  held-out split: how linearly decodable the task still is at that layer.
* :func:`mlm_loss` (models with a masked-LM head) and :func:`sts_spearman` (any encoder) measure
  general knowledge; :func:`general_knowledge` picks the one that applies and records which.
* :func:`sts_pairs` reads STS-B-style pairs from a local GLUE folder or generates a small set.

Probes are a registry of plain functions (:data:`PROBES`, :data:`POOLINGS`); public functions take
a registry name or a callable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from kaviz.core.structure import structure_of
from kaviz.data import sts as sts_data
from kaviz.data.base import METRICS
from kaviz.train.models import eval_mode

# ----- task knowledge: linear probes per layer ------------------------------------------------------------

Probe = Callable[[np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]
Metric = Callable[[np.ndarray, np.ndarray], float]


def _logistic(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int) -> np.ndarray:
    """Class ids (n_test,) from an L2 logistic regression (C=1, lbfgs) on standardised features."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=1.0, max_iter=2000, random_state=seed)
    return clf.fit(x_train, y_train).predict(x_test)


def _ridge(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int) -> np.ndarray:
    """Scores (n_test,) from a ridge regression (alpha=1) on standardised features."""
    from sklearn.linear_model import Ridge

    return Ridge(alpha=1.0).fit(x_train, y_train).predict(x_test)


PROBES: dict[str, Probe] = {"logistic": _logistic, "ridge": _ridge}


def _resolve(kind: str, value: str | Callable, registry: dict[str, Callable]) -> tuple[str, Callable]:
    if callable(value):
        return getattr(value, "__name__", kind).lstrip("_"), value
    if value not in registry:
        raise ValueError(f"unknown {kind} {value!r}; known: {', '.join(registry)} (or pass a callable)")
    return value, registry[value]


def _probe_split(y: np.ndarray, train_fraction: float, seed: int, stratify: bool) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, test) index arrays; per class when ``stratify`` so every class is in both when it can be."""
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)] if stratify else [np.arange(len(y))]
    train, test = [], []
    for idx in groups:
        idx = rng.permutation(idx)
        k = int(round(train_fraction * len(idx)))
        if len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        train.append(idx[:k])
        test.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def linear_probe(
    features: Sequence[torch.Tensor | np.ndarray],
    labels: torch.Tensor | np.ndarray,
    *,
    regression: bool,
    train_fraction: float = 0.5,
    seed: int = 0,
    metric: str | Metric | None = None,
    probe: str | Probe | None = None,
) -> pd.DataFrame:
    """Fit a linear probe on each layer's features and score it on the held-out examples.

    ``features``: one ``(n, d)`` array per layer (sentence features, e.g. mean-pooled hidden
    states); ``labels``: ``(n,)`` class ids, or scores when ``regression``. The seeded split
    (stratified by class for classification) is the same for every layer; features are
    standardised on the probe-train part. The probe defaults to ``"logistic"`` (``"ridge"`` for
    regression), the metric to ``"accuracy"`` (``"pearson"``); names come from :data:`PROBES` and
    :data:`kaviz.data.base.METRICS`.

    Returns one row per layer: ``layer, metric, value, n_train, n_test``.
    """
    from sklearn.preprocessing import StandardScaler

    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction!r}")
    if len(features) == 0:
        raise ValueError("features is empty: expected one (n, d) array per layer")
    y = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
    if y.ndim != 1:
        raise ValueError(f"labels must have shape (n,), got {y.shape}")
    n = len(y)
    if n < 4:
        raise ValueError(f"a probe needs at least 4 examples (2 to train, 2 to test), got {n}")
    metric_name, metric_fn = _resolve("metric", metric or ("pearson" if regression else "accuracy"), METRICS)
    _, probe_fn = _resolve("probe", probe or ("ridge" if regression else "logistic"), PROBES)
    y = y.astype(np.float64) if regression else y.astype(np.int64)
    train, test = _probe_split(y, train_fraction, seed, stratify=not regression)
    if len(train) < 2 or len(test) < 1:
        raise ValueError(f"split of {n} examples at train_fraction={train_fraction} leaves {len(train)}/{len(test)}")
    if not regression and np.unique(y[train]).size < 2:
        raise ValueError(f"the probe-train split has {np.unique(y[train]).size} class(es); a classifier needs 2+")
    rows = []
    for layer, f in enumerate(features):
        x = np.asarray(f.detach().float().cpu() if isinstance(f, torch.Tensor) else f, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] != n:
            raise ValueError(f"features[{layer}] has shape {x.shape}; expected ({n}, d) to match the labels")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"features[{layer}] has NaN or infinite values")
        scaler = StandardScaler().fit(x[train])
        pred = probe_fn(scaler.transform(x[train]), y[train], scaler.transform(x[test]), seed)
        value = float(metric_fn(np.asarray(pred), y[test]))
        rows.append({"layer": layer, "metric": metric_name, "value": value, "n_train": len(train), "n_test": len(test)})
    return pd.DataFrame(rows, columns=["layer", "metric", "value", "n_train", "n_test"])


# ----- general knowledge: masked-LM loss -----------------------------------------------------------------

_MLM_ARCH_SUFFIXES = ("ForMaskedLM", "ForPreTraining")


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def has_mlm_head(path_or_model: str | Path | nn.Module) -> bool:
    """Whether a model (or a checkpoint's config) has a masked-LM head.

    A module has one when it has output embeddings (``BertForMaskedLM``; not a sequence classifier
    or a bare ``BertModel``); a folder or hub id when its config's ``architectures`` name an
    ``*ForMaskedLM`` / ``*ForPreTraining`` class (the packaged all-MiniLM-L6-v2 is a ``BertModel``).
    """
    if isinstance(path_or_model, nn.Module):
        get = getattr(path_or_model, "get_output_embeddings", None)
        return callable(get) and get() is not None
    from transformers import AutoConfig

    from kaviz.train.models import resolve_source

    cfg = AutoConfig.from_pretrained(resolve_source(str(path_or_model)))
    return any(a.endswith(_MLM_ARCH_SUFFIXES) for a in (getattr(cfg, "architectures", None) or []))


def _bert_mask(
    ids: torch.Tensor, special: torch.Tensor, mask_prob: float, mask_id: int, vocab: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking of one example: (inputs (T,), labels (T,) with -100 where not predicted)."""
    cand = ~special  # (T,)
    sel = (torch.rand(ids.shape, generator=g) < mask_prob) & cand
    if not sel.any() and cand.any():  # short texts: predict at least one token so every text counts
        pos = cand.nonzero().flatten()
        sel[pos[torch.randint(len(pos), (1,), generator=g)]] = True
    labels = torch.where(sel, ids, -100)
    r = torch.rand(ids.shape, generator=g)
    inputs = ids.clone()
    inputs[sel & (r < 0.8)] = mask_id  # 80% [MASK]
    rand = sel & (r >= 0.8) & (r < 0.9)  # 10% random token, 10% unchanged
    inputs[rand] = torch.randint(vocab, (int(rand.sum()),), generator=g)
    return inputs, labels


def mlm_loss(
    model_or_path: str | Path | nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    mask_prob: float = 0.15,
    seed: int = 0,
    batch_size: int = 16,
    max_length: int = 128,
) -> float:
    """Masked-LM loss: mean cross-entropy (nats) over the masked positions of all ``texts``.

    BERT masking, seeded and drawn per example (so the value does not depend on ``batch_size``):
    each non-special token is predicted with probability ``mask_prob`` (at least one per text),
    and is replaced by [MASK] 80% / a random token 10% / itself 10% of the time. A path is loaded
    with ``AutoModelForMaskedLM``; a model without an MLM head is refused (see :func:`has_mlm_head`).
    """
    if not 0.0 < mask_prob < 1.0:
        raise ValueError(f"mask_prob must be in (0, 1), got {mask_prob!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    if isinstance(texts, str) or len(texts) == 0:
        raise ValueError("texts must be a non-empty list of strings")
    if tokenizer.mask_token_id is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no mask token; MLM loss needs one")
    if not has_mlm_head(model_or_path):
        raise ValueError(f"{_describe(model_or_path)} has no masked-LM head; use sts_spearman for general knowledge")
    model = _load_mlm(model_or_path) if not isinstance(model_or_path, nn.Module) else model_or_path
    n_vocab = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > n_vocab:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens but the model's vocabulary has {n_vocab}")
    enc = tokenizer(list(texts), truncation=True, max_length=max_length, return_special_tokens_mask=True)
    g = torch.Generator().manual_seed(seed)
    examples = [
        _bert_mask(torch.tensor(ids), torch.tensor(sp, dtype=torch.bool), mask_prob, tokenizer.mask_token_id,
                   len(tokenizer), g)
        for ids, sp in zip(enc["input_ids"], enc["special_tokens_mask"])
    ]  # fmt: skip
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    total, count = 0.0, 0
    device = _device(model)
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            inputs = nn.utils.rnn.pad_sequence([e[0] for e in chunk], batch_first=True, padding_value=pad)  # (B, T)
            labels = nn.utils.rnn.pad_sequence([e[1] for e in chunk], batch_first=True, padding_value=-100)
            mask = nn.utils.rnn.pad_sequence([torch.ones_like(e[0]) for e in chunk], batch_first=True)
            out = model(input_ids=inputs.to(device), attention_mask=mask.to(device))
            logits = out.logits if getattr(out, "logits", None) is not None else out.prediction_logits  # (B, T, V)
            loss = nn.functional.cross_entropy(
                logits.flatten(0, 1).float(), labels.to(device).flatten(), ignore_index=-100, reduction="sum"
            )
            total += float(loss)
            count += int((labels != -100).sum())
    return total / count


def _describe(model_or_path: str | Path | nn.Module) -> str:
    return type(model_or_path).__name__ if isinstance(model_or_path, nn.Module) else repr(str(model_or_path))


def _load_mlm(path: str | Path) -> nn.Module:
    from transformers import AutoModelForMaskedLM

    from kaviz.train.models import register_attention, resolve_source

    return AutoModelForMaskedLM.from_pretrained(resolve_source(str(path)), attn_implementation=register_attention())


# ----- general knowledge: sentence similarity ------------------------------------------------------------

Pooling = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(n, T, d), (n, T) -> (n, d): mean over real tokens (padding excluded)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)  # (n, T, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1)


def _cls_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(n, T, d), (n, T) -> (n, d): the first token's state."""
    return hidden[:, 0]


POOLINGS: dict[str, Pooling] = {"mean": _mean_pool, "cls": _cls_pool}


def _encoder(model: nn.Module) -> nn.Module:
    """The base encoder of a task/LM model (``model.bert``), or the model itself when it is one."""
    enc = getattr(model, structure_of(model).base, None)
    return model if enc is None else enc


def sentence_embeddings(
    model: nn.Module, tokenizer: Any, texts: Sequence[str], *, batch_size: int = 32, pooling: str | Pooling = "mean",
    max_length: int = 128,
) -> torch.Tensor:  # fmt: skip
    """Pooled last-layer states of the base encoder, ``(n, d)`` float32 on the CPU."""
    _, pool = _resolve("pooling", pooling, POOLINGS)
    enc_model, device, out = _encoder(model), _device(model), []
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                list(texts[start : start + batch_size]), padding=True, truncation=True, max_length=max_length,
                return_tensors="pt",
            )  # fmt: skip
            batch = {
                k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")
            }
            hidden = enc_model(**batch).last_hidden_state  # (B, T, d)
            out.append(pool(hidden, batch["attention_mask"]).float().cpu())  # (B, d)
    return torch.cat(out)


def sts_spearman(
    model: nn.Module,
    tokenizer: Any,
    pairs: Sequence[tuple[str, str]],
    gold: Sequence[float],
    *,
    batch_size: int = 32,
    pooling: str | Pooling = "mean",
) -> float:
    """Spearman correlation between the cosine similarity of each pair's sentence embeddings and ``gold``.

    Embeddings are the pooled (:data:`POOLINGS`, mean over real tokens by default) last-layer
    states of ``base_model(model)``, so a ``*ForSequenceClassification`` works as it is.
    """
    from scipy.stats import spearmanr

    if len(pairs) != len(gold):
        raise ValueError(f"{len(pairs)} pairs but {len(gold)} gold scores; expected one score per pair")
    if len(pairs) < 3:
        raise ValueError(f"a rank correlation needs at least 3 pairs, got {len(pairs)}")
    if np.ptp(np.asarray(gold, dtype=np.float64)) == 0:
        raise ValueError("gold scores are all equal; Spearman correlation is undefined")
    a = sentence_embeddings(model, tokenizer, [p[0] for p in pairs], batch_size=batch_size, pooling=pooling)
    b = sentence_embeddings(model, tokenizer, [p[1] for p in pairs], batch_size=batch_size, pooling=pooling)
    cos = nn.functional.cosine_similarity(a.double(), b.double(), dim=-1)  # (n,)
    return float(spearmanr(cos.numpy(), np.asarray(gold, dtype=np.float64)).statistic)


@contextmanager
def borrowed_body(head: nn.Module, model: nn.Module) -> Iterator[nn.Module | None]:
    """``head`` (a pre-trained ``*ForMaskedLM`` / ``*ForCausalLM``) with ``model``'s base model in
    place of its own for the block, on that body's device; None, borrowing nothing, when ``model``
    has no such body or a different width (a narrower small-dense student). ``model`` is only read;
    the head gets its own body back however the block ends. For MLMHead and lm_probes.LMHead."""
    prefix = head.base_model_prefix  # e.g. "bert", "transformer" (GPT-2), "model" (Llama)
    body = getattr(model, prefix, None)
    if body is None or getattr(getattr(body, "config", None), "hidden_size", None) != head.config.hidden_size:
        yield None
        return
    own = getattr(head, prefix)
    setattr(head, prefix, body)
    try:
        head.to(_device(body))  # the head follows the body's device
        yield head
    finally:
        setattr(head, prefix, own)


class MLMHead:
    """The pre-trained model's masked-LM head, put on other models' encoders: the general-knowledge
    probe of Gordon et al. (2020), who measure how much pruning raises the pre-training loss.

    ``MLMHead(source)`` loads ``AutoModelForMaskedLM`` from ``source`` once (safetensors only for a
    local folder, as every loader here). :meth:`loss` puts a model's encoder under that head for one
    call (the model is only read, never changed) and returns the masked-LM loss on ``texts``;
    None when the encoder's width differs from the head's (a narrower small-dense student).
    """

    def __init__(self, source: str | Path):
        from transformers import AutoModelForMaskedLM

        from kaviz.train.models import resolve_source

        src = resolve_source(str(source))
        local = Path(src).is_dir()
        self.mlm = AutoModelForMaskedLM.from_pretrained(src, use_safetensors=True if local else None).eval()

    def loss(self, model: nn.Module, tokenizer: Any, texts: Sequence[str], *, seed: int = 0) -> float | None:
        with borrowed_body(self.mlm, model) as mlm:
            return None if mlm is None else mlm_loss(mlm, tokenizer, texts, seed=seed)


def general_knowledge(
    model: nn.Module,
    tokenizer: Any,
    *,
    texts: Sequence[str] | None = None,
    sts_pairs: Sequence[tuple[str, str]] | None = None,
    sts_gold: Sequence[float] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """``{"probe", "value", "n"}``: MLM loss when the model has an MLM head and ``texts`` are given,
    else STS Spearman on ``sts_pairs``/``sts_gold`` (the built-in generated set when they are None)."""
    if texts and has_mlm_head(model):
        return {"probe": "mlm_loss", "value": mlm_loss(model, tokenizer, texts, seed=seed), "n": len(texts)}
    if (sts_pairs is None) != (sts_gold is None):
        raise ValueError("give both sts_pairs and sts_gold, or neither (for the built-in set)")
    if sts_pairs is None:
        sts_pairs, sts_gold = sts_data.builtin_sts(64, seed)
    value = sts_spearman(model, tokenizer, sts_pairs, sts_gold)  # type: ignore[arg-type]
    return {"probe": "sts_spearman", "value": value, "n": len(sts_pairs)}


sts_pairs = sts_data.sts_pairs  # the probe's data (kaviz.data.sts), re-exported

__all__ = [
    "MLMHead",
    "POOLINGS",
    "borrowed_body",
    "PROBES",
    "general_knowledge",
    "has_mlm_head",
    "linear_probe",
    "mlm_loss",
    "sentence_embeddings",
    "sts_pairs",
    "sts_spearman",
]
