"""Token attributions through a thin Captum adapter, and how far two models' attributions agree.

:func:`token_attributions` runs a Captum layer method (:data:`ATTRIBUTION_METHODS`, layer
integrated gradients by default) on the input embeddings (``kaviz.core.structure.embeddings``) and returns, per example, one
score per real token (summed over the embedding dimension; padding dropped). Only the functions
in :data:`ATTRIBUTION_METHODS` touch Captum. :func:`agreement` compares two models' attributions
(Spearman of ``|a|``, top-k overlap) and :func:`attribution_table` lays both out as tidy tables.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import nn

from kaviz.core.structure import embeddings
from kaviz.train.models import eval_mode

Texts = Sequence[str] | Sequence[tuple[str, str]]
Inputs = Mapping[str, torch.Tensor]  # input_ids / attention_mask [/ token_type_ids], each (n, T)
# (forward, layer, input_ids (n, T), baseline_ids (n, T), extra forward args, target (n,), n_steps,
#  internal_batch_size) -> attribution of the layer output (n, T, d)
AttributionMethod = Callable[..., torch.Tensor]
_KEYS = ("input_ids", "attention_mask", "token_type_ids")


# ----- Captum adapter -------------------------------------------------------------------------------------


def _integrated_gradients(
    forward: Callable[..., torch.Tensor],
    layer: nn.Module,
    input_ids: torch.Tensor,
    baseline_ids: torch.Tensor,
    extra: tuple[torch.Tensor, ...],
    target: torch.Tensor,
    *,
    n_steps: int,
    internal_batch_size: int | None,
) -> torch.Tensor:
    """Layer integrated gradients (Gauss-Legendre) from the baseline's layer output to the input's: (n, T, d)."""
    from captum.attr import LayerIntegratedGradients

    lig = LayerIntegratedGradients(forward, layer)
    return lig.attribute(
        input_ids,
        baselines=baseline_ids,
        target=target,
        additional_forward_args=extra,
        n_steps=n_steps,
        internal_batch_size=internal_batch_size,
    )


def _gradient_x_input(
    forward: Callable[..., torch.Tensor],
    layer: nn.Module,
    input_ids: torch.Tensor,
    baseline_ids: torch.Tensor,
    extra: tuple[torch.Tensor, ...],
    target: torch.Tensor,
    *,
    n_steps: int,
    internal_batch_size: int | None,
) -> torch.Tensor:
    """Gradient x embedding (Captum's LayerGradientXActivation); no baseline, one backward pass: (n, T, d)."""
    from captum.attr import LayerGradientXActivation

    return LayerGradientXActivation(forward, layer).attribute(input_ids, target=target, additional_forward_args=extra)


ATTRIBUTION_METHODS: dict[str, AttributionMethod] = {
    "integrated_gradients": _integrated_gradients,
    "gradient_x_input": _gradient_x_input,
}


# ----- inputs, baselines, targets -------------------------------------------------------------------------


def encode_texts(tokenizer: Any, texts: Texts, *, max_length: int = 128) -> dict[str, torch.Tensor]:
    """Tokenise single texts or (text_a, text_b) pairs, padded to the longest: each tensor (n, T)."""
    if isinstance(texts, str) or len(texts) == 0:
        raise ValueError("texts must be a non-empty list of strings or of (text_a, text_b) pairs")
    if isinstance(texts[0], (tuple, list)):
        a, b = [t[0] for t in texts], [t[1] for t in texts]
        enc = tokenizer(a, b, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    else:
        enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {k: enc[k] for k in _KEYS if k in enc}


def baseline_ids(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, *, fill_id: int, keep_ids: Sequence[int] | None = None
) -> torch.Tensor:
    """The reference input, (n, T): special tokens and padding kept, every other real token -> ``fill_id``.

    ``keep_ids`` are the special token ids ([CLS], [SEP], ...); when None, each example keeps its
    first and last real token and any token equal to them (the [CLS] ... [SEP] [SEP] convention).
    """
    real = attention_mask.bool()  # (n, T)
    if keep_ids is not None:
        keep = torch.isin(input_ids, torch.as_tensor(list(keep_ids), device=input_ids.device))
    else:
        last = real.long().sum(1).clamp(min=1) - 1  # (n,)
        ends = torch.stack([input_ids[:, 0], input_ids.gather(1, last[:, None])[:, 0]], 1)  # (n, 2)
        keep = (input_ids[:, :, None] == ends[:, None, :]).any(-1)  # (n, T)
    return torch.where(keep | ~real, input_ids, torch.full_like(input_ids, fill_id))


def _fill_id(model: nn.Module, tokenizer: Any, baseline: str) -> int:
    if baseline not in ("pad", "mask", "unk"):
        raise ValueError(f"baseline must be 'pad', 'mask' or 'unk', got {baseline!r}")
    if tokenizer is not None:
        fill = getattr(tokenizer, f"{baseline}_token_id", None)
    elif baseline == "pad":
        fill = getattr(model.config, "pad_token_id", None)
    else:
        raise ValueError(f"baseline={baseline!r} needs the tokenizer to know the token id")
    if fill is None:
        raise ValueError(f"no {baseline!r} token id is known for this model/tokenizer; pick another baseline")
    return int(fill)


def _boundary_ids(tokenizer: Any) -> list[int]:
    """[CLS]/[SEP] (or <s>/</s>) ids: the special tokens a baseline keeps; [UNK] in a text is content."""
    names = ("cls_token_id", "sep_token_id", "bos_token_id", "eos_token_id")
    return sorted({i for i in (getattr(tokenizer, a, None) for a in names) if i is not None})


def _logits(model: nn.Module, batch: Inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits  # (n, C)


def _targets(target: int | Sequence[int] | torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor:
    """Target class per example (n,): given, or the model's prediction (0 for a single-output regressor)."""
    n, c = logits.shape
    if target is None:
        return logits.argmax(-1) if c > 1 else torch.zeros(n, dtype=torch.long, device=logits.device)
    t = torch.as_tensor(target, dtype=torch.long, device=logits.device).flatten()
    t = t.expand(n) if t.numel() == 1 else t
    if t.numel() != n or (t < 0).any() or (t >= c).any():
        raise ValueError(f"target {target!r} must be one class id or one per example ({n}), each in 0..{c - 1}")
    return t


def _as_inputs(tokenizer: Any, inputs: Texts | Inputs, max_length: int) -> dict[str, torch.Tensor]:
    if isinstance(inputs, Mapping):
        missing = [k for k in _KEYS[:2] if k not in inputs]
        if missing:
            raise ValueError(f"inputs lack {missing}; expected (n, T) tensors input_ids and attention_mask")
        out = {k: torch.as_tensor(inputs[k]) for k in _KEYS if k in inputs}
        shapes = {k: tuple(v.shape) for k, v in out.items()}
        if len({*shapes.values()}) != 1 or out["input_ids"].dim() != 2:
            raise ValueError(f"inputs must all have the same (n, T) shape, got {shapes}")
        return out
    if tokenizer is None:
        raise ValueError("texts need a tokenizer; pass tokenizer= or a dict of input_ids/attention_mask tensors")
    return encode_texts(tokenizer, inputs, max_length=max_length)


# ----- public API -----------------------------------------------------------------------------------------


def token_attributions(
    model: nn.Module,
    tokenizer: Any | None,
    inputs: Texts | Inputs,
    *,
    target: int | Sequence[int] | torch.Tensor | None = None,
    method: str | AttributionMethod = "integrated_gradients",
    n_steps: int = 20,
    internal_batch_size: int | None = None,
    baseline: Literal["pad", "mask", "unk"] = "pad",
    batch_size: int = 16,
    max_length: int = 128,
) -> list[torch.Tensor]:
    """Per-example token attributions for the logit of ``target``: a list of ``(T_real,)`` CPU tensors.

    ``inputs`` are texts (or (a, b) pairs) that ``tokenizer`` encodes, or a dict of ``(n, T)``
    tensors (then ``tokenizer`` may be None). The attribution is to the output of
    the input embeddings (``kaviz.core.structure.embeddings``), summed over the embedding dimension; padded positions are
    dropped. ``target`` defaults to each example's predicted class (the single output of a
    regressor). The integrated-gradients baseline keeps special tokens and replaces the rest by
    [PAD] (or [MASK]/[UNK]), so attributions sum to ``f(input) - f(baseline)`` up to the
    integration error, which shrinks as ``n_steps`` grows.
    """
    if isinstance(method, str) and method not in ATTRIBUTION_METHODS:
        raise ValueError(f"unknown attribution method {method!r}; known: {', '.join(ATTRIBUTION_METHODS)}")
    attribute = ATTRIBUTION_METHODS[method] if isinstance(method, str) else method
    if n_steps < 1 or batch_size < 1:
        raise ValueError(f"n_steps and batch_size must be >= 1, got {n_steps!r} and {batch_size!r}")
    enc = _as_inputs(tokenizer, inputs, max_length)
    fill = _fill_id(model, tokenizer, baseline)
    keep = None if tokenizer is None else _boundary_ids(tokenizer)
    layer = embeddings(model)
    device = next(model.parameters()).device
    extra_keys = [k for k in _KEYS[1:] if k in enc]

    def forward(input_ids: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        return model(input_ids=input_ids, **dict(zip(extra_keys, extra))).logits  # (n, C)

    out: list[torch.Tensor] = []
    n = enc["input_ids"].shape[0]
    per_example = None  # a target per example, sliced batch by batch
    if target is not None and torch.as_tensor(target).numel() > 1:
        per_example = torch.as_tensor(target).flatten()
        if per_example.numel() != n:
            raise ValueError(f"target has {per_example.numel()} entries for {n} examples; give one or one per example")
    with eval_mode(model):
        for start in range(0, n, batch_size):
            batch = {k: v[start : start + batch_size].to(device) for k, v in enc.items()}
            t = _targets(
                per_example[start : start + batch_size] if per_example is not None else target, _logits(model, batch)
            )
            ids, mask = batch["input_ids"], batch["attention_mask"]
            base = baseline_ids(ids, mask, fill_id=fill, keep_ids=keep)  # (B, T)
            extra = tuple(batch[k] for k in extra_keys)
            attr = attribute(
                forward, layer, ids, base, extra, t, n_steps=n_steps, internal_batch_size=internal_batch_size
            )  # (B, T, d)
            per_token = attr.sum(-1).detach().float().cpu()  # (B, T)
            out.extend(per_token[i][mask[i].bool().cpu()] for i in range(len(ids)))
    return out


def _ranks(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x)


def agreement(attr_a: Sequence[torch.Tensor], attr_b: Sequence[torch.Tensor], *, k: int = 5) -> pd.DataFrame:
    """How far two attributions of the same examples agree, one row per example.

    ``spearman``: rank correlation of ``|a|`` and ``|b|`` (NaN when either is constant or has one
    token); ``topk_overlap``: ``|top_k(|a|) ∩ top_k(|b|)| / k`` with ``k`` capped at the length
    (ties broken by position). Columns: ``example, spearman, topk_overlap, k``.
    """
    if len(attr_a) != len(attr_b):
        raise ValueError(f"{len(attr_a)} vs {len(attr_b)} examples; expected attributions of the same examples")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k!r}")
    rows = []
    for i, (a, b) in enumerate(zip(attr_a, attr_b)):
        x = np.abs(np.asarray(torch.as_tensor(a).detach().cpu(), dtype=np.float64))
        y = np.abs(np.asarray(torch.as_tensor(b).detach().cpu(), dtype=np.float64))
        if x.shape != y.shape or x.ndim != 1:
            raise ValueError(f"example {i}: attributions have shapes {x.shape} and {y.shape}; expected equal (T,)")
        kk = min(k, len(x))
        rho = float(np.corrcoef(_ranks(x), _ranks(y))[0, 1]) if len(x) > 1 and np.ptp(x) and np.ptp(y) else np.nan
        top_a = set(np.argsort(-x, kind="stable")[:kk].tolist())
        top_b = set(np.argsort(-y, kind="stable")[:kk].tolist())
        rows.append({"example": i, "spearman": rho, "topk_overlap": len(top_a & top_b) / kk, "k": kk})
    return pd.DataFrame(rows, columns=["example", "spearman", "topk_overlap", "k"])


class AttributionTable(NamedTuple):
    """``tokens``: example, text, token, position, teacher, student (one row per real token);
    ``summary``: example, text, target, spearman, topk_overlap, k (one row per example)."""

    tokens: pd.DataFrame
    summary: pd.DataFrame


def attribution_table(
    teacher: nn.Module,
    student: nn.Module,
    tokenizer: Any,
    texts: Texts,
    *,
    k: int = 5,
    n_steps: int = 20,
    target: int | Sequence[int] | None = None,
    method: str | AttributionMethod = "integrated_gradients",
) -> AttributionTable:
    """Teacher and student attributions side by side, for the same target class.

    ``target`` defaults to the teacher's predicted class, used for both models so that the two
    attributions explain the same logit.
    """
    enc = encode_texts(tokenizer, texts)
    with eval_mode(teacher):
        logits = _logits(teacher, {k_: v.to(next(teacher.parameters()).device) for k_, v in enc.items()})
    t = _targets(target, logits).cpu()
    n_student = getattr(student.config, "num_labels", None)
    if n_student is not None and n_student != logits.shape[1]:
        raise ValueError(f"teacher has {logits.shape[1]} outputs but student has {n_student}; they must match")
    kw = {"target": t, "method": method, "n_steps": n_steps}
    a_t = token_attributions(teacher, tokenizer, enc, **kw)
    a_s = token_attributions(student, tokenizer, enc, **kw)
    shown = [t_ if isinstance(t_, str) else " [SEP] ".join(t_) for t_ in texts]
    rows = []
    for i, (at, as_) in enumerate(zip(a_t, a_s)):
        ids = enc["input_ids"][i][enc["attention_mask"][i].bool()]
        for pos, (tok, vt, vs) in enumerate(zip(tokenizer.convert_ids_to_tokens(ids.tolist()), at, as_)):
            rows.append(
                {
                    "example": i,
                    "text": shown[i],
                    "token": tok,
                    "position": pos,
                    "teacher": float(vt),
                    "student": float(vs),
                }
            )
    tokens = pd.DataFrame(rows, columns=["example", "text", "token", "position", "teacher", "student"])
    summary = agreement(a_t, a_s, k=k)
    summary.insert(1, "text", shown)
    summary.insert(2, "target", t.tolist())
    return AttributionTable(tokens, summary)


__all__ = [
    "ATTRIBUTION_METHODS",
    "AttributionTable",
    "agreement",
    "attribution_table",
    "baseline_ids",
    "encode_texts",
    "token_attributions",
]
