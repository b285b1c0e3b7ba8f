"""Tasks as ``datasets.Dataset`` splits: GLUE (hub or local TSV), custom CSV/TSV/JSONL, the built-in demo.

Every task comes out the same way, as a :class:`TaskData` whose splits have the columns ``text_a``,
``text_b`` (sentence-pair tasks only) and ``label`` (int64 class id, or float32 for regression).
:func:`encode` tokenises once, without padding; :func:`make_collator` pads each batch to its
longest example.  Bad input raises :class:`TaskError` naming the file, line, column and value.

The custom loader lives in :mod:`kaviz.data.custom`; the task types, :func:`make_dataset`, the text
readers and :func:`compute_metrics` in :mod:`kaviz.data.base`, re-exported here.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from kaviz.core.config import GLUE_TASKS, TaskConfig
from kaviz.core.validation import canonical_task, unknown
from kaviz.data import demo as _demo
from kaviz.data.base import (
    INT_RE,
    METRICS,
    MISSING,
    TaskData,
    TaskError,
    TaskSpec,
    compute_metrics,
    few,
    make_dataset,
    read_delimited,
    read_text,
)
from kaviz.data.custom import load_custom

__all__ = [
    "DEMO_SPEC",
    "GLUE_SPECS",
    "METRICS",
    "TaskData",
    "TaskError",
    "TaskSpec",
    "compute_metrics",
    "demo_task",
    "encode",
    "load_task",
    "make_collator",
    "make_dataset",
    "read_delimited",
    "read_text",
]


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


# ----- public entry points --------------------------------------------------------------------------------


def load_task(cfg: TaskConfig, seed: int = 42) -> TaskData:
    """Load the task ``cfg`` describes, then subsample each split to ``cfg.max_*_examples`` (seeded).

    GLUE with ``cfg.path`` unset downloads ``nyu-mll/glue`` from the hub; with ``cfg.path`` set it
    reads the original GLUE TSV files (``train.tsv`` and ``dev.tsv``; ``dev_matched.tsv`` for MNLI)
    from that folder or from its subfolder named after the task ("SST-2" or "sst2").
    """
    name = canonical_task(cfg.name)  # RunConfig has normalised it already; a bare TaskConfig may not have
    if name is None:
        raise TaskError(unknown("task.name", cfg.name, ("demo", "custom", *GLUE_TASKS), "task"))
    if name == "demo":
        task = demo_task(cfg.demo_train_size, cfg.demo_dev_size, seed, grammar=cfg.demo_grammar)
    elif name == "custom":
        task = load_custom(cfg, seed)
    elif cfg.path:
        task = _load_glue_local(name, Path(cfg.path))
    else:
        task = _load_glue_hub(name)
    train = _subsample(task.train, cfg.max_train_examples, seed, "max_train_examples")
    dev = _subsample(task.dev, cfg.max_eval_examples, seed, "max_eval_examples")
    return TaskData(task.spec, train, dev)


def demo_task(n_train: int, n_dev: int, seed: int = 42, grammar: str = "full") -> TaskData:
    """The built-in sentiment task (see :mod:`kaviz.data.demo`): balanced, deterministic, disjoint splits."""
    try:
        train, dev = _demo.generate(n_train, n_dev, seed, grammar=grammar)
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


def _subsample(ds: datasets.Dataset, n: int | None, seed: int, what: str) -> datasets.Dataset:
    if n is None:
        return ds
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise TaskError(f"task.{what} must be a positive integer or unset, got {n!r}")
    if len(ds) <= n:
        return ds
    return ds.shuffle(seed=seed).select(range(n))


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
        raise TaskError(f"{path}: {len(errors)} bad label(s) in column {col!r}: {few(errors)}")
    text_b = [r[ib] for _, r in rows] if ib is not None else None
    return make_dataset([r[ia] for _, r in rows], text_b, labels, regression=spec.is_regression)  # type: ignore[arg-type]


def _glue_label(spec: TaskSpec, fmt: _GlueFormat, path: Path, ln: int, col: str, raw: str) -> float | int | str:
    """The label value, or an error string (collected so one message can list several)."""
    v = raw.strip()
    if v.lower() in MISSING:
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
    if not INT_RE.fullmatch(v) or not 0 <= int(v) < spec.num_labels:
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
