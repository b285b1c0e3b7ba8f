"""What a finding is, and the pieces every findings rule shares: :class:`Finding` (one sentence and
its numbers), :class:`Tables` (a run's tables as the rules read them), :func:`fmt` and :func:`label`
(how sentences show numbers and methods), and the constants more than one rule reads.

The rules live in :mod:`kaviz.analysis.findings` and, for the paper's claim,
:mod:`kaviz.analysis.claim`; both import this module and not each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import pandas as pd

from kaviz.core.registry import METHOD_INFO

#: A score within this of the best constant answer (score units: 0.01 = one point) has fallen to it.
CONSTANT_MARGIN = 0.01
TEACHER = "finetuned"  # the stage, and the reference of rows compared with it

INFO, WARNING = 0, 1  # severity; warnings are shown first
METRIC_NAMES = {"accuracy": "accuracy", "f1": "F1", "matthews": "MCC", "pearson": "Pearson r", "spearman": "Spearman"}
SCORE_PAGE = "pages/2_accuracy_vs_sparsity.py"
KNOWLEDGE_PAGE = "pages/3_knowledge_flow.py"
INFERENCE_PAGE = "pages/9_inference.py"


@dataclass(frozen=True)
class Finding:
    """One sentence, the numbers it states (unrounded), the page whose figure shows them."""

    rule: str
    text: str
    numbers: dict[str, float]
    page: str
    severity: int = INFO
    order: int = 0  # position of its rule in RULES

    def __post_init__(self) -> None:
        if not self.numbers or not all(math.isfinite(v) for v in self.numbers.values()):
            raise ValueError(f"finding {self.rule!r} lacks a finite number behind {self.text!r}: {self.numbers}")


@dataclass(frozen=True)
class Tables:
    """A run's tables at the main budget, as the rules read them. ``pruned``: method, sparsity,
    mean (over seeds) of ``score`` of the pruned units; ``teacher``: its score; ``constant``: (value,
    class) of the best constant answer on the dev labels (classification only); ``focus``: the method
    sentences follow (the paper's when present, else the best at the highest sparsity all methods
    reached) and its highest sparsity; ``metric_name``: what sentences call ``score``."""

    metrics: pd.DataFrame
    knowledge: pd.DataFrame
    inference: pd.DataFrame
    pruned: pd.DataFrame
    teacher: float | None
    constant: tuple[float, float] | None
    focus: tuple[str, float] | None
    metric_name: str
    metric: str | None = None  # the task metric ``score`` is (accuracy, f1, ...)
    predictions: pd.DataFrame | None = None  # unit, example, label, prediction: intervals need them


def fmt(value: float, kind: Literal["score", "ratio", "corr", "sparsity"]) -> str:
    """A number as sentences show it: ``score`` 88.0, ``ratio`` 98.5%, ``corr`` 0.93, ``sparsity`` 90%."""
    v = float(value)
    return {"score": f"{100 * v:.1f}", "ratio": f"{100 * v:.1f}%", "corr": f"{v:.2f}"}.get(kind, f"{100 * v:g}%")


def label(method: str) -> str:
    """How sentences name a method (the registry's label)."""
    return METHOD_INFO[method].label if method in METHOD_INFO else str(method)


def signed(x: float) -> str:
    """A score difference with its sign: +3.9, −1.2."""
    return ("+" if x >= 0 else "−") + fmt(abs(x), "score")
