"""Knowledge probes for causal language models (issue 15, building blocks; not yet wired into runs).

- :func:`lm_loss`: mean negative log-likelihood per predicted token and perplexity on held-out
  texts: the decoder's general-knowledge probe, the counterpart of the encoders' MLM probe.
- :func:`completion_probe`: per ``{prompt, answer}`` pair, whether greedy decoding reproduces the
  answer (exact match) and the answer's log-likelihood given the prompt, so users bring factual or
  domain knowledge sets (LLM-KICK, Jaiswal et al. 2023: perplexity hides knowledge loss that such
  probes reveal at 25-50% sparsity).
- :func:`read_completion_file`: a JSONL of ``{"prompt": ..., "answer": ...}`` lines, refused with the
  line number on missing keys, empty answers or non-UTF-8 text.

Plain PyTorch over any ``*ForCausalLM`` whose forward returns ``logits`` (batch, tokens, vocab).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn


class ProbeFileError(ValueError):
    """A completion-probe file that cannot be used; the message names the file and line."""


def read_completion_file(path: str | Path) -> list[dict[str, str]]:
    """The ``{"prompt", "answer"}`` pairs of a JSONL file (blank lines skipped)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ProbeFileError(f"{path}: cannot read it ({e.strerror or e})") from e
    pairs = []
    for n, line in enumerate(raw.split(b"\n"), start=1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise ProbeFileError(f"{path}, line {n}: not UTF-8 text") from None
        if not text.strip():
            continue
        try:
            item = json.loads(text)
        except json.JSONDecodeError as e:
            raise ProbeFileError(f"{path}, line {n}: not a JSON object ({e.msg})") from None
        if not isinstance(item, dict):
            raise ProbeFileError(f"{path}, line {n}: expected a JSON object with 'prompt' and 'answer'")
        missing = [k for k in ("prompt", "answer") if k not in item]
        if missing:
            raise ProbeFileError(f"{path}, line {n}: missing {', '.join(repr(k) for k in missing)}")
        if not all(isinstance(item[k], str) for k in ("prompt", "answer")):
            raise ProbeFileError(f"{path}, line {n}: 'prompt' and 'answer' must be strings")
        if not item["answer"].strip():
            raise ProbeFileError(f"{path}, line {n}: the answer is empty")
        pairs.append({"prompt": item["prompt"], "answer": item["answer"]})
    if not pairs:
        raise ProbeFileError(f"{path}: no prompt/answer pairs")
    return pairs


@torch.no_grad()
def lm_loss(model: nn.Module, tokenizer: Any, texts: list[str], *, batch_size: int = 8, max_length: int = 128) -> dict:
    """Mean negative log-likelihood (nats) per predicted token over ``texts`` and its perplexity;
    each text scored on its own (no packing), padding ignored."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(
            texts[i : i + batch_size], return_tensors="pt", padding=True, truncation=True, max_length=max_length
        )
        ids, mask = enc["input_ids"], enc["attention_mask"]
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
    rows = []
    for p in pairs:
        prompt = tokenizer(p["prompt"], add_special_tokens=False, return_tensors="pt")["input_ids"][0]
        answer = tokenizer(p["answer"], add_special_tokens=False, return_tensors="pt")["input_ids"][0]
        if len(prompt) == 0:
            raise ValueError(f"prompt {p['prompt']!r} has no tokens")
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
