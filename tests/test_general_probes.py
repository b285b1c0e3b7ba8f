"""Which general-knowledge probe a unit gets (kaviz.analysis.general_probes), and its rows."""

from __future__ import annotations

import json

import pytest
import torch

from kaviz.analysis.general_probes import GeneralProbes
from kaviz.core.config import AnalysisConfig, ModelConfig
from kaviz.data.base import TaskError
from kaviz.measure.lm_probes import LMHead
from kaviz.train.models import load_causal_lm, load_pretrained

TEXTS = ["the film was good", "a dull and slow plot", "it is fine"]


def probes(name: str, tok, **analysis) -> GeneralProbes:
    return GeneralProbes(ModelConfig(name_or_path=name), AnalysisConfig(**analysis), tok, TEXTS, seed=3)


def test_a_decoder_gets_the_lm_loss_of_the_pretrained_head(tok, tmp_path):
    facts = tmp_path / "facts.jsonl"
    facts.write_text(json.dumps({"prompt": "one two", "answer": " three"}) + "\n")
    model = load_pretrained(ModelConfig(name_or_path="tiny:gpt2"), 2, seed=0).eval()
    rows = probes("tiny:gpt2", tok, completion_file=str(facts)).rows(model)
    got = {r["metric"]: r["value"] for r in rows}
    assert set(got) == {"general_lm_loss", "general_completion_exact", "general_completion_logprob"}
    head = LMHead(load_causal_lm(ModelConfig(name_or_path="tiny:gpt2"), tok, seed=3))  # the same seeded head
    assert got["general_lm_loss"] == pytest.approx(head.loss(model, tok, TEXTS)["nll"], rel=1e-6)
    table = head.completion(model, tok, [{"prompt": "one two", "answer": " three"}])
    assert got["general_completion_logprob"] == pytest.approx(float(table.answer_logprob[0]), rel=1e-6)
    assert all(r["reference"] == "self" for r in rows)


def test_a_corpus_replaces_the_probe_texts(tok, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("some other text\nand more of it\n")
    model = load_pretrained(ModelConfig(name_or_path="tiny:llama"), 2, seed=0).eval()
    own = probes("tiny:llama", tok).rows(model)[0]["value"]
    other = probes("tiny:llama", tok, lm_corpus=str(corpus)).rows(model)[0]["value"]
    head = LMHead(load_causal_lm(ModelConfig(name_or_path="tiny:llama"), tok, seed=3))
    assert other == pytest.approx(head.loss(model, tok, ["some other text", "and more of it"])["nll"], rel=1e-6)
    assert other != pytest.approx(own, rel=1e-6)


def test_encoders_get_sts_without_an_mlm_head_and_lm_is_refused(tok):
    torch.manual_seed(0)
    model = load_pretrained(ModelConfig(name_or_path="tiny"), 2, seed=0).eval()
    rows = probes("tiny", tok).rows(model)
    assert [r["metric"] for r in rows] == ["general_sts_spearman"]
    assert probes("tiny", tok, general_probe="none").rows(model) == []
    with pytest.raises(TaskError, match="'lm' is for decoders"):
        probes("tiny", tok, general_probe="lm").rows(model)
