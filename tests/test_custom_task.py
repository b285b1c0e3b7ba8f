"""kaviz.data.custom: local CSV/TSV/JSONL/JSON tasks through load_task, seeded splits, clear errors. Offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kaviz.core.config import TaskConfig
from kaviz.data.tasks import TaskData, TaskError, TaskSpec, load_task


def write(folder: Path, files: dict[str, str | bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = content if isinstance(content, bytes) else content.encode("utf-8")
        (folder / name).write_bytes(data)
    return folder


def check_columns(task: TaskData) -> None:
    want = ["text_a", "text_b", "label"] if task.spec.pair else ["text_a", "label"]
    for split in (task.train, task.dev):
        assert split.column_names == want
        assert split.features["label"].dtype == ("float32" if task.spec.is_regression else "int64")


def custom(path: Path, cols: list[str], seed: int = 42, **kw) -> TaskData:
    return load_task(TaskConfig(name="custom", path=str(path), text_columns=cols, **kw), seed=seed)


def test_custom_csv_file_string_labels_split_90_10(tmp_path):
    rows = ["review,stars,sentiment"] + [f'"nice, really {i}",{i % 5},{"pos" if i % 3 else "neg"}' for i in range(40)]
    write(tmp_path, {"reviews.csv": "\n".join(rows) + "\n"})
    task = custom(tmp_path / "reviews.csv", ["review"], label_column="sentiment")
    check_columns(task)
    assert task.spec == TaskSpec("custom", False, 2, False, ("accuracy", "f1"), "accuracy", ("neg", "pos"))
    assert (len(task.train), len(task.dev)) == (36, 4)
    texts = list(task.train["text_a"]) + list(task.dev["text_a"])
    assert sorted(texts) == sorted(f"nice, really {i}" for i in range(40))
    by_text = dict(zip(texts, list(task.train["label"]) + list(task.dev["label"])))
    assert by_text["nice, really 3"] == 0 and by_text["nice, really 4"] == 1
    again = custom(tmp_path / "reviews.csv", ["review"], label_column="sentiment")
    assert again.dev["text_a"] == task.dev["text_a"]
    other = custom(tmp_path / "reviews.csv", ["review"], seed=7, label_column="sentiment")
    assert other.dev["text_a"] != task.dev["text_a"]
    stars = custom(tmp_path / "reviews.csv", ["review"], label_column="stars")
    assert stars.spec.label_names == ("0", "1", "2", "3", "4") and stars.spec.metrics == ("accuracy",)


def test_custom_jsonl_pair_and_folder(tmp_path):
    lines = [{"q": f"q{i}", "a": f"a{i}", "y": ["no", "maybe", "yes"][i % 3]} for i in range(12)]
    write(tmp_path / "f", {"train.jsonl": "\n".join(json.dumps(r) for r in lines) + "\n\n",
                           "validation.jsonl": json.dumps({"q": "x", "a": "z", "y": "yes"})})  # fmt: skip
    task = custom(tmp_path / "f", ["q", "a"], label_column="y")
    check_columns(task)
    assert task.spec.pair and task.spec.label_names == ("maybe", "no", "yes")
    assert task.train[0] == {"text_a": "q0", "text_b": "a0", "label": 1}
    assert task.dev[:] == {"text_a": ["x"], "text_b": ["z"], "label": [2]}
    single = custom(tmp_path / "f" / "train.jsonl", ["q"], label_column="y")
    assert (len(single.train), len(single.dev)) == (11, 1)


def test_custom_folder_mixed_formats_and_regression(tmp_path):
    write(tmp_path, {"train.csv": "text,score\nok,1.5\nmeh,-2\n", "dev.json": json.dumps([{"text": "hi", "score": 3}])})
    task = custom(tmp_path, ["text"], label_column="score", task_type="regression")
    check_columns(task)
    assert task.spec.is_regression and task.spec.metrics == ("pearson", "spearman") and task.spec.num_labels == 1
    assert task.train["label"] == [1.5, -2.0] and task.dev["label"] == [3.0]


def test_custom_errors(tmp_path):
    with pytest.raises(TaskError, match=r"no dev\.\{csv,tsv,jsonl,json\} or validation\..*found: train\.csv"):
        write(tmp_path / "a", {"train.csv": "text,label\nx,1\n"})
        custom(tmp_path / "a", ["text"])
    with pytest.raises(TaskError, match=r"missing column\(s\) 'body'; available: 'text', 'label'"):
        custom(tmp_path / "a" / "train.csv", ["body"])
    write(tmp_path / "b", {"d.csv": "text,label\nx,1\ny\n", "r.csv": "text,label\nx,good\ny,3.5\n",
                           "nan.jsonl": '{"text": "x", "label": 1}\n{"text": "y", "label": NaN}\n',
                           "one.csv": "text,label\nx,a\ny,a\n", "bad.jsonl": '{"text": "x"}\n{"text": \n',
                           "null.jsonl": '{"text": null, "label": 1}\n{"text": "y", "label": 0}\n',
                           "nokey.jsonl": '{"text": "x", "label": 1}\n{"body": "y", "label": 0}\n',
                           "empty.csv": "", "header.csv": "text,label\n", "latin.csv": b"text,label\nna\xefve,1\n",
                           "data.parquet": "x"})  # fmt: skip
    b = tmp_path / "b"
    cases = {
        "d.csv": r"d\.csv, line 3: expected 2 fields \(text, label\), got 1",
        "r.csv": r"bad label\(s\) in column 'label' \(regression needs numbers\): r\.csv line 2: 'good' is not a finite",
        "nan.jsonl": r"nan\.jsonl line 2: label is missing \(nan\)",
        "one.csv": r"one\.csv: label column 'label' has a single value 'a'; classification needs at least 2 classes",
        "bad.jsonl": r"bad\.jsonl, line 2: not valid JSON",
        "null.jsonl": r"null\.jsonl, line 1: text column 'text' is null",
        "nokey.jsonl": r"nokey\.jsonl, line 2: no text column 'text' in this record \(keys: body, label\)",
        "empty.csv": r"empty\.csv: the file is empty",
        "header.csv": r"header\.csv: no data rows",
        "latin.csv": r"latin\.csv: not UTF-8 text \(byte 0xef on line 2\)",
        "data.parquet": r"unsupported file type '\.parquet'",
    }
    for file, match in cases.items():
        task_type = "regression" if file == "r.csv" else "classification"
        with pytest.raises(TaskError, match=match):
            custom(b / file, ["text"], task_type=task_type)
    with pytest.raises(TaskError, match=r"does not exist"):
        custom(tmp_path / "missing.csv", ["text"])
