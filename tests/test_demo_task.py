"""The demo grammar: deterministic, balanced, disjoint, and its composition rule does what it says."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from kaviz.data import demo
from kaviz.data.demo import CLAUSE_KINDS, CONTRAST_MARKERS, NEGATIVE_RARE, POLARITY, POSITIVE_RARE, VERBS

SUBJECTS = demo.SINGULAR + demo.PLURAL
NEGATORS = ("not", "n't", "never", "nowhere", "hardly", "far from", "anything but", "nothing", "nobody", "cannot")


@pytest.fixture(scope="module")
def splits() -> tuple[list[demo.DemoExample], list[demo.DemoExample]]:
    return demo.generate(1000, 400, seed=3)


def test_deterministic_for_a_seed(splits):
    again = demo.generate(1000, 400, seed=3)
    assert again == splits
    other = demo.generate(1000, 400, seed=4)
    assert [e.text for e in other[0]] != [e.text for e in splits[0]]


def test_sizes_balance_and_disjoint(splits):
    train, dev = splits
    assert (len(train), len(dev)) == (1000, 400)
    assert Counter(e.label for e in train) == {0: 500, 1: 500}
    assert Counter(e.label for e in dev) == {0: 200, 1: 200}
    texts_train = {e.text for e in train}
    assert len(texts_train) == len(train)
    assert texts_train.isdisjoint(e.text for e in dev)
    odd_train, _ = demo.generate(11, 10, seed=0)
    counts = Counter(e.label for e in odd_train)
    assert abs(counts[0] - counts[1]) == 1


def test_sentences_are_short_and_varied(splits):
    train, dev = splits
    assert max(len(e.text.split()) for e in train + dev) <= demo.MAX_WORDS
    structures = Counter(e.structure.split(":")[0] for e in train)
    for s in ("plain", "negated", "double_negated", "contrast", "compare", "compare_negated", "verb", "agree"):
        assert structures[s] > 0, s


def test_noise_rate_and_bookkeeping(splits):
    train, dev = splits
    allx = train + dev
    noise = Counter(e.noise for e in allx)
    assert 0.04 <= (noise["flipped"] + noise["ambiguous"]) / len(allx) <= 0.11
    for e in allx:
        if e.noise == "none":
            assert e.label == e.rule_label
        elif e.noise == "flipped":
            assert e.label == 1 - e.rule_label
        else:
            assert e.rule_label == -1


def test_rare_words_only_in_dev(splits):
    train, dev = splits
    rare = set(POSITIVE_RARE + NEGATIVE_RARE)

    def words(e: demo.DemoExample) -> set[str]:
        return {w.strip(",;") for w in e.text.split()}

    assert not any(words(e) & rare for e in train)
    assert sum(bool(words(e) & rare) for e in dev) > len(dev) * 0.2


@pytest.mark.parametrize("seed", range(5))
def test_negation_flips_and_double_negation_restores(seed):
    rng = random.Random(seed)
    for adjective, polarity in POLARITY.items():
        subject = rng.choice(SUBJECTS)
        plain = demo.clause("plain", subject, adjective, rng)
        assert plain.label == polarity and adjective in plain.text
        for kind in ("negated", "claim_negated", "compare_negated"):
            neg = demo.clause(kind, subject, adjective, rng)
            assert neg.label == 1 - plain.label, neg
            assert adjective in neg.text and any(n in neg.text for n in NEGATORS + ("less",)), neg
        assert demo.clause("double_negated", subject, adjective, rng).label == plain.label
        assert demo.clause("compare", subject, adjective, rng).label == plain.label
        assert demo.clause("claim", subject, adjective, rng).label == plain.label


def test_negated_verbs_flip():
    rng = random.Random(0)
    for verb, (_, polarity) in VERBS.items():
        assert demo.clause("verb", "the plot", verb, rng).label == polarity
        neg = demo.clause("verb_negated", "the plot", verb, rng)
        assert neg.label == 1 - polarity and any(n in neg.text for n in NEGATORS)


@pytest.mark.parametrize("marker", CONTRAST_MARKERS)
def test_main_clause_decides_a_contrast(marker):
    rng = random.Random(1)
    first = demo.clause("plain", "the plot", "clever", rng)
    second = demo.clause("negated", "the acting", "good", rng)
    joined = demo.combine(first, second, marker, rng)
    assert joined.label == second.label == 0
    assert first.text in joined.text and second.text in joined.text


def test_bad_arguments():
    rng = random.Random(0)
    with pytest.raises(ValueError, match="'sideways'"):
        demo.clause("sideways", "the plot", "good", rng)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'purple'"):
        demo.clause("plain", "the plot", "purple", rng)
    with pytest.raises(ValueError, match="'because'"):
        demo.combine(demo.Clause("a", 1, "plain"), demo.Clause("b", 0, "plain"), "because", rng)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_dev must be a positive integer, got 0"):
        demo.generate(10, 0)
    assert set(CLAUSE_KINDS) >= demo.FLIPPING_KINDS


def test_the_plain_grammar_is_one_clause_decided_by_its_adjective():
    train, dev = demo.generate(300, 100, seed=3, grammar="plain")
    for e in train + dev:
        assert e.structure == "plain" and e.noise == "none" and e.rule_label == e.label
        words = set(e.text.replace(",", " ").split())
        polar = words & (set(demo.POSITIVE) | set(demo.NEGATIVE))
        assert polar and all((w in demo.POSITIVE) == (e.label == 1) for w in polar), e.text
    assert demo.generate(300, 100, seed=3, grammar="plain") == (train, dev)  # deterministic
    with pytest.raises(ValueError, match="grammar"):
        demo.generate(10, 10, grammar="hard")
