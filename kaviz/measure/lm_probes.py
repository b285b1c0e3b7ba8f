"""Knowledge probes for causal language models: the decoders' counterpart of the MLM probe.

- :func:`lm_loss`: mean negative log-likelihood per predicted token and perplexity on held-out
  texts: the decoder's general-knowledge probe, the counterpart of the encoders' MLM probe.
- :func:`completion_probe`: per ``{prompt, answer}`` pair, whether greedy decoding reproduces the
  answer (exact match) and the answer's log-likelihood given the prompt, so users bring factual or
  domain knowledge sets (LLM-KICK, Jaiswal et al. 2023: perplexity hides knowledge loss that such
  probes reveal at 25-50% sparsity).
- :func:`read_completion_file` (from :mod:`kaviz.data.lm_probe_data`): a JSONL of ``{"prompt": ..., "answer": ...}`` lines, refused with the
  line number on missing keys, empty answers or non-UTF-8 text.

- :class:`LMHead`: the pre-trained decoder's LM head put on another model's body (a fine-tuned or
  pruned ``*ForSequenceClassification``) for one call, so every unit is probed with the head
  pre-training left; the analyser writes ``general_lm_loss``, ``general_completion_exact`` and
  ``general_completion_logprob`` rows beside the encoders' ``general_mlm_loss``.

Plain PyTorch over any ``*ForCausalLM`` whose forward returns ``logits`` (batch, tokens, vocab).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from kaviz.data.lm_probe_data import ProbeFileError, read_completion_file, read_corpus  # noqa: F401  (re-exported)
from kaviz.measure.probes import borrowed_body


@torch.no_grad()
def lm_loss(model: nn.Module, tokenizer: Any, texts: list[str], *, batch_size: int = 8, max_length: int = 128) -> dict:
    """Mean negative log-likelihood (nats) per predicted token over ``texts`` and its perplexity;
    each text scored on its own (no packing), padding ignored."""
    model.eval()
    dev = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(
            texts[i : i + batch_size], return_tensors="pt", padding=True, truncation=True, max_length=max_length
        )
        ids, mask = enc["input_ids"].to(dev), enc["attention_mask"].to(dev)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        target, keep = ids[:, 1:], mask[:, 1:].bool() & mask[:, :-1].bool()
        nll = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")
        total += float(nll[keep].sum())
        count += int(keep.sum())
    if count == 0:
        raise ValueError("no token to predict: every text is shorter than two tokens")
    mean = total / count
    return {"nll": mean, "perplexity": math.exp(mean), "tokens": count}


@torch.no_grad()
def completion_probe(model: nn.Module, tokenizer: Any, pairs: list[dict[str, str]]) -> pd.DataFrame:
    """One row per pair: ``exact`` (greedy decoding of as many tokens as the answer has reproduces
    it), ``answer_logprob`` (sum of the answer tokens' log-probabilities given the prompt) and
    ``answer_tokens``."""
    model.eval()
    dev = next(model.parameters()).device
    rows = []
    for p in pairs:
        prompt = tokenizer(p["prompt"], add_special_tokens=False, return_tensors="pt")["input_ids"][0]
        answer = tokenizer(p["answer"], add_special_tokens=False, return_tensors="pt")["input_ids"][0]
        if len(prompt) == 0:
            raise ValueError(f"prompt {p['prompt']!r} has no tokens")
        prompt, answer = prompt.to(dev), answer.to(dev)
        ids = torch.cat([prompt, answer])[None]
        logp = F.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
        at = torch.arange(len(prompt) - 1, len(ids[0]) - 1)
        answer_logprob = float(logp[at, answer].sum())
        seq = prompt[None]
        for _ in range(len(answer)):  # greedy, one token at a time
            nxt = model(input_ids=seq).logits[0, -1].argmax()
            seq = torch.cat([seq, nxt.view(1, 1)], dim=1)
        exact = bool(torch.equal(seq[0, len(prompt) :], answer))
        rows.append({"prompt": p["prompt"], "answer": p["answer"], "exact": exact,
                     "answer_logprob": answer_logprob, "answer_tokens": len(answer)})  # fmt: skip
    return pd.DataFrame(rows, columns=["prompt", "answer", "exact", "answer_logprob", "answer_tokens"])


class LMHead:
    """A pre-trained ``*ForCausalLM`` whose LM head scores other models' bodies.

    :meth:`loss` and :meth:`completion` put ``model``'s base model (``model.<base_model_prefix>``,
    e.g. ``model.transformer`` of a GPT-2 classifier) under the head for one call (the model is only
    read, never changed); both return None when the body's width differs from the head's (a
    narrower small-dense student). As :class:`kaviz.measure.probes.MLMHead` for encoders.
    """

    def __init__(self, lm: nn.Module):
        self.lm = lm.eval()

    def _call(self, model: nn.Module, fn, *args):
        with borrowed_body(self.lm, model) as lm:
            return None if lm is None else fn(lm, *args)

    def loss(self, model: nn.Module, tokenizer: Any, texts: list[str], **kw: Any) -> dict | None:
        """:func:`lm_loss` of ``model``'s body under this head."""
        return self._call(model, lambda lm, *a: lm_loss(lm, *a, **kw), tokenizer, texts)

    def completion(self, model: nn.Module, tokenizer: Any, pairs: list[dict[str, str]]) -> pd.DataFrame | None:
        """:func:`completion_probe` of ``model``'s body under this head."""
        return self._call(model, completion_probe, tokenizer, pairs)
