"""The stages and pruning methods kaviz knows, as one table: names, labels and colours.

Config validation (the method names), the method registry (:data:`kaviz.stages.methods.METHODS`
must have exactly these names; a test checks it) and every figure and table read this module;
nobody else spells a stage label or a method colour.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MethodInfo:
    label: str  # how tables and legends name it
    color: str  # its fixed colour in every figure
    trains: bool  # whether a student budget means anything to it
    markers_only: bool = False  # separate models of different shapes: points, not a line
    default: bool = True  # in a run's methods when none are given (the paper's five)
    pattern: bool = False  # supports an N:M pattern (pruning.pattern)
    calibration: bool = False  # sees pruning.calibration_examples training examples (one-shot methods)


METHOD_INFO: dict[str, MethodInfo] = {
    "oneshot-magnitude": MethodInfo("one-shot magnitude", "#636EFA", trains=False, pattern=True),
    "gradual-magnitude": MethodInfo("gradual magnitude", "#EF553B", trains=True, pattern=True),
    "knowledge-aware": MethodInfo("knowledge-aware (paper)", "#00CC96", trains=True, pattern=True),
    "small-dense": MethodInfo("small-dense", "#AB63FA", trains=True, markers_only=True),
    "upstream-magnitude": MethodInfo("upstream magnitude", "#FFA15A", trains=True),
    # the methods researchers compare against today (kaviz.stages.recent); not in a run by default
    "movement": MethodInfo("movement (top-K)", "#19D3F3", trains=True, default=False, pattern=True),
    "wanda": MethodInfo("Wanda", "#FF6692", trains=False, default=False, pattern=True, calibration=True),
    "sparsegpt": MethodInfo("SparseGPT", "#B6E880", trains=False, default=False, pattern=True, calibration=True),
    "structured": MethodInfo("structured (heads + neurons)", "#FF97FF", trains=False, default=False, calibration=True),
}
METHODS: tuple[str, ...] = tuple(METHOD_INFO)
DEFAULT_METHODS: tuple[str, ...] = tuple(m for m, info in METHOD_INFO.items() if info.default)
PATTERN_METHODS: tuple[str, ...] = tuple(m for m, info in METHOD_INFO.items() if info.pattern)
CALIBRATION_METHODS: tuple[str, ...] = tuple(m for m, info in METHOD_INFO.items() if info.calibration)

#: The dense stages: short names (figure legends), long names (headline tables), colours.
STAGE_NAMES = {"pretrained": "pre-trained", "finetuned": "fine-tuned"}
STAGE_LABELS = {"pretrained": "pre-trained", "finetuned": "fine-tuned (teacher)"}
STAGE_COLORS = {"finetuned": "#222222", "pretrained": "#888888"}
