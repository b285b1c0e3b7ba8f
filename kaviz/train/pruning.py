"""Unstructured magnitude pruning per weight matrix, the cubic schedule, sparsity accounting.

Masks live in a :class:`MaskSet` beside the model (never in the module graph), so a pruned model
saves as a plain checkpoint whose zeros *are* the mask.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd
import torch
from torch import nn

from kaviz.core.names import parse_pattern
from kaviz.core.structure import is_transposed, oriented, parts, prunable_linears

Criterion = Callable[[torch.Tensor], torch.Tensor]  # weight (out, in) -> importance score, same shape

CRITERIA: dict[str, Criterion] = {
    "magnitude": lambda w: w.abs(),
}


def cubic_sparsity(step: int, total_steps: int, final: float, initial: float = 0.0) -> float:
    """Zhu & Gupta (2017) schedule: s_t = s_f + (s_i - s_f) (1 - t/T)^3, clipped to [0, T]."""
    if total_steps <= 0:
        return final
    frac = min(max(step / total_steps, 0.0), 1.0)
    return final + (initial - final) * (1.0 - frac) ** 3


def topk_mask(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Boolean mask keeping the ``numel - round(sparsity * numel)`` highest scores of one matrix."""
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    n = score.numel()
    n_prune = int(round(sparsity * n))
    mask = torch.ones(n, dtype=torch.bool, device=score.device)
    if n_prune > 0:
        idx = torch.topk(score.reshape(-1), n_prune, largest=False, sorted=False).indices
        mask[idx] = False
    return mask.view_as(score)


def nm_mask(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Boolean mask keeping the ``n`` highest scores in every group of ``m`` consecutive entries
    along the last dimension (a weight's inputs), as in NVIDIA's 2:4 and the SparseGPT/Wanda code.
    The last dimension must be a multiple of ``m``."""
    if score.shape[-1] % m:
        raise ValueError(f"{m} does not divide the matrix's {score.shape[-1]} columns")
    groups = score.reshape(-1, m)
    keep = torch.topk(groups, n, dim=1, sorted=False).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, keep, True)
    return mask.view_as(score)


def check_pattern(mask: torch.Tensor, n: int, m: int) -> None:
    """Raise ValueError unless every group of ``m`` along the last dimension keeps at most ``n``
    (exactly ``n`` where the scores were finite)."""
    counts = mask.reshape(-1, m).sum(dim=1)
    if bool((counts > n).any()):
        raise ValueError(f"mask breaks the {n}:{m} pattern: a group keeps {int(counts.max())}")


class MaskSet:
    """Masks for the prunable encoder linears of one model.

    ``update(s)`` recomputes every matrix's mask at sparsity ``s`` from the current weights
    (pruned weights score ``-inf`` so they never return); ``apply()`` zeroes masked weights in
    place with one fused ``_foreach_mul_`` (call it after every optimizer step).

    With an N:M ``pattern`` (e.g. ``"2:4"``) the final mask keeps N of every M consecutive inputs
    of a row; on the way there (gradual schedules) each update keeps the top scores *inside* the
    N:M mask of the current scores, and the pattern is checked after every update.
    """

    def __init__(self, model: nn.Module, criterion: str | Criterion = "magnitude", pattern: str | None = None):
        self.linears = prunable_linears(model)
        self.pattern = parse_pattern(pattern)
        self.names = list(self.linears)
        self.transposed = [is_transposed(m) for m in self.linears.values()]
        self.masks: list[torch.Tensor] = [torch.ones_like(w, dtype=torch.bool) for w in self.weights]
        self._float_masks: list[torch.Tensor] | None = None
        if isinstance(criterion, str):
            if criterion not in CRITERIA:
                raise ValueError(f"unknown pruning criterion {criterion!r}; known: {', '.join(CRITERIA)}")
            criterion = CRITERIA[criterion]
        self.criterion = criterion
        self.sparsity = 0.0

    @property
    def weights(self) -> list[torch.Tensor]:
        """The prunable weights as the model holds them now (moving a model may replace them)."""
        return [m.weight for m in self.linears.values()]

    def _follow_weights(self) -> None:
        """Keep the masks on the weights' device: the model may be moved (e.g. to the GPU by the
        training loop) after the masks were made."""
        weights = self.weights
        if self.masks and self.masks[0].device != weights[0].device:
            self.masks = [m.to(w.device) for m, w in zip(self.masks, weights)]
            self._float_masks = None

    @torch.no_grad()
    def update(self, sparsity: float) -> None:
        if sparsity < self.sparsity - 1e-12:
            raise ValueError(f"sparsity may only grow: {self.sparsity} -> {sparsity}")
        self._follow_weights()
        for i, w in enumerate(self.weights):
            score = self.criterion(w.detach()).float().masked_fill(~self.masks[i], -math.inf)
            if self.transposed[i]:  # N:M groups run along the inputs: mask the (out, in) view
                self.masks[i] = self._mask(score.T, sparsity).T
            else:
                self.masks[i] = self._mask(score, sparsity)
            measurable = w.device.type != "meta"  # (tests move models to 'meta' to stand in for a GPU)
            if (
                measurable
                and self.pattern is None
                and int(self.masks[i].sum()) != w.numel() - round(sparsity * w.numel())
            ):
                raise RuntimeError(f"{self.names[i]}: mask sparsity is not {sparsity} after an update")
        self.sparsity = sparsity
        self._float_masks = None
        self.apply()

    def _mask(self, score: torch.Tensor, sparsity: float) -> torch.Tensor:
        if self.pattern is None:
            return topk_mask(score, sparsity)
        n, m = self.pattern
        final = 1.0 - n / m
        if sparsity > final + 1e-9:
            raise ValueError(f"an {n}:{m} pattern is {final:.0%} sparse; {sparsity:.0%} asked")
        within = nm_mask(score, n, m)
        if sparsity < final - 1e-9:  # on the way: prune only weights the N:M mask would drop
            return topk_mask(score.masked_fill(~within, -math.inf), sparsity)
        mask = within & torch.isfinite(score)
        check_pattern(mask, n, m)
        return mask

    @torch.no_grad()
    def apply(self) -> None:
        self._follow_weights()
        weights = self.weights
        if self._float_masks is None or self._float_masks[0].dtype != weights[0].dtype:
            self._float_masks = [m.to(w.dtype) for m, w in zip(self.masks, weights)]
        torch._foreach_mul_(weights, self._float_masks)

    @classmethod
    def from_zeros(cls, model: nn.Module) -> MaskSet:
        """Masks read off a model's zeros (a model pruned elsewhere, or a fixed upstream mask)."""
        ms = cls(model)
        ms.masks = [w.detach() != 0 for w in ms.weights]
        total = sum(m.numel() for m in ms.masks)
        ms.sparsity = 1.0 - sum(int(m.sum()) for m in ms.masks) / max(total, 1)
        return ms


def prune_magnitude(model: nn.Module, sparsity: float, pattern: str | None = None) -> MaskSet:
    """One-shot per-matrix magnitude pruning of ``model`` in place (N:M with ``pattern``); returns its masks."""
    ms = MaskSet(model, pattern=pattern)
    ms.update(sparsity)
    return ms


class CubicPruner:
    """Drives a :class:`MaskSet` along the cubic schedule with ``n_updates`` mask updates.

    Call :meth:`step` after every optimizer step with the 1-based step number: it re-applies the
    masks and, on update steps, raises the sparsity. The target is reached at ``ramp_end *
    total_steps`` (paper: the last step) and :meth:`finish` guarantees it at the end.
    """

    def __init__(self, masks: MaskSet, target: float, total_steps: int, n_updates: int = 100, ramp_end: float = 1.0):
        self.masks, self.target = masks, target
        self.ramp_steps = max(1, int(round(total_steps * ramp_end)))
        self.every = max(1, self.ramp_steps // max(1, n_updates))
        self.n_updates_done = 0

    def step(self, step: int) -> None:
        if step <= self.ramp_steps and (step % self.every == 0 or step == self.ramp_steps):
            s = cubic_sparsity(step, self.ramp_steps, self.target)
            if s > self.masks.sparsity:
                self.masks.update(s)
                self.n_updates_done += 1
                return
        self.masks.apply()

    def finish(self) -> None:
        if self.masks.sparsity < self.target:
            self.masks.update(self.target)
            self.n_updates_done += 1
        self.masks.apply()


def sparsity_table(model: nn.Module) -> pd.DataFrame:
    """Measured zeros per layer and role: module, layer, role, numel, nonzero, sparsity (a fused
    matrix, e.g. GPT-2's ``c_attn``, gives one row per role it holds)."""
    rows = []
    lins = prunable_linears(model)
    with torch.no_grad():
        for p in parts(model):
            w = oriented(lins[p.name])[p.rows]  # (rows, in)
            n, nz = w.numel(), int(torch.count_nonzero(w))
            rows.append(
                {"module": p.name, "layer": p.layer, "role": p.role, "numel": n, "nonzero": nz, "sparsity": 1 - nz / n}
            )
    return pd.DataFrame(rows, columns=["module", "layer", "role", "numel", "nonzero", "sparsity"])


def sparsity_summary(model: nn.Module, reference_encoder_params: int | None = None) -> dict[str, float]:
    """Encoder sparsity (vs the dense reference size, default the model's own), non-zero counts.

    ``encoder_sparsity = 1 - nonzero encoder linear weights / reference_encoder_params``; for a
    small-dense student pass the teacher's encoder size so its "sparsity" is comparable.
    """
    table = sparsity_table(model)
    enc_nz, enc_n = int(table.nonzero.sum()), int(table.numel.sum())
    ref = reference_encoder_params or enc_n
    with torch.no_grad():
        total_nz = sum(int(torch.count_nonzero(p)) for p in model.parameters())
        total = sum(p.numel() for p in model.parameters())
    return {
        "encoder_sparsity": 1.0 - enc_nz / ref,
        "nonzero_encoder_params": float(enc_nz),
        "encoder_params": float(enc_n),
        "nonzero_params": float(total_nz),
        "params": float(total),
        "min_matrix_sparsity": float(table.sparsity.min()),
        "max_matrix_sparsity": float(table.sparsity.max()),
    }
