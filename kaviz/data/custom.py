"""The custom task: a local CSV/TSV/JSONL/JSON file (split 90/10, seeded) or a folder with train.* and dev.*.

Loaded through :func:`kaviz.data.tasks.load_task` with ``task.name: custom``; ``task.text_columns`` names one or
two text columns, ``task.label_column`` the label, ``task.task_type`` classification or regression.
Bad input raises :class:`~kaviz.data.base.TaskError` naming the file, line, column and value.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from kaviz.core.config import TaskConfig
from kaviz.data.base import (
    INT_RE,
    MISSING,
    TaskData,
    TaskError,
    TaskSpec,
    few,
    make_dataset,
    read_delimited,
    read_text,
)

_CUSTOM_EXTS = (".csv", ".tsv", ".jsonl", ".json")


def _read_table(path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """(columns, [(line, record)]) from a CSV/TSV (header row) or JSONL/JSON file."""
    ext = path.suffix.lower()
    if ext not in _CUSTOM_EXTS:
        raise TaskError(f"{path}: unsupported file type {ext or '(none)'!r}; expected one of {', '.join(_CUSTOM_EXTS)}")
    if ext in (".csv", ".tsv"):
        # CSV uses standard quoting; TSV none (as GLUE: a tab never occurs inside a field)
        rows = read_delimited(
            path, "," if ext == ".csv" else "\t", csv.QUOTE_MINIMAL if ext == ".csv" else csv.QUOTE_NONE
        )
        header = [h.strip() for h in rows[0][1]]
        bad = [(ln, len(r)) for ln, r in rows[1:] if len(r) != len(header)]
        if bad:
            raise TaskError(
                f"{path}, line {bad[0][0]}: expected {len(header)} fields ({', '.join(header)}), got {bad[0][1]}"
                + (f"; {len(bad)} such rows in all" if len(bad) > 1 else "")
            )
        return header, [(ln, dict(zip(header, r))) for ln, r in rows[1:]]
    text = read_text(path)
    if not text.strip():
        raise TaskError(f"{path}: the file is empty (no rows)")
    if text.lstrip().startswith("["):  # a JSON array of objects
        try:
            items = list(enumerate(json.loads(text), start=1))
        except json.JSONDecodeError as e:
            raise TaskError(f"{path}, line {e.lineno}: not valid JSON ({e.msg})") from e
        where = "item"
    else:  # JSON lines
        items = []
        for ln, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    items.append((ln, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise TaskError(f"{path}, line {ln}: not valid JSON ({e.msg})") from e
        where = "line"
    columns: dict[str, None] = {}
    for n, item in items:
        if not isinstance(item, dict):
            raise TaskError(f"{path}, {where} {n}: expected a JSON object, got {type(item).__name__} {item!r:.60}")
        columns.update(dict.fromkeys(item))
    return list(columns), items


def _custom_files(path: Path) -> tuple[Path, Path | None]:
    if path.is_file():
        return path, None
    if not path.is_dir():
        raise TaskError(
            f"custom task: task.path {path} does not exist; expected a CSV/TSV/JSONL file or a folder "
            "with train.* and dev.* (or validation.*)"
        )
    found = {p.name.lower(): p for p in sorted(path.iterdir()) if p.is_file()}
    pick = {}
    for split, stems in (("train", ("train",)), ("dev", ("dev", "validation"))):
        hits = [found[s + e] for s in stems for e in _CUSTOM_EXTS if s + e in found]
        if not hits:
            want = " or ".join(f"{s}.{{csv,tsv,jsonl,json}}" for s in stems)
            raise TaskError(f"custom task: no {want} in {path}; found: {', '.join(sorted(found)) or 'nothing'}")
        pick[split] = hits[0]
    return pick["train"], pick["dev"]


def load_custom(cfg: TaskConfig, seed: int) -> TaskData:
    """The custom task ``cfg`` describes; ``seed`` drives the 90/10 split when ``cfg.path`` is a single file."""
    if not cfg.path:
        raise TaskError("custom task: set task.path to a CSV/TSV/JSONL file or a folder with train.* and dev.*")
    text_cols, label_col = list(cfg.text_columns), cfg.label_column
    if len(text_cols) not in (1, 2):
        raise TaskError(f"custom task: task.text_columns must name one or two columns, got {text_cols}")
    if cfg.task_type not in ("classification", "regression"):
        raise TaskError(f"custom task: task_type {cfg.task_type!r} is not 'classification' or 'regression'")
    regression = cfg.task_type == "regression"
    train_file, dev_file = _custom_files(Path(cfg.path))
    parts = []
    for file in (train_file, dev_file) if dev_file else (train_file,):
        columns, records = _read_table(file)
        missing = [c for c in (*text_cols, label_col) if c not in columns]
        if missing:
            raise TaskError(
                f"{file}: missing column(s) {', '.join(map(repr, missing))}; available: {', '.join(map(repr, columns))}"
            )
        if not records:
            raise TaskError(f"{file}: no data rows (only a header)")
        parts.append((file, records))
    texts = [[[_text(f, ln, rec, c) for ln, rec in recs] for c in text_cols] for f, recs in parts]
    raw = [[(f, ln, rec.get(label_col)) for ln, rec in recs] for f, recs in parts]
    where = str(train_file) if dev_file is None else str(train_file.parent)
    labels, names = _custom_labels(sum(raw, []), label_col, regression, where)
    if dev_file is None:  # one file: a seeded 90/10 split
        n = len(labels)
        if n < 2:
            raise TaskError(f"{train_file}: {n} row(s); a single file needs at least 2 to split into train and dev")
        order = np.random.default_rng(seed).permutation(n)
        n_dev = max(1, round(0.1 * n))
        idx = [sorted(order[n_dev:].tolist()), sorted(order[:n_dev].tolist())]
        splits = [([[col[i] for i in ix] for col in texts[0]], [labels[i] for i in ix]) for ix in idx]
    else:
        n_train = len(raw[0])
        splits = [(texts[0], labels[:n_train]), (texts[1], labels[n_train:])]
    pair = len(text_cols) == 2
    if regression:
        spec = TaskSpec("custom", pair, 1, True, ("pearson", "spearman"), "pearson")
    else:
        metrics = ("accuracy", "f1") if len(names) == 2 else ("accuracy",)
        spec = TaskSpec("custom", pair, len(names), False, metrics, "accuracy", names)
    train, dev = (make_dataset(t[0], t[1] if pair else None, y, regression=regression) for t, y in splits)
    return TaskData(spec, train, dev)


def _text(path: Path, ln: int, rec: dict[str, Any], col: str) -> str:
    if col not in rec:
        raise TaskError(f"{path}, line {ln}: no text column {col!r} in this record (keys: {', '.join(rec)})")
    v = rec[col]
    if v is None or isinstance(v, (dict, list)):
        raise TaskError(f"{path}, line {ln}: text column {col!r} is {json.dumps(v)}; expected a string")
    return v if isinstance(v, str) else str(v)


def _custom_labels(
    raw: list[tuple[Path, int, Any]], col: str, regression: bool, where: str
) -> tuple[list, tuple[str, ...]]:
    """Regression -> floats; classification -> ids in sorted order of the values (numeric if all integers)."""
    errors, values = [], []
    for path, ln, v in raw:
        if isinstance(v, (dict, list)):
            errors.append(f"{path.name} line {ln}: {json.dumps(v)[:40]} is not a single value")
        elif (
            v is None
            or (isinstance(v, float) and math.isnan(v))
            or (isinstance(v, str) and v.strip().lower() in MISSING)
        ):
            errors.append(f"{path.name} line {ln}: label is missing ({v!r})")
        elif regression:
            try:
                x = float(v) if not isinstance(v, bool) else math.nan
            except ValueError:
                x = math.nan
            if not math.isfinite(x):
                errors.append(f"{path.name} line {ln}: {v!r} is not a finite number")
            values.append(x)
        else:
            values.append(v)
    if errors:
        what = "regression needs numbers" if regression else "every row needs a label"
        raise TaskError(f"{where}: {len(errors)} bad label(s) in column {col!r} ({what}): {few(errors)}")
    if regression:
        return values, ()
    ints = [_as_int(v) for v in values]
    keys: list = ints if all(i is not None for i in ints) else [str(v).strip() for v in values]
    classes = sorted(set(keys))
    if len(classes) < 2:
        raise TaskError(
            f"{where}: label column {col!r} has a single value {classes[0]!r}; classification needs at least 2 classes "
            "(or set task_type: regression)"
        )
    index = {c: i for i, c in enumerate(classes)}
    return [index[k] for k in keys], tuple(str(c) for c in classes)


def _as_int(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and INT_RE.fullmatch(v):
        return int(v)
    return None
