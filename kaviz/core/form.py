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
    teacher_epochs: float | None = None,
    student_epochs: float | None = None,
    teacher_lr: float | None = None,
    student_lr: float | None = None,
    base: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> RunConfig:
    """The RunConfig of the app's New-run form, through :meth:`RunConfig.from_dict` like the CLI.

    ``model``: ``"packaged"`` (all-MiniLM-L6-v2), ``"tiny"`` or ``"path"`` (``model_path``: a hub
    id or local folder).  ``text_columns``: a list or comma-separated text.  ``teacher_steps`` /
    ``student_steps``, ``train_subsample``: None or 0 for the config defaults (epochs, all
    examples); ``teacher_epochs`` / ``student_epochs`` and the learning rates: None keeps the
    base's.  ``base``: the config the form started from (a preset or a stored run, as a dict):
    every setting the form has no field for is kept from it.  ``extra`` is merged into the top
    level last (``{"training": {...}}`` sections key by key).  Raises ConfigError listing every problem.
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
    task_cfg: dict[str, Any] = {"name": task, "max_length": int(max_length), "path": task_path.strip() or None}
    if task == "custom":
        task_cfg.update(
            text_columns=[c.strip() for c in cols if c.strip()],
            label_column=label_column.strip() or "label",
            task_type=task_type,
        )
    else:
        task_cfg["text_columns"] = []
    task_cfg["max_train_examples"] = int(train_subsample) if train_subsample else None
    training: dict[str, Any] = {
        "max_steps": int(teacher_steps) if teacher_steps else None,
        "batch_size": int(batch_size),
    }
    pruning: dict[str, Any] = {"max_steps": int(student_steps) if student_steps else None}
    for section, key, value in (
        (training, "epochs", teacher_epochs),
        (training, "learning_rate", teacher_lr),
        (pruning, "epochs", student_epochs),
        (pruning, "learning_rate", student_lr),
    ):
        if value is not None:
            section[key] = float(value)
    data: dict[str, Any] = {
        "name": name,
        "model": {"name_or_path": source},
        "task": task_cfg,
        "training": training,
        "pruning": pruning,
        "analysis": {"enabled": bool(analyze)},
        "sparsities": grid,
        "methods": list(methods),
        "seed": int(seed),
    }
    if base:
        data = _merge(base, data)
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


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``top``'s values over it, sections (dicts) merged key by key."""
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def fields_from_config(cfg: RunConfig) -> dict[str, Any]:
    """The New-run form's fields for ``cfg`` (a preset or a stored run): what :func:`build_config`
    takes, so that ``build_config(**fields_from_config(cfg), base=cfg.to_dict())`` is ``cfg``."""
    source = cfg.model.name_or_path
    model = {PACKAGED_MODEL: "packaged", TINY_MODEL: "tiny"}.get(source, "path")
    t, tr, pr = cfg.task, cfg.training, cfg.pruning
    return {
        "name": cfg.name,
        "model": model,
        "model_path": source if model == "path" else "",
        "task": t.name,
        "task_path": str(t.path or ""),
        "text_columns": ", ".join(t.text_columns),
        "label_column": t.label_column,
        "task_type": t.task_type,
        "methods": list(cfg.methods),
        "sparsities": ", ".join(f"{x:g}" for x in cfg.sparsities),
        "teacher_steps": int(tr.max_steps or 0),
        "student_steps": int(pr.max_steps or 0),
        "teacher_epochs": float(tr.epochs),
        "student_epochs": float(pr.epochs),
        "teacher_lr": float(tr.learning_rate),
        "student_lr": float(pr.learning_rate),
        "batch_size": int(tr.batch_size),
        "max_length": int(t.max_length),
        "train_subsample": int(t.max_train_examples or 0),
        "seed": int(cfg.seed),
        "analyze": bool(cfg.analysis.enabled),
    }
