"""kaviz.measure.attribution: integrated-gradients completeness against forward passes, padding, agreement by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kaviz.measure.attribution import (
    ATTRIBUTION_METHODS,
    agreement,
    attribution_table,
    encode_texts,
    token_attributions,
)
from tests.helpers import tiny_bert

TEXTS = [
    "the film was a delight from start to finish",
    "dull",
    ("is it raining today", "the streets are wet"),
    "a slow and tedious story about nothing much",
]


pytestmark = pytest.mark.usefixtures("one_thread")


def _clf(vocab: int, seed: int = 0, num_labels: int = 3):
    # large weights: logits that move by O(1) between input and baseline
    return tiny_bert(vocab=vocab, seed=seed, num_labels=num_labels, initializer_range=0.3)


def _reference_gap(model, tok, texts, target=None):
    """f(input) - f(baseline) for the target logit, with the baseline built by hand: [CLS] [PAD]... [SEP]."""
    enc = encode_texts(tok, texts)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    special = (ids == tok.cls_token_id) | (ids == tok.sep_token_id) | (mask == 0)
    base = torch.where(special, ids, tok.pad_token_id)
    model.eval()
    with torch.no_grad():
        f = model(**enc).logits
        fb = model(input_ids=base, attention_mask=mask, token_type_ids=enc["token_type_ids"]).logits
    t = f.argmax(-1) if target is None else torch.full((len(ids),), target)
    return (f - fb).gather(1, t[:, None])[:, 0], special, mask


@pytest.mark.parametrize("num_labels", [3, 1])
def test_ig_completeness_and_padding(tok, num_labels):
    model = _clf(len(tok), num_labels=num_labels)
    attr = token_attributions(model, tok, TEXTS, n_steps=32)
    gap, special, mask = _reference_gap(model, tok, TEXTS)
    assert gap.abs().min() > 0.05  # the check is not vacuous
    sums = torch.stack([a.sum() for a in attr])
    torch.testing.assert_close(sums, gap, rtol=1e-3, atol=1e-4)
    for i, a in enumerate(attr):
        real = mask[i].bool()
        assert a.shape == (int(real.sum()),)  # padding excluded
        assert torch.all(a[special[i][real]] == 0)  # [CLS]/[SEP] equal the baseline: exactly zero


def test_explicit_target_and_tensor_inputs(tok):
    model = _clf(len(tok), seed=1)
    attr = token_attributions(model, tok, TEXTS, target=2, n_steps=32)
    gap, _, _ = _reference_gap(model, tok, TEXTS, target=2)
    torch.testing.assert_close(torch.stack([a.sum() for a in attr]), gap, rtol=1e-3, atol=1e-4)
    enc = encode_texts(tok, TEXTS)
    no_tok = token_attributions(model, None, enc, target=2, n_steps=32, batch_size=3)  # [CLS]/[SEP] from positions
    for a, b in zip(attr, no_tok):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    mixed = token_attributions(model, tok, TEXTS, target=[2, 0, 2, 0], n_steps=4, batch_size=3)
    by_class = {c: token_attributions(model, tok, TEXTS, target=c, n_steps=4) for c in (0, 2)}
    for i, a in enumerate(mixed):  # one target per example, sliced across batches of different padding
        torch.testing.assert_close(a, by_class[2 if i % 2 == 0 else 0][i], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="target"):
        token_attributions(model, tok, TEXTS, target=3)
    with pytest.raises(ValueError, match="4 examples"):
        token_attributions(model, tok, TEXTS, target=[0, 1])


def test_gradient_x_input_and_errors(tok):
    model = _clf(len(tok))
    model.train()
    attr = token_attributions(model, tok, TEXTS[:2], method="gradient_x_input")
    assert model.training  # the caller's mode is restored
    assert [a.shape[0] for a in attr] == [11, 3] and all(torch.isfinite(a).all() for a in attr)
    assert set(ATTRIBUTION_METHODS) >= {"integrated_gradients", "gradient_x_input"}
    with pytest.raises(ValueError, match="unknown attribution method 'lime'"):
        token_attributions(model, tok, TEXTS, method="lime")
    with pytest.raises(ValueError, match="baseline"):
        token_attributions(model, tok, TEXTS, baseline="zeros")
    with pytest.raises(ValueError, match="tokenizer"):
        token_attributions(model, None, TEXTS)


def test_agreement_by_hand():
    a = [torch.tensor([3.0, -2.0, 1.0, 0.0]), torch.tensor([1.0, 2.0, 3.0])]
    b = [torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([-1.0, -2.0, -3.0])]
    df = agreement(a, b, k=2)
    assert list(df.columns) == ["example", "spearman", "topk_overlap", "k"]
    assert df["spearman"].tolist() == pytest.approx([-1.0, 1.0])  # |a| ranks reversed; signs ignored
    assert df["topk_overlap"].tolist() == [0.0, 1.0]
    capped = agreement(a, b, k=10)
    assert capped["k"].tolist() == [4, 3] and capped["topk_overlap"].tolist() == [1.0, 1.0]
    assert math.isnan(agreement([torch.ones(3)], [torch.arange(3.0)])["spearman"][0])  # constant: undefined
    with pytest.raises(ValueError, match="shapes"):
        agreement([torch.ones(3)], [torch.ones(4)])
    with pytest.raises(ValueError, match="same examples"):
        agreement(a, b[:1])


def test_agreement_self_and_other_model(tok):
    m1, m2 = _clf(len(tok), seed=0), _clf(len(tok), seed=1)
    a1 = token_attributions(m1, tok, TEXTS, target=0)
    a2 = token_attributions(m2, tok, TEXTS, target=0)
    same = agreement(a1, a1, k=3)
    assert same["spearman"].tolist() == pytest.approx([1.0] * 4) and (same["topk_overlap"] == 1.0).all()
    other = agreement(a1, a2, k=3)
    assert other["spearman"].mean() < 0.99 and other["topk_overlap"].mean() < 1.0


def test_attribution_table(tok):
    teacher, student = _clf(len(tok), seed=0), _clf(len(tok), seed=1)
    tab = attribution_table(teacher, student, tok, TEXTS[:3], k=3, n_steps=4)
    tokens, summary = tab
    assert list(tokens.columns) == ["example", "text", "token", "position", "teacher", "student"]
    target = teacher.eval()(**encode_texts(tok, TEXTS[:3])).logits.argmax(-1)
    expected_t = token_attributions(teacher, tok, TEXTS[:3], n_steps=4)  # default target: its own prediction
    expected_s = token_attributions(student, tok, TEXTS[:3], target=target, n_steps=4)
    assert len(tokens) == sum(len(a) for a in expected_t)
    np.testing.assert_allclose(tokens["teacher"], torch.cat(expected_t).numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(tokens["student"], torch.cat(expected_s).numpy(), rtol=1e-4, atol=1e-6)
    first = tokens[tokens["example"] == 2]
    assert first["token"].iloc[0] == "[CLS]" and first["position"].tolist() == list(range(len(first)))
    assert "[SEP]" in first["token"].tolist()[1:-1]  # the pair's middle separator
    assert list(summary.columns) == ["example", "text", "target", "spearman", "topk_overlap", "k"]
    assert summary["target"].tolist() == target.tolist()
    assert summary["text"][2] == "is it raining today [SEP] the streets are wet"
    self_tab = attribution_table(teacher, teacher, tok, TEXTS[:2], n_steps=2).summary
    assert self_tab["spearman"].tolist() == pytest.approx([1.0, 1.0]) and (self_tab["topk_overlap"] == 1.0).all()
