"""Every check of a :class:`kaviz.core.config.RunConfig`, one function per part of it.

``problems(cfg)`` returns "field: message" lines (empty when the config can run); names (methods,
task, similarity kinds, imports) are checked against what kaviz knows, with a did-you-mean.
``RunConfig.validate`` raises them as one :class:`kaviz.core.errors.ConfigError`.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from kaviz.core.errors import ConfigError
from kaviz.core.names import NAME_RE, SIMILARITY_KINDS, parse_pattern

if TYPE_CHECKING:
    from kaviz.core.config import RunConfig

IMPORT_FORM = "'label@sparsity=path_or_hub_id'"


def unknown(where: str, value: str, known: Sequence[str], what: str) -> str:
    """``"<where>: unknown <what> 'x' (did you mean 'y'?); known: a, b"``."""
    hint = difflib.get_close_matches(str(value).lower(), list(known), n=1)
    return (
        f"{where}: unknown {what} {value!r}"
        + (f" (did you mean {hint[0]!r}?)" if hint else "")
        + f"; known: {', '.join(known)}"
    )


def canonical_task(name: str) -> str | None:
    """'SST-2', 'sst2', 'STS_B' -> 'sst2', 'stsb'; 'demo' and 'custom' as they are; None when unknown.
    The one place task aliases are resolved (configs are normalised with it when built)."""
    from kaviz.core.config import GLUE_TASKS

    key = str(name).strip().lower().replace("-", "").replace("_", "")
    return key if key in (*GLUE_TASKS, "demo", "custom") else None


def parse_import(entry: str, methods: Sequence[str] = ()) -> tuple[str, str, float]:
    """``'label@sparsity=path'`` -> (label, path, sparsity); ConfigError when it is not of that form,
    the label is not a safe name or is a method's, or the sparsity is not in [0, 1)."""
    head, sep, path = entry.partition("=")
    label, at, sp = head.partition("@")
    try:
        sparsity = float(sp)
        ok = 0.0 <= sparsity < 1.0
    except ValueError:
        sparsity, ok = float("nan"), False
    if not sep or not at or not path or not ok or not NAME_RE.fullmatch(label) or label in methods:
        raise ConfigError(
            f"import_students: {entry!r} must be {IMPORT_FORM} with a new label "
            "(letters, digits, '.', '_', '-') and a sparsity in [0, 1)"
        )
    return label, path, sparsity


def _grid(cfg: RunConfig, methods: Sequence[str]) -> list[str]:
    p = []
    if not NAME_RE.fullmatch(cfg.name):
        p.append(f"name: {cfg.name!r} must match {NAME_RE.pattern} (no path separators)")
    if not cfg.sparsities:
        p.append("sparsities: give at least one target sparsity")
    p += [f"sparsities: {s} is outside (0, 1)" for s in cfg.sparsities if not 0.0 < s < 1.0]
    if len(set(cfg.sparsities)) != len(cfg.sparsities):
        p.append(f"sparsities: duplicates in {cfg.sparsities}")
    if not cfg.methods and not cfg.import_students:
        p.append("methods: give at least one method")
    for e in cfg.import_students:
        try:
            parse_import(e, methods)
        except ConfigError as err:
            p.append(str(err))
    p += [unknown("methods", m, methods, "method") for m in cfg.methods if m not in methods]
    for s in cfg.extra_seed_sparsities or []:
        if s not in cfg.sparsities:
            p.append(f"extra_seed_sparsities: {s} is not in sparsities {cfg.sparsities}")
    if cfg.seed in cfg.extra_seeds:
        p.append(f"extra_seeds: {cfg.seed} repeats the main seed")
    for i, b in enumerate(cfg.extra_units):
        where = f"extra_units[{i}]"
        p += [unknown(f"{where}.methods", m, methods, "method") for m in b.methods if m not in methods]
        p += [f"{where}.sparsities: {s} is outside (0, 1)" for s in b.sparsities if not 0.0 < s < 1.0]
        p += [f"{where}.budgets: {x} must be > 0 (epochs of the training set)" for x in b.budgets if not x > 0]
        if not b.methods and not cfg.methods:
            p.append(f"{where}.methods: the run has no methods to default to")
    return p


def _task(cfg: RunConfig, tasks: Sequence[str]) -> list[str]:
    t, p = cfg.task, []
    if canonical_task(t.name) is None:
        p.append(unknown("task.name", t.name, tasks, "task"))
    if t.name == "custom":
        if not t.path:
            p.append("task.path: a custom task needs a CSV/JSONL file or folder")
        if len(t.text_columns) not in (1, 2):
            p.append(f"task.text_columns: a custom task needs one or two text columns, got {t.text_columns}")
    for fname in ("max_train_examples", "max_eval_examples"):
        v = getattr(t, fname)
        if v is not None and v < 1:
            p.append(f"task.{fname}: must be >= 1, got {v}")
    if t.max_length < 8:
        p.append(f"task.max_length: must be >= 8, got {t.max_length}")
    if t.demo_train_size < 10 or t.demo_dev_size < 10:
        p.append("task.demo_train_size / demo_dev_size: must be >= 10")
    return p


def _optimisation(cfg: RunConfig) -> list[str]:
    p = []
    for sect in ("training", "pruning"):
        c = getattr(cfg, sect)
        if c.max_steps is not None and c.max_steps < 1:
            p.append(f"{sect}.max_steps: must be >= 1, got {c.max_steps}")
        if c.epochs <= 0:
            p.append(f"{sect}.epochs: must be > 0, got {c.epochs}")
        if not 0 < c.learning_rate < 1:
            p.append(f"{sect}.learning_rate: must be in (0, 1), got {c.learning_rate}")
    tr = cfg.training
    if tr.batch_size < 1 or tr.eval_batch_size < 1:
        p.append("training.batch_size / eval_batch_size: must be >= 1")
    if not 0 <= tr.warmup_ratio < 1:
        p.append(f"training.warmup_ratio: must be in [0, 1), got {tr.warmup_ratio}")
    if tr.weight_decay < 0:
        p.append(f"training.weight_decay: must be >= 0, got {tr.weight_decay}")
    if tr.plateau_delta is not None and tr.plateau_delta < 0:
        p.append(f"training.plateau_delta: must be >= 0 (points), got {tr.plateau_delta}")
    if tr.plateau_delta is not None and tr.max_steps is not None:
        p.append("training.plateau_delta: stops by epochs; leave training.max_steps unset")
    if tr.num_threads is not None and tr.num_threads < 1:
        p.append(f"training.num_threads: must be >= 1, got {tr.num_threads}")
    dev = tr.device
    if not (dev in ("auto", "cpu", "cuda", "mps") or dev.startswith("cuda:")):
        p.append(f"training.device: {dev!r} is not one of auto, cpu, cuda, cuda:N, mps")
    pr = cfg.pruning
    if pr.mask_updates < 1:
        p.append(f"pruning.mask_updates: must be >= 1, got {pr.mask_updates}")
    if not 0 < pr.ramp_end <= 1:
        p.append(f"pruning.ramp_end: must be in (0, 1], got {pr.ramp_end}")
    if pr.small_dense_layers is not None and pr.small_dense_layers < 1:
        p.append(f"pruning.small_dense_layers: must be >= 1, got {pr.small_dense_layers}")
    if pr.calibration_examples < 1:
        p.append(f"pruning.calibration_examples: must be >= 1, got {pr.calibration_examples}")
    if pr.recovery_steps < 0:
        p.append(f"pruning.recovery_steps: must be >= 0, got {pr.recovery_steps}")
    if not 0 < pr.score_learning_rate < 1:
        p.append(f"pruning.score_learning_rate: must be in (0, 1), got {pr.score_learning_rate}")
    p += _pattern(cfg)
    d = cfg.distill
    if d.temperature <= 0:
        p.append(f"distill.temperature: must be > 0, got {d.temperature}")
    p += [
        f"distill.{a}: must be >= 0, got {getattr(d, a)}"
        for a in ("alpha_att", "alpha_hid", "alpha_pred")
        if getattr(d, a) < 0
    ]
    return p


def _pattern(cfg: RunConfig) -> list[str]:
    """An N:M pattern fixes the sparsity of the methods that use it to 1 - N/M."""
    from kaviz.core.registry import PATTERN_METHODS

    try:
        nm = parse_pattern(cfg.pruning.pattern)
    except ValueError as e:
        return [f"pruning.pattern: {e}"]
    if nm is None:
        return []
    final = 1 - nm[0] / nm[1]
    blocks = [
        (cfg.methods, cfg.sparsities),
        *((b.methods or cfg.methods, b.sparsities or cfg.sparsities) for b in cfg.extra_units),
    ]
    users = sorted({m for methods, _ in blocks for m in methods if m in PATTERN_METHODS})
    wrong = sorted(
        {
            s
            for methods, sps in blocks
            if any(m in PATTERN_METHODS for m in methods)
            for s in sps
            if abs(s - final) > 1e-9
        }
    )
    if users and wrong:
        return [
            f"pruning.pattern: a {cfg.pruning.pattern} pattern is {final:g} sparse, so {', '.join(users)} can only "
            f"run at sparsity {final:g}; got {wrong} (put other sparsities in another run)"
        ]
    return []


def _analysis(cfg: RunConfig) -> list[str]:
    an, p = cfg.analysis, []
    if not an.cka_kinds:
        p.append("analysis.cka_kinds: give at least one similarity (e.g. linear_cka)")
    p += [
        unknown("analysis.cka_kinds", k, SIMILARITY_KINDS, "similarity")
        for k in an.cka_kinds
        if k not in SIMILARITY_KINDS
    ]
    if an.probe_size < 8:
        p.append(f"analysis.probe_size: must be >= 8, got {an.probe_size}")
    if an.inference and (not an.inference_batch_sizes or min(an.inference_batch_sizes) < 1 or an.inference_repeats < 1):
        p.append("analysis.inference_batch_sizes / inference_repeats: give batch sizes >= 1 and repeats >= 1")
    if an.batch_size < 1 or an.ig_steps < 1 or an.attribution_examples < 0:
        p.append("analysis.batch_size / ig_steps must be >= 1 and attribution_examples >= 0")
    if not an.stream_above_gib > 0:
        p.append(f"analysis.stream_above_gib: must be > 0, got {an.stream_above_gib}")
    return p


def problems(cfg: RunConfig) -> list[str]:
    """Every problem of ``cfg`` as "field: message" lines, in field order; empty when it can run."""
    from kaviz.core.config import GLUE_TASKS
    from kaviz.core.registry import METHODS

    return [*_grid(cfg, METHODS), *_task(cfg, ("demo", "custom", *GLUE_TASKS)), *_optimisation(cfg), *_analysis(cfg)]
