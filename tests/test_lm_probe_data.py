"""The decoder probes' files: completion JSONL and LM corpus, refused with the line number."""

from __future__ import annotations

import pytest

from kaviz.core.config import RunConfig
from kaviz.data.lm_probe_data import ProbeFileError, read_completion_file, read_corpus


@pytest.mark.parametrize(
    "content, words",
    [
        (b'{"prompt": "a", "answer": "b"}\n{"prompt": "c"}\n', "line 2: missing 'answer'"),
        (b'{"prompt": "a", "answer": "  "}\n', "line 1: the answer is empty"),
        (b'{"prompt": "a", "answer": "b"}\n\n\xff\xfe\n', "line 3: not UTF-8"),
        (b"[1, 2]\n", "line 1: expected a JSON object"),
        (b"{nope\n", "line 1: not a JSON object"),
        (b"\n\n", "no prompt/answer pairs"),
    ],
)
def test_bad_probe_files_are_refused_with_the_line(tmp_path, content, words):
    path = tmp_path / "probe.jsonl"
    path.write_bytes(content)
    with pytest.raises(ProbeFileError, match=words):
        read_completion_file(path)


def test_a_good_probe_file_reads(tmp_path):
    path = tmp_path / "probe.jsonl"
    path.write_text('{"prompt": "the capital of france is", "answer": " paris"}\n\n{"prompt": "x", "answer": "y"}\n')
    assert read_completion_file(path) == [
        {"prompt": "the capital of france is", "answer": " paris"},
        {"prompt": "x", "answer": "y"},
    ]


def test_a_corpus_reads_its_non_empty_lines_up_to_the_limit(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("first passage\n\n  second passage  \nthird\n", encoding="utf-8")
    assert read_corpus(path) == ["first passage", "second passage", "third"]
    assert read_corpus(path, limit=2) == ["first passage", "second passage"]


@pytest.mark.parametrize(
    "content, words", [(b"fine\nstill fine\n\xff bad\n", "line 3: not UTF-8"), (b"\n \n", "no text")]
)
def test_bad_corpora_are_refused_with_the_line(tmp_path, content, words):
    path = tmp_path / "corpus.txt"
    path.write_bytes(content)
    with pytest.raises(ProbeFileError, match=words):
        read_corpus(path)
    with pytest.raises(ProbeFileError, match="cannot read"):
        read_corpus(tmp_path / "missing.txt")


def test_a_bad_probe_file_stops_a_run_before_anything_trains(tmp_path):
    from kaviz.stages.pipeline import check_inputs

    path = tmp_path / "facts.jsonl"
    path.write_bytes(b'{"prompt": "a", "answer": "b"}\n{"prompt": "c", "answer": ""}\n')
    cfg = RunConfig.from_dict({"name": "x", "model": {"name_or_path": "tiny:gpt2"}, "task": {"name": "demo"},
                               "analysis": {"completion_file": str(path)}})  # fmt: skip
    with pytest.raises(ProbeFileError, match="line 2: the answer is empty"):
        check_inputs(cfg, load_data=False)
    cfg = RunConfig.from_dict({"name": "x", "model": {"name_or_path": "tiny:t5"}, "task": {"name": "demo"}})
    with pytest.raises(ValueError, match="no tiny config for 't5'"):
        check_inputs(cfg, load_data=False)
