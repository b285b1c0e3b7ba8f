"""One forward pass over a fixed probe set -> hidden states, attention maps and logits, padding-aware.

:func:`probe_inputs` picks a seeded subset of a split and tokenises it once; :func:`capture` runs the
model over it in batches (one forward pass per batch, ``torch.inference_mode``, eval mode) and returns
a :class:`Captured` on the CPU.  Every tensor is padding-aware: pooled vectors and token lists ignore
padded positions, and the rows and columns of padded positions in attention maps are zero, so the
same sentence gives the same numbers whatever it is batched with.

Big tensors (every token's vector, every attention map) can instead be streamed to a folder with a
:class:`CaptureSink` (one safetensors file per batch, ``index.json`` written last) and read back,
chunk by chunk, with a :class:`CaptureReader`.  Keys are ``tokens.{i}`` and ``attn.{i}`` (and
``scores.{i}``), where ``i`` is the index into :attr:`Captured.tokens` / :attr:`Captured.attentions`.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from kaviz.core.structure import STRUCTURES
from kaviz.data.tasks import TaskData
from kaviz.measure.capture_sink import FORMAT, INDEX, CaptureReader, CaptureSink  # noqa: F401  (re-exported)
from kaviz.train.models import ATTN_IMPL

__all__ = ["CaptureReader", "CaptureSink", "Captured", "ProbeInputs", "capture", "probe_inputs"]


# ----- probe set ------------------------------------------------------------------------------------------


@dataclass
class ProbeInputs:
    """A fixed probe set, tokenised once and padded to its longest example."""

    input_ids: Tensor  # (n, T)
    attention_mask: Tensor  # (n, T) 1 = real token
    token_type_ids: Tensor | None  # (n, T), or None when the tokenizer makes none
    labels: Tensor  # (n,) int64, or float32 for regression
    texts: list[str]  # text_a, or "text_a [SEP] text_b" for pairs (for display)
    indices: list[int]  # rows of the source split, ascending

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def probe_inputs(
    task: TaskData,
    tokenizer: Any,
    n: int,
    *,
    seed: int = 0,
    max_length: int = 128,
    split: Literal["train", "dev"] = "dev",
) -> ProbeInputs:
    """A seeded random subset of ``n`` rows of ``task``'s ``split`` (the whole split if it has fewer),
    in ascending row order, tokenised with truncation to ``max_length`` and padded to the longest."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length must be an integer >= 2, got {max_length!r}")
    if split not in ("train", "dev"):
        raise ValueError(f"split must be 'train' or 'dev', got {split!r}")
    ds = getattr(task, split)
    if len(ds) == 0:
        raise ValueError(f"the {split} split of task {task.spec.name!r} is empty")
    if n >= len(ds):
        indices = list(range(len(ds)))
    else:
        indices = sorted(np.random.default_rng(seed).choice(len(ds), size=n, replace=False).tolist())
    rows = ds.select(indices)
    text_a = list(rows["text_a"])
    text_b = list(rows["text_b"]) if task.spec.pair else None
    enc = tokenizer(text_a, text_b, truncation=True, max_length=max_length, padding="longest", return_tensors="pt")
    wants_types = "token_type_ids" in getattr(tokenizer, "model_input_names", ("token_type_ids",))
    token_type_ids = enc["token_type_ids"] if wants_types and "token_type_ids" in enc else None
    labels = torch.tensor(list(rows["label"]), dtype=torch.float32 if task.spec.is_regression else torch.int64)
    texts = [f"{a} [SEP] {b}" for a, b in zip(text_a, text_b)] if text_b is not None else text_a
    return ProbeInputs(
        input_ids=enc["input_ids"],
        attention_mask=enc["attention_mask"],
        token_type_ids=token_type_ids,
        labels=labels,
        texts=texts,
        indices=indices,
    )


# ----- capture --------------------------------------------------------------------------------------------


@dataclass
class Captured:
    """What one pass over a probe set saw, on the CPU.

    ``cls``, ``mean`` and ``tokens`` have L+1 entries (index 0 = embedding output, i = after layer i);
    ``attentions`` and ``scores`` have L entries (index i = layer i+1).  ``T`` is the probe's length.
    """

    cls: list[Tensor]  # L+1 x (n, d) first real token ([CLS]) vectors
    mean: list[Tensor]  # L+1 x (n, d) mean over real tokens (padding excluded)
    tokens: list[Tensor] | None  # L+1 x (n_real_tokens, d) real tokens in row-major order, or None
    attentions: list[Tensor] | None  # L x (n, H, T, T) probabilities; padded rows/cols are 0, or None
    scores: list[Tensor] | None  # L x (n, H, T, T) pre-softmax scores; padded rows/cols are 0, or None
    mask: Tensor  # (n, T) 1 = real token
    logits: Tensor  # (n, C)

    @property
    def n_layers(self) -> int:
        """Number of encoder layers L (``cls``/``mean``/``tokens`` have L+1 entries)."""
        return len(self.cls) - 1


def _attention_kind(model: nn.Module) -> str:
    impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if impl == ATTN_IMPL:
        return STRUCTURES[model.config.model_type].attention if model.config.model_type in STRUCTURES else "scores"
    if impl == "eager":
        return "probs"
    raise ValueError(
        f"capturing attention needs the {ATTN_IMPL!r} (or 'eager') attention implementation, but the model "
        f"uses {impl!r}; load it with kaviz.train.models or call "
        "model.set_attn_implementation(kaviz.train.models.register_attention()) first"
    )


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def capture(
    model: nn.Module,
    probe: ProbeInputs,
    *,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    tokens: bool = True,
    attentions: bool = True,
    scores: bool = False,
    sink: CaptureSink | None = None,
    progress: bool = False,
) -> Captured:
    """Run ``model`` over ``probe`` and collect hidden states, attention maps and logits.

    One forward pass per batch of ``batch_size`` rows, in eval mode under ``torch.inference_mode``;
    each batch is cut to its longest example (so results do not depend on how rows are batched).
    Results are on the CPU in ``dtype`` (``torch.float16`` halves memory); attention
    probabilities are computed in float32 first.  The model is not changed: its training flags are
    restored afterwards, and when ``device`` differs from the model's device a *copy* of the model is
    moved there (costing one copy of the weights; move the model yourself to avoid it).

    With ``sink``, the big per-batch tensors (``tokens.{i}``, ``attn.{i}``, ``scores.{i}``, each batch
    with its own ``T``) go to the sink, which is closed at the end, and ``tokens``, ``attentions`` and
    ``scores`` come back as None; ``cls``, ``mean``, ``mask`` and ``logits`` are always returned.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    ids, mask = probe.input_ids, probe.attention_mask  # (n, T)
    if ids.dim() != 2 or mask.shape != ids.shape or ids.shape[0] == 0:
        raise ValueError(
            f"probe input_ids and attention_mask must be equal (n, T) with n >= 1, got {tuple(ids.shape)} "
            f"and {tuple(mask.shape)}"
        )
    if (mask.sum(1) == 0).any():
        raise ValueError("every probe row needs at least one real token (attention_mask has an all-zero row)")
    need_attn = attentions or scores
    kind = _attention_kind(model) if need_attn else None
    if scores and kind != "scores":
        raise ValueError(f"scores=True needs the {ATTN_IMPL!r} attention implementation (eager returns probabilities)")

    run_on = _model_device(model) if device is None else torch.device(device)
    if run_on.type == "cuda" and run_on.index is None:
        run_on = torch.device("cuda", torch.cuda.current_device())
    net = model if run_on == _model_device(model) else copy.deepcopy(model).to(run_on)
    takes_types = "token_type_ids" in inspect.signature(net.forward).parameters
    flags = {m: m.training for m in net.modules()}
    n = ids.shape[0]
    want = {"tokens": tokens, "attn": attentions, "scores": scores, "scores_in": kind == "scores"}
    collect = _Collector(mask, dtype, want, sink)
    starts = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="capture", unit="batch")
    net.eval()
    try:
        with torch.inference_mode():
            for b, lo in enumerate(starts):
                hi = min(lo + batch_size, n)
                m = mask[lo:hi]  # (b, T)
                t_b = int(m.nonzero()[:, 1].max()) + 1  # cut trailing padding shared by the batch
                m = m[:, :t_b]
                inputs = {"input_ids": ids[lo:hi, :t_b].to(run_on), "attention_mask": m.to(run_on)}
                if takes_types and probe.token_type_ids is not None:
                    inputs["token_type_ids"] = probe.token_type_ids[lo:hi, :t_b].to(run_on)
                out = net(**inputs, output_hidden_states=True, output_attentions=need_attn, return_dict=True)
                if need_attn and not out.attentions:
                    raise ValueError(f"{type(net).__name__} returned no attentions with output_attentions=True")
                collect.add(b, lo, m, out)
    finally:
        for mod, flag in flags.items():
            mod.train(flag)
    if sink is not None:
        sink.close()
    return collect.result()


class _Collector:
    """Pools, masks and stores each batch's outputs: into preallocated CPU tensors, or into a sink."""

    def __init__(self, mask: Tensor, dtype: torch.dtype, want: dict[str, bool], sink: CaptureSink | None):
        self.mask, self.dtype, self.want, self.sink = mask, dtype, want, sink  # want: tokens/attn/scores
        self.n, self.T = mask.shape
        self.out: dict[str, list[Tensor]] = {}
        self.tok_offset = 0

    def _store(self, name: str, i: int, shape: tuple[int, ...]) -> Tensor:
        """The preallocated ``name`` tensor of layer ``i`` (zeros of ``shape`` on first use)."""
        layers = self.out.setdefault(name, [])
        if i == len(layers):
            layers.append(torch.zeros(shape, dtype=self.dtype))
        return layers[i]

    def add(self, b: int, lo: int, m: Tensor, out: Any) -> None:
        """Batch ``b`` (rows ``lo:lo+len(m)``, ``m`` its (b, t) CPU mask) from a model output ``out``."""
        hi, t, n_tok = lo + m.shape[0], m.shape[1], int(m.sum())
        real = m.bool()  # (b, t)
        keep = real[:, None, :, None] & real[:, None, None, :]  # (b, 1, t, t) real query and real key
        first = real.int().argmax(1)  # (b,) first real token ([CLS]), even when left-padded
        staged: dict[str, Tensor] = {}
        for i, h in enumerate(out.hidden_states):  # L+1 x (b, t, d)
            h = h.float().cpu()
            d = h.shape[-1]
            self._store("cls", i, (self.n, d))[lo:hi] = h[torch.arange(len(h)), first]
            self._store("mean", i, (self.n, d))[lo:hi] = (h * real[..., None]).sum(1) / real.sum(1, keepdim=True)
            if self.want["tokens"]:
                tok = h[real]  # (n_tok, d) in row-major order
                if self.sink is not None:
                    staged[f"tokens.{i}"] = tok
                else:
                    self._store("tokens", i, (int(self.mask.sum()), d))[self.tok_offset : self.tok_offset + n_tok] = tok
        self.tok_offset += n_tok
        zero = torch.zeros(())
        for i, a in enumerate(out.attentions or ()):  # L x (b, H, t, t)
            a = a.float().cpu()
            if self.want["scores_in"]:  # pre-softmax scores, padded keys at the dtype minimum
                maps = {"attn": a.softmax(-1), "scores": torch.where(keep, a, zero)}
            else:  # eager attention: already probabilities
                maps = {"attn": a}
            for name, val in maps.items():
                if not self.want[name]:
                    continue
                val = torch.where(keep, val, zero)  # (b, H, t, t)
                if self.sink is not None:
                    staged[f"{name}.{i}"] = val
                else:
                    self._store(name, i, (self.n, a.shape[1], self.T, self.T))[lo:hi, :, :t, :t] = val
        self._store("logits", 0, (self.n, out.logits.shape[-1]))[lo:hi] = out.logits.float().cpu()
        if self.sink is not None and staged:
            self.sink.write(b, staged)

    def result(self) -> Captured:
        mem = self.sink is None
        return Captured(
            cls=self.out["cls"],
            mean=self.out["mean"],
            tokens=self.out["tokens"] if mem and self.want["tokens"] else None,
            attentions=self.out["attn"] if mem and self.want["attn"] else None,
            scores=self.out["scores"] if mem and self.want["scores"] else None,
            mask=self.mask.clone(),
            logits=self.out["logits"][0],
        )
