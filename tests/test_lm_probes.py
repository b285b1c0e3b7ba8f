"""Decoder knowledge probes (kaviz.measure.lm_probes) against direct, token-by-token computations
on a tiny GPT-2 built in code, and the probe file's refusals with line numbers."""

from __future__ import annotations

import math

import pytest
import torch

from kaviz.measure.lm_probes import completion_probe, lm_loss


@pytest.fixture(scope="module")
def lm():
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from kaviz.train.models import packaged_model_dir

    tok = AutoTokenizer.from_pretrained(str(packaged_model_dir()))
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=2)
    return GPT2LMHeadModel(cfg).eval(), tok


def slow_nll(model, ids: list[int]) -> list[float]:
    """-log p(token t | tokens < t) for t >= 1, one forward per position."""
    out = []
    for t in range(1, len(ids)):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids[:t]])).logits[0, -1]
        out.append(-float(torch.log_softmax(logits, -1)[ids[t]]))
    return out


def test_lm_loss_equals_the_token_by_token_likelihood(lm):
    model, tok = lm
    texts = ["the film was great", "a longer sentence about the plot and its many twists", "ok"]
    got = lm_loss(model, tok, texts, batch_size=2)  # padding inside a batch must not count
    nll = [x for t in texts for x in slow_nll(model, tok(t)["input_ids"])]
    assert got["tokens"] == len(nll)
    assert got["nll"] == pytest.approx(sum(nll) / len(nll), rel=1e-5)
    assert got["perplexity"] == pytest.approx(math.exp(sum(nll) / len(nll)), rel=1e-5)
    assert got["nll"] == pytest.approx(math.log(len(tok)), rel=0.1)  # a random model: about uniform


def test_completion_probe_equals_greedy_decoding_and_its_likelihood(lm):
    model, tok = lm
    pairs = [{"prompt": "the capital of france is", "answer": "paris"}, {"prompt": "two plus two is", "answer": "four"}]
    table = completion_probe(model, tok, pairs)
    for row, p in zip(table.itertuples(), pairs):
        prompt = tok(p["prompt"], add_special_tokens=False)["input_ids"]
        answer = tok(p["answer"], add_special_tokens=False)["input_ids"]
        nll = slow_nll(model, prompt + answer)[len(prompt) - 1 :]
        assert row.answer_logprob == pytest.approx(-sum(nll), rel=1e-5)
        seq = list(prompt)
        for _ in answer:
            with torch.no_grad():
                seq.append(int(model(input_ids=torch.tensor([seq])).logits[0, -1].argmax()))
        assert row.exact == (seq[len(prompt) :] == answer) and row.answer_tokens == len(answer)
    # the greedy continuation itself is an exact match, by construction
    prompt = "the capital of france is"
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        nxt = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
    own = tok.decode([nxt])
    if tok(own, add_special_tokens=False)["input_ids"] == [nxt]:
        assert completion_probe(model, tok, [{"prompt": prompt, "answer": own}]).exact.iloc[0]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_lm_head_on_a_classifier_body_equals_the_causal_lm_itself(family):
    """LMHead puts a classifier's body under the pre-trained head: a classifier with the LM's own
    body weights gets the LM's loss and completion table; the head's own body (changed here so that
    using it would show) comes back after the call, and a narrower body is skipped (None)."""
    import copy

    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from kaviz.core.structure import encoder_layers
    from kaviz.measure.lm_probes import LMHead
    from kaviz.train.families import tiny_family_config
    from kaviz.train.models import packaged_model_dir

    tok = AutoTokenizer.from_pretrained(str(packaged_model_dir()))
    torch.manual_seed(1)
    cfg = tiny_family_config(family, len(tok), 2, tok)
    causal = AutoModelForCausalLM.from_config(cfg).eval()
    clf = AutoModelForSequenceClassification.from_config(cfg).eval()
    prefix = causal.base_model_prefix
    getattr(clf, prefix).load_state_dict(getattr(causal, prefix).state_dict())
    pretrained = copy.deepcopy(causal)
    with torch.no_grad():  # a different body under the same head (embeddings, hence a tied head, kept)
        for p in encoder_layers(pretrained)[0].parameters():  # the table finds a *ForCausalLM's layers too
            p.add_(1.0)
    head = LMHead(pretrained)
    own_body = getattr(pretrained, prefix)
    texts = ["the film was good", "a dull and slow plot"]
    ref = lm_loss(causal, tok, texts)
    assert abs(lm_loss(pretrained, tok, texts)["nll"] - ref["nll"]) > 1e-3  # using its own body would show
    got = head.loss(clf, tok, texts)
    assert got["nll"] == pytest.approx(ref["nll"], rel=1e-5) and got["tokens"] == ref["tokens"]
    pairs = [{"prompt": "the capital of france is", "answer": " paris"}, {"prompt": "one two", "answer": " three"}]
    assert head.completion(clf, tok, pairs).equals(completion_probe(causal, tok, pairs))
    assert getattr(pretrained, prefix) is own_body  # the head's body is back
    narrow_cfg = copy.deepcopy(cfg)
    narrow_cfg.hidden_size, narrow_cfg.num_attention_heads = 16, 2
    if family == "llama":
        narrow_cfg.head_dim, narrow_cfg.num_key_value_heads = 8, 1
    assert head.loss(AutoModelForSequenceClassification.from_config(narrow_cfg), tok, texts) is None


def test_borrowed_body_gives_the_head_its_body_back_when_the_block_raises(lm):
    """The one borrow both heads use (MLMHead, LMHead): inside the block the head runs on the other
    model's body; an error inside the block still puts the head's own body back; a model without a
    body of that name borrows nothing."""
    import copy

    from kaviz.measure.probes import borrowed_body

    head, _ = lm
    other = copy.deepcopy(head)
    own = head.transformer
    with pytest.raises(RuntimeError, match="inside"), borrowed_body(head, other) as borrowed:
        assert borrowed is head and head.transformer is other.transformer
        raise RuntimeError("inside")
    assert head.transformer is own
    with borrowed_body(head, torch.nn.Linear(2, 2)) as none:
        assert none is None and head.transformer is own
