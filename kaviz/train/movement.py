"""Movement pruning (Sanh, Wolf & Rush 2020, "Movement Pruning: Adaptive Sparsity by Fine-Tuning").

Every prunable encoder linear computes with ``W' = W * M(S)`` where ``S`` is a learned score matrix
(same shape as ``W``) and ``M`` a 0/1 mask binarised from it. The binariser's backward is
straight-through, so ``dL/dS = dL/dW' * W``: a score grows while its weight moves away from zero
(paper eq. 5, ``S = -sum_t dL/dW'^(t) * W^(t)`` under SGD), and falls while it moves towards zero.

Two variants, as in the official code:

* ``"topK"`` (movement pruning): ``M`` keeps the top ``1 - s`` fraction of each matrix's scores,
  recomputed at every forward; a cubic schedule only raises ``s``.
* ``"sigmoied_threshold"`` (soft movement pruning): ``M = sigmoid(S) > tau`` with an L1 penalty
  ``lambda * mean sigmoid(S)`` added to the loss (:func:`regularization`); ``tau`` follows the cubic
  schedule from 0 and ``lambda = final_lambda * tau / tau_final``. The sparsity reached is set by
  ``lambda``, not chosen: it cannot hit an exact target.

Official hyper-parameters (README, SQuAD, BERT-base, 10 epochs, weights lr 3e-5, warm-up 5400):
``mask_scores_learning_rate 1e-2`` (scores in their own AdamW group, no weight decay),
``mask_init constant``, ``mask_scale 0.``; topK: keep fraction 1 -> 0.15 (``initial_threshold 1``,
``final_threshold 0.15``); soft: ``initial_threshold 0``, ``final_threshold 0.1``, ``regularization l1``,
``final_lambda 400``; the schedule holds its start for ``initial_warmup 1`` x warm-up steps and
its end for ``final_warmup 2`` x warm-up steps (here ``ramp_start`` / ``ramp_end`` fractions).

Sources: huggingface/transformers ``examples/research_projects/movement-pruning``:
``emmental/modules/binarizer.py`` (TopKBinarizer, ThresholdBinarizer), ``emmental/modules/masked_nn.py``
(MaskedLinear), ``masked_run_glue.py`` (schedule_threshold, regularization, optimizer groups, arguments).

Here the scores live in a :class:`MovementScores` module *beside* the model (pass it to
``train_loop(extra_modules=...)``); each linear's ``weight`` becomes a ``torch.nn.utils.parametrize``
parametrisation while attached, and :meth:`MovementScores.detach` leaves a plain ``nn.Linear`` whose
zeros are the final mask.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import torch
from torch import nn
from torch.nn.utils import parametrize

from kaviz.core.names import parse_pattern
from kaviz.core.structure import in_features, is_transposed, prunable_linears
from kaviz.train.pruning import check_pattern, cubic_sparsity, nm_mask

Method = Literal["topK", "sigmoied_threshold"]
METHODS: tuple[str, ...] = ("topK", "sigmoied_threshold")


def topk_keep(scores: torch.Tensor, sparsity: float, pattern: tuple[int, int] | None = None) -> torch.Tensor:
    """Boolean mask (same shape as ``scores``) keeping the ``numel - round(sparsity * numel)`` highest
    scores of one matrix (the count of :func:`kaviz.train.pruning.topk_mask`).

    With ``pattern=(n, m)`` the mask at ``sparsity = 1 - n/m`` keeps the ``n`` highest of every ``m``
    consecutive inputs; below it, only entries outside that N:M mask are pruned (as ``MaskSet``).
    """
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    if pattern is not None:
        n, m = pattern
        final = 1.0 - n / m
        if sparsity > final + 1e-9:
            raise ValueError(f"an {n}:{m} pattern is {final:.0%} sparse; {sparsity:.0%} asked")
        within = nm_mask(scores, n, m)
        if sparsity >= final - 1e-9:
            return within
        scores = scores.masked_fill(~within, -math.inf)
    flat = scores.reshape(-1)  # (numel,)
    n_prune = int(round(sparsity * flat.numel()))
    n_keep = flat.numel() - n_prune
    if n_keep <= n_prune:  # select the smaller side: topk cost grows with k
        mask = torch.zeros_like(flat, dtype=torch.bool)
        mask[torch.topk(flat, n_keep, largest=True, sorted=False).indices] = True
    else:
        mask = torch.ones_like(flat, dtype=torch.bool)
        mask[torch.topk(flat, n_prune, largest=False, sorted=False).indices] = False
    return mask.view_as(scores)


def threshold_keep(scores: torch.Tensor, threshold: float, sigmoid: bool = True) -> torch.Tensor:
    """Boolean mask ``sigmoid(S) > threshold`` (or ``S > threshold``); as the official binariser, at
    least ``int(0.005 * numel) + 1`` entries (the highest scores) are always kept."""
    n = scores.numel()
    mask = (torch.sigmoid(scores) if sigmoid else scores) > threshold
    n_min = int(0.005 * n) + 1
    if int(mask.sum()) < n_min:
        kth = scores.reshape(-1).kthvalue(max(n - n_min, 1)).values
        mask = scores > kth
    return mask


class TopKBinarizer(torch.autograd.Function):
    """``M = topk_keep(S, sparsity, pattern)`` as 0/1 of ``S``'s dtype; backward is straight-through
    (``dL/dS = dL/dM``), as the official TopKBinarizer. ``S``: ``(out, in)``."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, sparsity: float, pattern: tuple[int, int] | None = None) -> torch.Tensor:
        return topk_keep(scores.detach(), sparsity, pattern).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return grad, None, None


class ThresholdBinarizer(torch.autograd.Function):
    """``M = sigmoid(S) > threshold`` (``sigmoid=True``, soft movement) or ``S > threshold`` as 0/1;
    straight-through backward, as the official ThresholdBinarizer."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, threshold: float, sigmoid: bool = True) -> torch.Tensor:
        return threshold_keep(scores.detach(), threshold, sigmoid).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return grad, None, None


class _MaskedWeight(nn.Module):
    """Parametrisation ``W -> W * M(S_i)``; holds its owner in a list so the scores are not
    registered as parameters of the model (the model's parameters and state stay its own)."""

    def __init__(self, owner: MovementScores, index: int):
        super().__init__()
        self._owner = [owner]
        self.index = index

    def forward(self, weight: torch.Tensor) -> torch.Tensor:  # (out, in)
        return weight * self._owner[0].mask(self.index).to(weight.dtype)  # (out, in)


class MovementScores(nn.Module):
    """One learned score matrix per prunable encoder linear, constant-initialised (official default 0).

    ``linears`` overrides the modules scored (name -> ``nn.Linear``, names as ``model.get_submodule``
    takes them); by default :func:`~kaviz.core.structure.prunable_linears`, in its order.
    ``pattern`` (``"N:M"``, topK only) makes the final mask keep N of every M consecutive inputs.
    """

    def __init__(
        self,
        model: nn.Module,
        method: Method = "topK",
        *,
        init: float = 0.0,
        pattern: str | None = None,
        linears: Mapping[str, nn.Linear] | None = None,
    ):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"unknown movement method {method!r}; known: {', '.join(METHODS)}")
        lins = dict(linears) if linears is not None else prunable_linears(model)
        self.method: Method = method
        self.pattern = parse_pattern(pattern)
        if self.pattern is not None and method != "topK":
            raise ValueError(f"an N:M pattern needs method 'topK', got {method!r}")
        self.names = list(lins)
        self.transposed = [is_transposed(lin) for lin in lins.values()]
        for name, lin in lins.items():
            if self.pattern is not None and in_features(lin) % self.pattern[1]:
                raise ValueError(f"{name}: {in_features(lin)} inputs are not a multiple of M={self.pattern[1]}")
        w = [lin.weight for lin in lins.values()]
        self.scores = nn.ParameterList(
            [nn.Parameter(torch.full(p.shape, float(init), dtype=torch.float32, device=p.device)) for p in w]
        )
        self.sparsity = 0.0  # topK: fraction pruned per matrix
        self.threshold = 0.0  # sigmoied_threshold: tau on sigmoid(S)
        self._model: list[nn.Module] = []  # the attached model, unregistered
        self._final: list[torch.Tensor] | None = None

    def mask(self, i: int) -> torch.Tensor:
        """The 0/1 mask of linear ``i`` (shaped like its weight) from its scores, differentiable
        straight-through; N:M groups run along the inputs, also for ``(in, out)`` Conv1D weights."""
        if self.method == "topK":
            if self.transposed[i]:
                return TopKBinarizer.apply(self.scores[i].T, self.sparsity, self.pattern).T
            return TopKBinarizer.apply(self.scores[i], self.sparsity, self.pattern)
        return ThresholdBinarizer.apply(self.scores[i], self.threshold, True)

    def set_sparsity(self, sparsity: float) -> None:
        """topK: prune the ``sparsity`` fraction of lowest scores of every matrix from the next forward."""
        if self.method != "topK":
            raise ValueError(f"set_sparsity is for method 'topK'; {self.method!r} uses set_threshold")
        if not 0.0 <= sparsity <= 1.0:
            raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
        if self.pattern is not None and sparsity > 1.0 - self.pattern[0] / self.pattern[1] + 1e-9:
            n, m = self.pattern
            raise ValueError(f"an {n}:{m} pattern is {1 - n / m:.0%} sparse; {sparsity:.0%} asked")
        self.sparsity = float(sparsity)

    def set_threshold(self, threshold: float) -> None:
        """sigmoied_threshold: keep weights whose ``sigmoid(score) > threshold`` (in [0, 1))."""
        if self.method != "sigmoied_threshold":
            raise ValueError(f"set_threshold is for method 'sigmoied_threshold', not {self.method!r}")
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {threshold}")
        self.threshold = float(threshold)

    @property
    def attached(self) -> bool:
        return bool(self._model)

    def attach(self, model: nn.Module) -> MovementScores:
        """Make every scored linear of ``model`` compute with ``weight * mask(scores)`` (in place).

        The weight parameter object is kept (``...parametrizations.weight.original``), so an optimizer
        made before still trains it; its gradient is ``mask * dL/dW'``. Detach before saving.
        """
        if self._model:
            raise ValueError("these scores are already attached to a model; detach it first")
        for i, name in enumerate(self.names):
            lin = model.get_submodule(name)
            if tuple(lin.weight.shape) != tuple(self.scores[i].shape):
                raise ValueError(f"{name}: weight {tuple(lin.weight.shape)} != scores {tuple(self.scores[i].shape)}")
            parametrize.register_parametrization(lin, "weight", _MaskedWeight(self, i))
        self._model, self._final = [model], None
        return self

    @torch.no_grad()
    def detach(self, model: nn.Module | None = None) -> nn.Module:
        """Remove the parametrisations, leaving each weight multiplied by its final mask (plain
        ``nn.Linear`` again); returns the model. :meth:`masks` keeps returning those masks."""
        model = model if model is not None else (self._model[0] if self._model else None)
        if model is None:
            raise ValueError("these scores are not attached to a model")
        self._final = self.masks()
        for name in self.names:
            parametrize.remove_parametrizations(model.get_submodule(name), "weight", leave_parametrized=True)
        self._model = []
        return model

    @torch.no_grad()
    def masks(self) -> list[torch.Tensor]:
        """Boolean masks ``(out, in)``, one per scored linear in ``names`` order: the current ones
        while attached, the final ones after :meth:`detach`."""
        if self._final is not None:
            return [m.clone() for m in self._final]
        return [self.mask(i).bool() for i in range(len(self.scores))]

    def param_group(self, lr: float = 1e-2, weight_decay: float = 0.0) -> dict:
        """An optimizer group for the scores with the official score lr and no weight decay."""
        return {"params": list(self.scores), "lr": lr, "weight_decay": weight_decay}


def regularization(scores: MovementScores) -> torch.Tensor:
    """Official soft-movement L1 penalty: mean over matrices of ``||sigmoid(S)||_1 / numel``, a
    scalar in (0, 1); add ``lambda * regularization(scores)`` to the loss."""
    terms = [torch.sigmoid(s).sum() / s.numel() for s in scores.scores]
    return torch.stack(terms).mean()


class MovementPruner:
    """Drives :class:`MovementScores` along the cubic schedule, with :class:`CubicPruner`'s interface.

    topK: ``target`` is the final sparsity, reached at ``ramp_end * total_steps``; the schedule holds
    0 until ``ramp_start * total_steps`` (official ``initial_warmup``). With ``n_updates`` the value
    changes only every ``(ramp_end - ramp_start) * total_steps // n_updates`` steps; by default
    (official) at every step.
    sigmoied_threshold: ``target`` is the final threshold ``tau`` (official 0.1), ramped from 0, and
    :attr:`regu_lambda` ``= final_lambda * tau / target`` is the weight of :func:`regularization`.

    :meth:`finish` sets the target, checks an N:M pattern and detaches the scores from the model, so
    the model is left a plain checkpoint whose zeros are the mask (as after ``CubicPruner.finish``).
    """

    def __init__(
        self,
        scores: MovementScores,
        target: float,
        total_steps: int,
        n_updates: int | None = None,
        ramp_end: float = 1.0,
        ramp_start: float = 0.0,
        final_lambda: float = 0.0,
    ):
        if not 0.0 <= ramp_start < ramp_end <= 1.0:
            raise ValueError(f"need 0 <= ramp_start < ramp_end <= 1, got {ramp_start}, {ramp_end}")
        if scores.pattern is not None and abs(target - (1.0 - scores.pattern[0] / scores.pattern[1])) > 1e-9:
            n, m = scores.pattern
            raise ValueError(f"an {n}:{m} pattern ends at sparsity {1 - n / m:g}; target {target:g} asked")
        self.scores, self.target, self.final_lambda = scores, float(target), float(final_lambda)
        self.ramp_steps = max(1, int(round(total_steps * ramp_end)))
        self.start_steps = min(int(round(total_steps * ramp_start)), self.ramp_steps - 1)
        window = self.ramp_steps - self.start_steps
        self.every = 1 if n_updates is None else max(1, window // max(1, n_updates))
        self.n_updates_done = 0
        self._set(0.0)

    @property
    def value(self) -> float:
        """The scheduled quantity now: sparsity (topK) or threshold (sigmoied_threshold)."""
        return self.scores.sparsity if self.scores.method == "topK" else self.scores.threshold

    @property
    def regu_lambda(self) -> float:
        """Current weight of :func:`regularization` (0 for topK)."""
        if self.scores.method == "topK" or self.target <= 0:
            return 0.0
        return self.final_lambda * self.value / self.target

    def schedule(self, step: int) -> float:
        """Cubic value at 1-based ``step``: 0 up to ``start_steps``, ``target`` from ``ramp_steps`` on."""
        return cubic_sparsity(step - self.start_steps, self.ramp_steps - self.start_steps, self.target)

    def _set(self, value: float) -> None:
        if self.scores.method == "topK":
            self.scores.set_sparsity(value)
        else:
            self.scores.set_threshold(value)

    def step(self, step: int) -> None:
        on_beat = (step - self.start_steps) % self.every == 0
        if self.start_steps < step <= self.ramp_steps and (on_beat or step == self.ramp_steps):
            v = self.schedule(step)
            if v > self.value + 1e-12:
                self._set(v)
                self.n_updates_done += 1

    def finish(self) -> None:
        if self.value < self.target:
            self._set(self.target)
            self.n_updates_done += 1
        if self.scores.pattern is not None:
            n, m = self.scores.pattern
            for mask in self.scores.masks():
                check_pattern(mask, n, m)
        if self.scores.attached:
            self.scores.detach()
