"""Tasks as ``datasets.Dataset`` splits: GLUE (hub or local TSV), custom CSV/TSV/JSONL, the built-in demo.

Every task comes out the same way, as a :class:`TaskData` whose splits have the columns ``text_a``,
``text_b`` (sentence-pair tasks only) and ``label`` (int64 class id, or float32 for regression).
:func:`encode` tokenises once, without padding; :func:`make_collator` pads each batch to its
longest example.  Bad input raises :class:`TaskError` naming the file, line, column and value.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import math
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from kaviz import demo_task as _demo
from kaviz.config import GLUE_TASKS, TaskConfig


class TaskError(ValueError):
    """Data that cannot make a task; the message names the file, column and value, and what was expected."""


@dataclass(frozen=True)
class TaskSpec:
    """What a task is: pair or single sentence, label space, and the metrics reported (main first)."""

    name: str
    pair: bool
    num_labels: int
    is_regression: bool
    metrics: tuple[str, ...]
    main_metric: str
    label_names: tuple[str, ...] | None = None


@dataclass
class TaskData:
    """A task's spec with its train and dev splits (columns ``text_a``, [``text_b``], ``label``)."""

    spec: TaskSpec
    train: datasets.Dataset
    dev: datasets.Dataset


def _spec(name: str, pair: bool, metrics: tuple[str, ...], label_names: tuple[str, ...] | None) -> TaskSpec:
    regression = label_names is None
    n = 1 if regression else len(label_names)  # type: ignore[arg-type]
    return TaskSpec(name, pair, n, regression, metrics, metrics[0], label_names)


_NLI2 = ("entailment", "not_entailment")
GLUE_SPECS: dict[str, TaskSpec] = {
    "sst2": _spec("sst2", False, ("accuracy",), ("negative", "positive")),
    "cola": _spec("cola", False, ("matthews",), ("unacceptable", "acceptable")),
    "mrpc": _spec("mrpc", True, ("f1", "accuracy"), ("not_equivalent", "equivalent")),
    "qqp": _spec("qqp", True, ("f1", "accuracy"), ("not_duplicate", "duplicate")),
    "stsb": _spec("stsb", True, ("pearson", "spearman"), None),
    "rte": _spec("rte", True, ("accuracy",), _NLI2),
    "qnli": _spec("qnli", True, ("accuracy",), _NLI2),
    "mnli": _spec("mnli", True, ("accuracy",), ("entailment", "neutral", "contradiction")),
}
DEMO_SPEC = _spec("demo", False, ("accuracy",), _demo.LABEL_NAMES)


@dataclass(frozen=True)
class _GlueFormat:
    folder: str  # folder name in the GLUE distribution
    dev_file: str
    columns: tuple[str, str | None, str]  # text_a, text_b, label: names in the header
    hub_columns: tuple[str, str | None]
    hub_dev: str = "validation"
    string_labels: bool = False  # labels written as names ("entailment") rather than ids
    drop_ragged: bool = False  # the official file has a few broken rows that the hub loader also skips
    fields: tuple[str, ...] = ()  # the column names when the file has no header row


_GLUE_FORMATS: dict[str, _GlueFormat] = {
    "sst2": _GlueFormat("SST-2", "dev.tsv", ("sentence", None, "label"), ("sentence", None)),
    "cola": _GlueFormat(
        "CoLA",
        "dev.tsv",
        ("sentence", None, "label"),
        ("sentence", None),
        fields=("source", "label", "star", "sentence"),
    ),
    "mrpc": _GlueFormat("MRPC", "dev.tsv", ("#1 String", "#2 String", "Quality"), ("sentence1", "sentence2")),
    "qqp": _GlueFormat(
        "QQP", "dev.tsv", ("question1", "question2", "is_duplicate"), ("question1", "question2"), drop_ragged=True
    ),
    "stsb": _GlueFormat("STS-B", "dev.tsv", ("sentence1", "sentence2", "score"), ("sentence1", "sentence2")),
    "rte": _GlueFormat(
        "RTE", "dev.tsv", ("sentence1", "sentence2", "label"), ("sentence1", "sentence2"), string_labels=True
    ),
    "qnli": _GlueFormat(
        "QNLI", "dev.tsv", ("question", "sentence", "label"), ("question", "sentence"), string_labels=True
    ),
    "mnli": _GlueFormat(
        "MNLI",
        "dev_matched.tsv",
        ("sentence1", "sentence2", "gold_label"),
        ("premise", "hypothesis"),
        hub_dev="validation_matched",
        string_labels=True,
    ),
}
_STSB_RANGE = (0.0, 5.0)
_MISSING = frozenset({"", "nan", "na", "n/a", "null", "none"})
_INT_RE = re.compile(r"\s*[-+]?\d+\s*")


def canonical_task_name(name: str) -> str:
    """'SST-2', 'sst2', 'STS-B' -> 'sst2', 'stsb'; 'demo' and 'custom' as they are; else TaskError."""
    key = name.strip().lower().replace("-", "").replace("_", "")
    if key in GLUE_TASKS or key in ("demo", "custom"):
        return key
    known = ("demo", "custom", *GLUE_TASKS)
    hint = difflib.get_close_matches(key, known, n=1)
    raise TaskError(
        f"unknown task {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "") + f"; known: {', '.join(known)}"
    )


# ----- public entry points --------------------------------------------------------------------------------


def load_task(cfg: TaskConfig, seed: int = 42) -> TaskData:
    """Load the task ``cfg`` describes, then subsample each split to ``cfg.max_*_examples`` (seeded).

    GLUE with ``cfg.path`` unset downloads ``nyu-mll/glue`` from the hub; with ``cfg.path`` set it
    reads the original GLUE TSV files (``train.tsv`` and ``dev.tsv``; ``dev_matched.tsv`` for MNLI)
    from that folder or from its subfolder named after the task ("SST-2" or "sst2").
    """
    name = canonical_task_name(cfg.name)
    if name == "demo":
        task = demo_task(cfg.demo_train_size, cfg.demo_dev_size, seed)
    elif name == "custom":
        task = _load_custom(cfg, seed)
    elif cfg.path:
        task = _load_glue_local(name, Path(cfg.path))
    else:
        task = _load_glue_hub(name)
    train = _subsample(task.train, cfg.max_train_examples, seed, "max_train_examples")
    dev = _subsample(task.dev, cfg.max_eval_examples, seed, "max_eval_examples")
    return TaskData(task.spec, train, dev)


def demo_task(n_train: int, n_dev: int, seed: int = 42) -> TaskData:
    """The built-in sentiment task (see :mod:`kaviz.demo_task`): balanced, deterministic, disjoint splits."""
    try:
        train, dev = _demo.generate(n_train, n_dev, seed)
    except ValueError as e:
        raise TaskError(str(e)) from e
    return TaskData(
        DEMO_SPEC,
        make_dataset([e.text for e in train], None, [e.label for e in train], regression=False),
        make_dataset([e.text for e in dev], None, [e.label for e in dev], regression=False),
    )


def encode(task: TaskData, tokenizer: Any, max_length: int) -> dict[str, datasets.Dataset]:
    """Tokenise both splits once (truncated to ``max_length``, unpadded) -> {"train", "dev"} in torch format.

    Columns: the tokenizer's model inputs (``input_ids``, ``attention_mask`` and ``token_type_ids``
    when it makes them), each a 1-D tensor of the example's length, and ``labels`` (int64 or float32).
    """
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length must be an integer >= 2, got {max_length!r}")
    pair = task.spec.pair
    keep = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in tokenizer.model_input_names]

    def tokenise(batch: dict[str, list]) -> dict[str, list]:
        enc = tokenizer(batch["text_a"], batch["text_b"] if pair else None, truncation=True, max_length=max_length)
        return {k: enc[k] for k in keep if k in enc}

    out = {}
    for split, ds in (("train", task.train), ("dev", task.dev)):
        text_cols = [c for c in ds.column_names if c != "label"]
        enc = ds.map(tokenise, batched=True, remove_columns=text_cols, desc=f"tokenising {split}")
        enc = enc.rename_column("label", "labels")
        enc.set_format("torch")
        out[split] = enc
    return out


def make_collator(tokenizer: Any) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
    """A collator that pads each batch to its longest example (``DataCollatorWithPadding``)."""
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer, padding="longest")


# ----- building datasets ----------------------------------------------------------------------------------


def make_dataset(
    text_a: Sequence[str], text_b: Sequence[str] | None, labels: Sequence[float], *, regression: bool
) -> datasets.Dataset:
    """Columns ``text_a``, [``text_b``], ``label`` with the standard dtypes (int64, or float32 for regression)."""
    cols: dict[str, Any] = {"text_a": list(text_a)}
    feats: dict[str, Any] = {"text_a": datasets.Value("string")}
    if text_b is not None:
        cols["text_b"], feats["text_b"] = list(text_b), datasets.Value("string")
    cols["label"] = list(labels)
    feats["label"] = datasets.Value("float32" if regression else "int64")
    return datasets.Dataset.from_dict(cols, features=datasets.Features(feats))


def _subsample(ds: datasets.Dataset, n: int | None, seed: int, what: str) -> datasets.Dataset:
    if n is None:
        return ds
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise TaskError(f"task.{what} must be a positive integer or unset, got {n!r}")
    if len(ds) <= n:
        return ds
    return ds.shuffle(seed=seed).select(range(n))


def read_text(path: Path) -> str:
    """The file as text (UTF-8, BOM dropped); TaskError naming the file and line when it is not UTF-8."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TaskError(f"cannot read {path}: {e.strerror or e}") from e
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise TaskError(
            f"{path}: not UTF-8 text (byte {data[e.start]:#04x} on line {line}); re-save the file as UTF-8"
        ) from e


def read_delimited(path: Path, delimiter: str, quoting: int) -> list[tuple[int, list[str]]]:
    """(line number, fields) for each non-blank row; TaskError when the file has no rows at all."""
    reader = csv.reader(io.StringIO(read_text(path), newline=""), delimiter=delimiter, quoting=quoting)
    rows: list[tuple[int, list[str]]] = []
    try:
        for row in reader:
            if row and any(f.strip() for f in row):
                rows.append((reader.line_num, row))
    except csv.Error as e:
        raise TaskError(f"{path}, line {reader.line_num}: cannot parse: {e}") from e
    if not rows:
        raise TaskError(f"{path}: the file is empty (no rows)")
    return rows


def _few(items: list[str], k: int = 5) -> str:
    more = f" (and {len(items) - k} more)" if len(items) > k else ""
    return "; ".join(items[:k]) + more


# ----- GLUE -----------------------------------------------------------------------------------------------


def _glue_dir(name: str, path: Path) -> Path:
    fmt = _GLUE_FORMATS[name]
    need = ("train.tsv", fmt.dev_file)
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise TaskError(f"{name}: task.path {path} {what}; expected a GLUE folder with {need[0]} and {need[1]}")
    candidates = [path] + [path / sub for sub in dict.fromkeys((fmt.folder, name, fmt.folder.lower()))]
    for cand in candidates:
        if all((cand / f).is_file() for f in need):
            return cand
    for cand in candidates:
        if cand.is_dir() and any((cand / f).is_file() for f in need):
            missing = [f for f in need if not (cand / f).is_file()]
            raise TaskError(f"{name}: {cand} has no {' or '.join(missing)} (expected {need[0]} and {need[1]})")
    found = sorted(p.name for p in path.iterdir())[:20]
    raise TaskError(
        f"{name}: no {need[0]} and {need[1]} in {path} or its subfolder {fmt.folder}/ or {name}/; "
        f"found: {', '.join(found) or 'nothing'}"
    )


def _load_glue_local(name: str, path: Path) -> TaskData:
    folder = _glue_dir(name, path)
    fmt = _GLUE_FORMATS[name]
    spec = GLUE_SPECS[name]
    train = _read_glue_file(name, folder / "train.tsv")
    dev = _read_glue_file(name, folder / fmt.dev_file)
    return TaskData(spec, train, dev)


def _read_glue_file(name: str, path: Path) -> datasets.Dataset:
    fmt, spec = _GLUE_FORMATS[name], GLUE_SPECS[name]
    rows = read_delimited(path, "\t", csv.QUOTE_NONE)
    if fmt.fields:  # no header row (CoLA); tolerate one that some copies add
        header, names = None, list(fmt.fields)
        if [f.strip() for f in rows[0][1]] == names:
            rows = rows[1:]
    else:
        header = names = [h.strip() for h in rows[0][1]]
        rows = rows[1:]
    missing = [c for c in fmt.columns if c is not None and c not in names]
    if missing:
        raise TaskError(
            f"{path}: missing column(s) {', '.join(map(repr, missing))} for GLUE task {name}; "
            f"available: {', '.join(map(repr, names))}"
        )
    a, b, lab = fmt.columns
    width, ia, ib, il = len(names), names.index(a), (names.index(b) if b else None), names.index(lab)
    if not rows:
        raise TaskError(f"{path}: no data rows" + (" (only a header)" if header else ""))
    bad = [(ln, len(r)) for ln, r in rows if len(r) != width]
    if bad and not fmt.drop_ragged:
        ln, got = bad[0]
        raise TaskError(
            f"{path}, line {ln}: expected {width} tab-separated fields ({', '.join(names)}), got {got}"
            + (f"; {len(bad)} such rows in all" if len(bad) > 1 else "")
        )
    if bad:
        warnings.warn(f"{path}: skipped {len(bad)} malformed row(s) (e.g. line {bad[0][0]})", stacklevel=3)
        bad_lines = {ln for ln, _ in bad}
        rows = [(ln, r) for ln, r in rows if ln not in bad_lines]
        if not rows:
            raise TaskError(f"{path}: no well-formed data rows")
    col = names[il]
    labels = [_glue_label(spec, fmt, path, ln, col, r[il]) for ln, r in rows]
    errors = [msg for msg in labels if isinstance(msg, str)]
    if errors:
        raise TaskError(f"{path}: {len(errors)} bad label(s) in column {col!r}: {_few(errors)}")
    text_b = [r[ib] for _, r in rows] if ib is not None else None
    return make_dataset([r[ia] for _, r in rows], text_b, labels, regression=spec.is_regression)  # type: ignore[arg-type]


def _glue_label(spec: TaskSpec, fmt: _GlueFormat, path: Path, ln: int, col: str, raw: str) -> float | int | str:
    """The label value, or an error string (collected so one message can list several)."""
    v = raw.strip()
    if v.lower() in _MISSING:
        return f"line {ln}: label is missing ({raw!r})"
    if spec.is_regression:
        try:
            x = float(v)
        except ValueError:
            return f"line {ln}: {raw!r} is not a number"
        lo, hi = _STSB_RANGE
        if not lo <= x <= hi:  # also rejects NaN
            return f"line {ln}: {raw!r} is outside [{lo:g}, {hi:g}]"
        return x
    names = spec.label_names or ()
    if fmt.string_labels:
        if v not in names:
            return f"line {ln}: {raw!r} is not one of {', '.join(names)}"
        return names.index(v)
    if not _INT_RE.fullmatch(v) or not 0 <= int(v) < spec.num_labels:
        return f"line {ln}: {raw!r} is not a class id in 0..{spec.num_labels - 1}"
    return int(v)


def _load_glue_hub(name: str) -> TaskData:  # pragma: no cover - needs the network; tested with a fake loader
    fmt, spec = _GLUE_FORMATS[name], GLUE_SPECS[name]
    try:
        raw = datasets.load_dataset("nyu-mll/glue", name)
    except Exception as e:
        raise TaskError(
            f"could not load GLUE task {name!r} from the Hugging Face hub (nyu-mll/glue): {type(e).__name__}: {e}. "
            f"Offline? Set task.path to a local GLUE folder with train.tsv and {fmt.dev_file}."
        ) from e
    return TaskData(spec, _from_hub(raw["train"], name, "train"), _from_hub(raw[fmt.hub_dev], name, fmt.hub_dev))


def _from_hub(split: datasets.Dataset, name: str, split_name: str) -> datasets.Dataset:
    fmt, spec = _GLUE_FORMATS[name], GLUE_SPECS[name]
    a, b = fmt.hub_columns
    rename = {a: "text_a", **({b: "text_b"} if b else {}), "label": "label"}
    missing = [c for c in rename if c not in split.column_names]
    if missing:
        raise TaskError(f"hub GLUE {name}/{split_name}: missing column(s) {missing}; available: {split.column_names}")
    labels = np.asarray(split["label"], dtype=np.float64)
    if spec.is_regression:
        bad = ~np.isfinite(labels)
    else:
        bad = (labels < 0) | (labels >= spec.num_labels) | (labels != np.round(labels))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise TaskError(
            f"hub GLUE {name}/{split_name}: {int(bad.sum())} label(s) out of range, e.g. row {i}: {labels[i]!r}"
        )
    return make_dataset(
        split[a],
        split[b] if b else None,
        labels.tolist() if spec.is_regression else labels.astype(np.int64).tolist(),
        regression=spec.is_regression,
    )


# ----- custom ---------------------------------------------------------------------------------------------

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


def _load_custom(cfg: TaskConfig, seed: int) -> TaskData:
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
            or (isinstance(v, str) and v.strip().lower() in _MISSING)
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
        raise TaskError(f"{where}: {len(errors)} bad label(s) in column {col!r} ({what}): {_few(errors)}")
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
    if isinstance(v, str) and _INT_RE.fullmatch(v):
        return int(v)
    return None


# ----- metrics --------------------------------------------------------------------------------------------


def _accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(pred == y))


def _f1(pred: np.ndarray, y: np.ndarray) -> float:
    tp = float(np.sum((pred == 1) & (y == 1)))
    fp = float(np.sum((pred == 1) & (y != 1)))
    fn = float(np.sum((pred != 1) & (y == 1)))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def _matthews(pred: np.ndarray, y: np.ndarray) -> float:
    if np.unique(pred).size < 2 or np.unique(y).size < 2:
        return 0.0
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(y, pred))


def _correlation(kind: str) -> Callable[[np.ndarray, np.ndarray], float]:
    def corr(pred: np.ndarray, y: np.ndarray) -> float:
        if not (np.all(np.isfinite(pred)) and np.all(np.isfinite(y))):
            return math.nan
        if len(pred) < 2 or np.ptp(pred) == 0 or np.ptp(y) == 0:
            return 0.0
        from scipy import stats

        res = stats.pearsonr(pred, y) if kind == "pearson" else stats.spearmanr(pred, y)
        return float(res.statistic)

    corr.__name__ = f"_{kind}"
    return corr


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": _accuracy,
    "f1": _f1,
    "matthews": _matthews,
    "pearson": _correlation("pearson"),
    "spearman": _correlation("spearman"),
}


def compute_metrics(spec: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Every metric in ``spec.metrics``, as floats in 0..1 (correlations in -1..1).

    ``predictions``: logits (n, num_labels) or class ids (n,) for classification; scores (n,) or
    (n, 1) for regression.  ``labels``: (n,).  f1 is binary with class 1 as positive; matthews,
    pearson and spearman are 0.0 for a constant prediction; correlations are NaN if any score is.
    """
    pred = np.asarray(predictions)
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if spec.is_regression:
        if pred.ndim == 2 and pred.shape[1] == 1:
            pred = pred[:, 0]
        if pred.ndim != 1:
            raise ValueError(f"regression predictions must have shape (n,) or (n, 1), got {pred.shape}")
        pred, y = pred.astype(np.float64), y.astype(np.float64)
    elif pred.ndim == 2:
        if pred.shape[1] != spec.num_labels:
            raise ValueError(f"logits have {pred.shape[1]} columns but task {spec.name!r} has {spec.num_labels} labels")
        pred = pred.argmax(axis=-1)
    elif pred.ndim != 1:
        raise ValueError(f"predictions must be logits (n, {spec.num_labels}) or class ids (n,), got {pred.shape}")
    if y.ndim != 1 or len(pred) != len(y):
        raise ValueError(f"predictions {pred.shape} and labels {y.shape} do not match: expected (n, ...) and (n,)")
    if len(y) == 0:
        raise ValueError("cannot compute metrics on zero examples")
    unknown = [m for m in spec.metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {', '.join(METRICS)}")
    return {m: METRICS[m](pred, y) for m in spec.metrics}
