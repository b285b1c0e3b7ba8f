"""One-shot post-training pruning from a few calibration batches: Wanda and SparseGPT.

* **Wanda** -- Sun, Liu, Bair & Kolter, "A Simple and Effective Pruning Approach for Large Language
  Models" (ICLR 2024, arXiv:2306.11695); code github.com/locuslab/wanda, ``lib/prune.py``
  (``prune_wanda``) and ``lib/layerwrapper.py`` (``WrappedGPT.scaler_row``). Score
  ``|W_ij| * ||X_j||_2``, compared inside each output row.
* **SparseGPT** -- Frantar & Alistarh, "SparseGPT: Massive Language Models Can Be Accurately Pruned
  in One-Shot" (ICML 2023, arXiv:2301.00774); code github.com/IST-DASLab/sparsegpt, ``sparsegpt.py``
  (``SparseGPT.add_batch``, ``SparseGPT.fasterprune``). OBS pruning with the inverse Hessian
  ``H = 2/n X^T X`` of the layer-wise reconstruction loss, column by column, in lazy blocks.

Both walk the encoder layers in order, as the official ``prune_wanda`` / ``prune_sparsegpt`` do:
layer ``l``'s statistics are captured with layers ``< l`` already pruned, all six linears of layer
``l`` seeing the dense layer ``l``. Padding tokens (``attention_mask == 0``) are left out of the
statistics. Deviations from the official code, both for kaviz's conventions: a matrix (Wanda: a
row; SparseGPT: a column block) prunes exactly ``round(s * numel)`` weights, as
:func:`~kaviz.train.pruning.topk_mask` does (the official Wanda floors, SparseGPT's ``<= thresh``
prunes one more); an ``"N:M"`` pattern *keeps* N of every M inputs (the official ``prunen`` counts
pruned weights; the two agree on 2:4).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import nn

from kaviz.core.errors import KavizError
from kaviz.core.names import parse_pattern
from kaviz.core.structure import describe, encoder_layers, in_features, oriented, prunable_linears
from kaviz.train.layer_replay import LayerReplay
from kaviz.train.models import eval_mode
from kaviz.train.pruning import MaskSet, check_pattern, nm_mask, topk_mask

Batch = dict[str, torch.Tensor]
Stat = Literal["norm", "hessian"]
Progress = Callable[[str], None]


class OneShotError(KavizError, ValueError):
    """Arguments or calibration data one-shot pruning cannot run with; the message says which."""


class _StopForward(Exception):
    """Raised by a hook after the calibrated layer: the layers above it need not run."""


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    """float32 at least (float64 stays float64), as the official code computes in float32."""
    return torch.promote_types(t.dtype, torch.float32)


def _check_sparsity(sparsity: float) -> None:
    if not 0.0 <= sparsity < 1.0:
        raise OneShotError(f"sparsity must be in [0, 1), got {sparsity}")


def _nm(pattern: str | None, sparsity: float, columns: int) -> tuple[int, int] | None:
    """(N, M) of a pattern that fits ``sparsity`` and a matrix of ``columns`` inputs; None without one."""
    nm = parse_pattern(pattern)
    if nm is None:
        return None
    n, m = nm
    if abs(sparsity - (1.0 - n / m)) > 1e-9:
        raise OneShotError(f"an {n}:{m} pattern is {1 - n / m:.0%} sparse; sparsity {sparsity} asked")
    if columns % m:
        raise OneShotError(f"pattern {pattern!r}: {m} does not divide the matrix's {columns} input columns")
    return nm


def wanda_mask(
    weight: torch.Tensor, input_norm: torch.Tensor, sparsity: float, pattern: str | None = None
) -> torch.Tensor:
    """Wanda's mask (True = kept) for ``weight`` (out, in) given ``input_norm`` (in,), the L2 norm of
    each input feature over the calibration tokens (any common scale: only ratios matter).

    Score ``|W_ij| * ||X_j||``; each output row keeps its ``in - round(sparsity * in)`` best scores,
    or with ``pattern="N:M"`` the N best of every M consecutive inputs (then ``sparsity`` must be
    ``1 - N/M``). Returns a bool tensor (out, in).
    """
    _check_sparsity(sparsity)
    if weight.dim() != 2 or tuple(input_norm.shape) != (weight.shape[1],):
        raise OneShotError(
            f"wanda_mask needs weight (out, in) and input_norm (in,), got {tuple(weight.shape)} "
            f"and {tuple(input_norm.shape)}"
        )
    nm = _nm(pattern, sparsity, weight.shape[1])
    dt = _compute_dtype(weight)
    norm = input_norm.detach().to(device=weight.device, dtype=dt).reshape(1, -1)  # (1, in)
    score = weight.detach().abs().to(dt) * norm  # (out, in)
    if nm is not None:
        return nm_mask(score, *nm)
    mask = torch.ones_like(score, dtype=torch.bool)
    k = int(round(sparsity * score.shape[1]))
    if k > 0:
        mask.scatter_(1, torch.topk(score, k, dim=1, largest=False).indices, False)
    return mask


def sparsegpt_prune(
    weight: torch.Tensor,
    H: torch.Tensor,
    sparsity: float,
    pattern: str | None = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT's ``fasterprune`` on ``weight`` (out, in) with the Hessian ``H`` (in, in) = 2/n X^T X.

    Dead inputs (``H_jj == 0``) are zeroed; ``H`` gets ``percdamp * mean(diag H)`` on its diagonal;
    ``U`` is the upper Cholesky factor of ``H^-1``. Columns go in blocks of ``blocksize``: the
    unstructured mask of a block prunes the ``round(sparsity * numel)`` lowest ``w^2 / U_jj^2`` of
    the block (weights already updated by the blocks before); with ``pattern="N:M"`` each group of
    M columns keeps its N highest (``blocksize`` a multiple of M). Each column's pruning error is
    spread over the columns to its right (``W[:, j:] -= err_j U[j, j:]``), lazily across blocks.
    Computes in float32 (float64 inputs in float64); returns (new weight (out, in) in ``weight``'s
    dtype, bool mask (out, in), True = kept). Pure: the inputs are not modified.
    """
    _check_sparsity(sparsity)
    if weight.dim() != 2 or tuple(H.shape) != (weight.shape[1], weight.shape[1]):
        shapes = f"{tuple(weight.shape)} and {tuple(H.shape)}"
        raise OneShotError(f"sparsegpt_prune needs weight (out, in) and H (in, in), got {shapes}")
    if blocksize < 1 or percdamp < 0:
        raise OneShotError(f"need blocksize >= 1 and percdamp >= 0, got {blocksize} and {percdamp}")
    columns = weight.shape[1]
    nm = _nm(pattern, sparsity, columns)
    if nm is not None and blocksize % nm[1]:
        raise OneShotError(f"blocksize {blocksize} must be a multiple of the pattern's M={nm[1]}")
    dt = _compute_dtype(weight)
    W = weight.detach().to(dt).clone()  # (out, in)
    H = H.detach().to(device=W.device, dtype=dt).clone()  # (in, in)
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H.diagonal().add_(percdamp * torch.mean(torch.diag(H)))
    try:
        U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)  # (in, in)
    except torch.linalg.LinAlgError as e:
        raise OneShotError(
            f"the Hessian is not positive definite after {percdamp} dampening: use more calibration "
            f"tokens or a larger percdamp ({e})"
        ) from e
    mask = torch.ones_like(W, dtype=torch.bool)
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        W1 = W[:, i1:i2].clone()  # (out, B)
        Q1, Err1 = torch.zeros_like(W1), torch.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]  # (B, B)
        d = torch.diag(U1)  # (B,)
        keep1 = topk_mask(W1**2 / d**2, sparsity) if nm is None else torch.ones_like(W1, dtype=torch.bool)
        for i in range(i2 - i1):
            if nm is not None and i % nm[1] == 0:
                m = nm[1]
                keep1[:, i : i + m] = nm_mask(W1[:, i : i + m] ** 2 / d[i : i + m] ** 2, *nm)
            w = W1[:, i]  # (out,)
            q = torch.where(keep1[:, i], w, torch.zeros_like(w))
            err = (w - q) / d[i]  # (out,)
            W1[:, i:] -= err.unsqueeze(1) * U1[i, i:].unsqueeze(0)  # (out, B - i)
            Q1[:, i], Err1[:, i] = q, err
        W[:, i1:i2] = Q1
        mask[:, i1:i2] = keep1
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]  # (out, in - i2)
    mask &= ~dead.unsqueeze(0)
    if nm is not None:
        check_pattern(mask, *nm)
    return W.to(weight.dtype), mask


def _batches(batches: Iterable[Batch]) -> list[Batch]:
    out = [{k: v for k, v in dict(b).items() if k != "labels"} for b in batches]
    if not out:
        raise OneShotError("one-shot pruning needs at least one calibration batch, got none")
    return out


def _linears_by_layer(model: nn.Module) -> list[dict[str, nn.Linear]]:
    """Prunable linears grouped by encoder layer: [layer] -> {full name: linear}."""
    groups: list[dict[str, nn.Linear]] = [{} for _ in encoder_layers(model)]
    for name, lin in prunable_linears(model).items():
        groups[describe(name, model)[0]][name] = lin
    return groups


class _Accumulator:
    """Running statistic of one linear's inputs over the calibration tokens.

    ``norm``: (in,) ``sum ||x_j||^2 / n`` (Wanda's ``scaler_row``); ``hessian``: (in, in)
    ``2/n sum x x^T`` (SparseGPT's ``H``); ``n`` counts sequences as the official ``add_batch`` does.
    The sums are kept and divided at the end: the same value as the official running mean.
    """

    def __init__(self, kind: Stat):
        self.kind, self.sum, self.n, self.tokens = kind, None, 0, 0

    def add(self, x: torch.Tensor, sequences: int) -> None:
        x = x.to(_compute_dtype(x))  # (tokens, in)
        s = (x**2).sum(0) if self.kind == "norm" else x.T @ x  # (in,) or (in, in)
        self.sum = s if self.sum is None else self.sum + s
        self.n += sequences
        self.tokens += x.shape[0]

    def value(self) -> torch.Tensor:
        return self.sum / self.n if self.kind == "norm" else self.sum * (2.0 / self.n)


@contextmanager
def _hooks(modules: Iterable[nn.Module], hook: Callable) -> Iterator[None]:
    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def _collecting(lins: dict[str, nn.Linear], kind: Stat) -> Iterator[tuple[dict[str, _Accumulator], list]]:
    """Hooks that add the inputs of ``lins`` to one :class:`_Accumulator` each while the block runs
    forwards; the caller puts the running batch's (B*T,) bool token mask (or None) in ``keep[0]``."""
    acc = {name: _Accumulator(kind) for name in lins}
    module_name = {lin: name for name, lin in lins.items()}
    keep: list[torch.Tensor | None] = [None]

    def collect(mod: nn.Module, args: tuple, out: torch.Tensor) -> None:
        x = args[0]  # (B, T, in)
        rows = x.reshape(-1, x.shape[-1])  # (B*T, in)
        if keep[0] is not None:
            if keep[0].numel() != rows.shape[0]:
                raise OneShotError(f"attention_mask has {keep[0].numel()} tokens, the linear saw {rows.shape[0]}")
            rows = rows[keep[0]]  # (tokens, in)
        acc[module_name[mod]].add(rows, x.shape[0] if x.dim() == 3 else 1)

    with _hooks(lins.values(), collect):
        yield acc, keep


def _values(acc: dict[str, _Accumulator]) -> dict[str, torch.Tensor]:
    if any(a.tokens == 0 for a in acc.values()):
        raise OneShotError("the calibration batches hold no tokens outside padding (attention_mask all 0)")
    return {name: a.value() for name, a in acc.items()}


def _token_mask(batch: Batch) -> torch.Tensor | None:
    am = batch.get("attention_mask")
    return None if am is None else am.reshape(-1).bool()


def _on(batches: list[Batch], model: nn.Module) -> list[Batch]:
    device = next(model.parameters()).device
    return [{k: v.to(device) for k, v in b.items()} for b in batches]


@torch.no_grad()
def calibration_stats(model: nn.Module, batches: Iterable[Batch], layer: int, kind: Stat) -> dict[str, torch.Tensor]:
    """Statistics of the inputs of encoder layer ``layer``'s prunable linears, with the model as it
    is now: {full linear name: (in,) for ``"norm"`` (mean over sequences of the squared input-feature
    norms) or (in, in) for ``"hessian"`` (2/n X^T X)}. ``batches`` are ``model(**batch)`` dicts;
    tokens with ``attention_mask == 0`` are skipped; the forward stops after the layer. One full
    forward per batch: the reference the layer-by-layer replay of :func:`_prune_sequential` is
    tested against."""
    if kind not in ("norm", "hessian"):
        raise OneShotError(f"kind must be 'norm' or 'hessian', got {kind!r}")
    batches = _on(_batches(batches), model)
    lins = _linears_by_layer(model)
    if not 0 <= layer < len(lins):
        raise OneShotError(f"layer {layer} is not an encoder layer (the model has {len(lins)})")

    def stop(mod: nn.Module, args: tuple, out: object) -> None:
        raise _StopForward

    with eval_mode(model), _collecting(lins[layer], kind) as (acc, keep):
        with _hooks([encoder_layers(model)[layer]], stop):
            for batch in batches:
                keep[0] = _token_mask(batch)
                try:
                    model(**batch)
                except _StopForward:
                    pass
    return _values(acc)


@torch.no_grad()
def _prune_sequential(
    model: nn.Module,
    batches: Iterable[Batch],
    kind: Stat,
    prune_one: Callable[[nn.Linear, torch.Tensor], None],
    label: str,
    pattern: str | None,
    progress: Progress | None,
    stats: dict[str, torch.Tensor] | None,
) -> MaskSet:
    """Layer after layer: the statistics of layer ``l``'s linears with layers ``< l`` pruned, then
    prune them. On a model whose layers replay faithfully (see
    :class:`~kaviz.train.layer_replay.LayerReplay`) each layer runs once on the outputs of the
    pruned layer below, as the official code does; else one forward up to layer ``l`` per layer."""
    batches = _on(_batches(batches), model)
    groups = _linears_by_layer(model)
    with eval_mode(model):
        rec: LayerReplay | None = LayerReplay(model, batches)
        if not rec.faithful():
            rec = None
            if progress is not None:
                progress(f"{label}: this model's layers do not replay on their own; one forward per layer instead")
        hidden = rec.first_inputs() if rec is not None else []
        for layer, lins in enumerate(groups):
            if rec is None:
                got = calibration_stats(model, batches, layer, kind)
            else:
                with _collecting(lins, kind) as (acc, keep):
                    for b, h in enumerate(hidden):
                        keep[0] = _token_mask(batches[b])
                        rec.run(layer, b, h)
                got = _values(acc)
            for name, lin in lins.items():
                prune_one(lin, got[name])
            if rec is not None:
                hidden = [rec.run(layer, b, h) for b, h in enumerate(hidden)]  # the pruned layer's outputs
            if stats is not None:
                stats.update(got)
            if progress is not None:
                progress(f"{label}: layer {layer + 1}/{len(groups)} pruned ({len(lins)} linears)")
    masks = MaskSet.from_zeros(model)
    masks.pattern = parse_pattern(pattern)
    return masks


def _validate(model: nn.Module, sparsity: float, pattern: str | None, blocksize: int | None = None) -> None:
    """Every check that can fail, before any weight changes."""
    _check_sparsity(sparsity)
    for lin in prunable_linears(model).values():
        nm = _nm(pattern, sparsity, in_features(lin))
        if blocksize is not None and nm is not None and blocksize % nm[1]:
            raise OneShotError(f"blocksize {blocksize} must be a multiple of the pattern's M={nm[1]}")
    if blocksize is not None and blocksize < 1:
        raise OneShotError(f"blocksize must be >= 1, got {blocksize}")


def prune_wanda(
    model: nn.Module,
    batches: Iterable[Batch],
    sparsity: float,
    pattern: str | None = None,
    *,
    progress: Progress | None = None,
    stats: dict[str, torch.Tensor] | None = None,
) -> MaskSet:
    """Wanda one-shot pruning of ``model``'s encoder linears in place, layer after layer on the
    calibration ``batches`` (dicts for ``model(**batch)``; ``labels`` dropped); returns the masks.

    ``progress`` is called once per layer; a ``stats`` dict is filled with each linear's
    ``"norm"`` statistic (in,) as it was used (see :func:`calibration_stats`).
    """
    _validate(model, sparsity, pattern)

    def prune_one(lin: nn.Linear, norm2: torch.Tensor) -> None:
        w = oriented(lin)  # (out, in) view, also of a Conv1D
        keep = wanda_mask(w, norm2.sqrt(), sparsity, pattern)  # (out, in)
        w.masked_fill_(~keep, 0.0)

    return _prune_sequential(model, batches, "norm", prune_one, "wanda", pattern, progress, stats)


def prune_sparsegpt(
    model: nn.Module,
    batches: Iterable[Batch],
    sparsity: float,
    pattern: str | None = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
    *,
    progress: Progress | None = None,
    stats: dict[str, torch.Tensor] | None = None,
) -> MaskSet:
    """SparseGPT one-shot pruning of ``model``'s encoder linears in place (weights pruned *and*
    updated; biases untouched), layer after layer on the calibration ``batches``; returns the masks.

    ``progress`` is called once per layer; a ``stats`` dict is filled with each linear's Hessian
    (in, in) as it was used (see :func:`calibration_stats`).
    """
    _validate(model, sparsity, pattern, blocksize)
    if percdamp < 0:
        raise OneShotError(f"percdamp must be >= 0, got {percdamp}")

    def prune_one(lin: nn.Linear, H: torch.Tensor) -> None:
        w = oriented(lin)  # (out, in) view, also of a Conv1D
        new, _ = sparsegpt_prune(w, H, sparsity, pattern, blocksize, percdamp)
        w.copy_(new)

    return _prune_sequential(model, batches, "hessian", prune_one, "sparsegpt", pattern, progress, stats)
