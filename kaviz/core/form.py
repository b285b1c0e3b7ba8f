"""The New-run form's fields -> the same typed :class:`~kaviz.core.config.RunConfig` the CLI builds,
through the same checks (``RunConfig.from_dict``), every problem listed at once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kaviz.core.config import PACKAGED_MODEL, TINY_MODEL, ConfigError, RunConfig
from kaviz.core.names import check_name


def parse_floats(text: str, what: str = "sparsities") -> list[float]:
    """``"0.5, 0.8 0.9"`` -> ``[0.5, 0.8, 0.9]``; ValueError naming the first bad item."""
    items = [t for t in text.replace(",", " ").replace(";", " ").split() if t]
    out = []
    for t in items:
        try:
            out.append(float(t.rstrip("%")) / (100 if t.endswith("%") else 1))
        except ValueError:
            raise ValueError(f"{what}: {t!r} is not a number (write e.g. 0.5, 0.8, 0.9)") from None
    return out


def build_config(
    *,
    name: str,
    model: str = "packaged",
    model_path: str = "",
    task: str = "demo",
    task_path: str = "",
    text_columns: str | Sequence[str] = "",
    label_column: str = "label",
    task_type: str = "classification",
    methods: Sequence[str] = (),
    sparsities: str = "0.5, 0.8, 0.9",
    teacher_steps: int | None = None,
    student_steps: int | None = None,
    batch_size: int = 32,
    max_length: int = 128,
    train_subsample: int | None = None,
    seed: int = 42,
    analyze: bool = True,
    extra: dict[str, Any] | None = None,
) -> RunConfig:
    """The RunConfig of the app's New-run form, through :meth:`RunConfig.from_dict` like the CLI.

    ``model``: ``"packaged"`` (all-MiniLM-L6-v2), ``"tiny"`` or ``"path"`` (``model_path``: a hub
    id or local folder).  ``text_columns``: a list or comma-separated text.  ``teacher_steps`` /
    ``student_steps``, ``train_subsample``: None or 0 for the config defaults (epochs, all
    examples).  ``extra`` is merged into the top level (e.g. ``{"training": {...}}`` sections are
    updated key by key).  Raises ConfigError listing every problem.
    """
    problems: list[str] = []
    try:
        check_name(name)
    except ValueError as e:
        problems.append(f"name: {e}")
    try:
        grid = parse_floats(sparsities)
    except ValueError as e:
        problems.append(str(e))
        grid = [0.5]  # a placeholder, so the other fields are still checked
    if model == "path" and not model_path.strip():
        problems.append("model: give a hub id or a local folder")
    source = {"packaged": PACKAGED_MODEL, "tiny": TINY_MODEL}.get(model, model_path.strip())
    cols = text_columns.split(",") if isinstance(text_columns, str) else list(text_columns)
    task_cfg: dict[str, Any] = {"name": task, "max_length": int(max_length)}
    if task_path.strip():
        task_cfg["path"] = task_path.strip()
    if task == "custom":
        task_cfg.update(
            text_columns=[c.strip() for c in cols if c.strip()],
            label_column=label_column.strip() or "label",
            task_type=task_type,
        )
    if train_subsample:
        task_cfg["max_train_examples"] = int(train_subsample)
    data: dict[str, Any] = {
        "name": name,
        "model": {"name_or_path": source},
        "task": task_cfg,
        "training": {"max_steps": int(teacher_steps) if teacher_steps else None, "batch_size": int(batch_size)},
        "pruning": {"max_steps": int(student_steps) if student_steps else None},
        "analysis": {"enabled": bool(analyze)},
        "sparsities": grid,
        "methods": list(methods),
        "seed": int(seed),
    }
    for key, value in (extra or {}).items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    try:
        cfg = RunConfig.from_dict(data)
    except ConfigError as e:
        problems += [line for (field_, _), line in zip(e.problems, e.lines()) if field_ != "name"]
        if not problems:  # only the name, already reported
            problems += e.lines()
    if problems:
        raise ConfigError(problems=[("", p) for p in problems])
    return cfg
