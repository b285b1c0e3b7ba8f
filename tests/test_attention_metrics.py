"""kaviz.measure.attention against per-row numpy references, with padding and pruned heads."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from kaviz.measure.attention import (
    ATTENTION_METRICS,
    HIGHER_IS_SIMILAR,
    attention_cosine,
    attention_entropy,
    attention_js,
    attention_kl,
    attention_table,
)

B, H, T = 3, 4, 7
LENGTHS = [7, 5, 2]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one intra-op thread (conftest)


def _mask():
    return (torch.arange(T)[None, :] < torch.tensor(LENGTHS)[:, None]).long()  # (B, T)


def _maps(seed, sharp=1.0):
    """Softmax maps with the usual additive padding mask, float32 (B, H, T, T)."""
    g = torch.Generator().manual_seed(seed)
    scores = sharp * torch.randn(B, H, T, T, generator=g)
    scores = scores.masked_fill(_mask()[:, None, None, :] == 0, -1e4)
    return scores.softmax(-1)


def _ref_rows(p, q, fn):
    """Per-head mean of fn over real query rows, each renormalised over real keys, in numpy."""
    p = p.double().numpy()
    q = None if q is None else q.double().numpy()
    out = np.zeros(p.shape[1])
    for h in range(p.shape[1]):
        vals = []
        for b, n in enumerate(LENGTHS):
            for t in range(n):
                pr = p[b, h, t, :n] / p[b, h, t, :n].sum()
                qr = None if q is None else q[b, h, t, :n] / q[b, h, t, :n].sum()
                vals.append(fn(pr, qr))
        out[h] = np.mean(vals)
    return out


def _kl(a, b):
    return float(np.sum([ai * math.log(ai / bi) for ai, bi in zip(a, b) if ai > 0]))


REFS = {
    attention_js: lambda a, b: 0.5 * _kl(a, (a + b) / 2) + 0.5 * _kl(b, (a + b) / 2),
    attention_kl: _kl,
    attention_cosine: lambda a, b: float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))),
}


@pytest.mark.parametrize("fn", list(REFS), ids=lambda f: f.__name__)
def test_pair_metrics_match_reference(fn):
    p, q = _maps(0), _maps(1, sharp=2.0)
    got = fn(p, q, _mask())
    assert got.shape == (H,) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), _ref_rows(p, q, REFS[fn]), rtol=1e-5, atol=1e-10)
    assert (got > 0.01).all() if fn is not attention_cosine else (got < 0.99).all()


def test_entropy_matches_reference_and_uniform_is_log_k():
    p = _maps(2)
    ref = _ref_rows(p, None, lambda a, _: -float(np.sum([x * math.log(x) for x in a if x > 0])))
    np.testing.assert_allclose(attention_entropy(p, _mask()).numpy(), ref, rtol=1e-5)
    uniform = _mask()[:, None, None, :].float().expand(B, H, T, T) / torch.tensor(LENGTHS)[:, None, None, None]
    want = sum(n * math.log(n) for n in LENGTHS) / sum(LENGTHS)  # every real query row counts once
    torch.testing.assert_close(attention_entropy(uniform, _mask()), torch.full((H,), want, dtype=torch.float64))


def test_js_identity_symmetry_and_bound():
    p, q, mask = _maps(0), _maps(1, sharp=3.0), _mask()
    torch.testing.assert_close(attention_js(p, p, mask), torch.zeros(H, dtype=torch.float64))
    torch.testing.assert_close(attention_js(p, q, mask), attention_js(q, p, mask))
    assert (attention_js(p, q, mask) <= math.log(2)).all()
    a = torch.zeros(B, H, T, T)
    b = torch.zeros(B, H, T, T)
    a[..., 0] = 1.0  # all mass on the first key, which is real in every example
    b[..., 1] = 1.0  # disjoint support: JS = ln 2 exactly
    torch.testing.assert_close(attention_js(a, b, mask), torch.full((H,), math.log(2), dtype=torch.float64))
    torch.testing.assert_close(attention_cosine(a, b, mask), torch.zeros(H, dtype=torch.float64))
    assert torch.isfinite(attention_kl(a, b, mask)).all()  # q = 0 where p > 0: finite by the eps rule
    assert HIGHER_IS_SIMILAR == {"js": False, "kl": False, "cosine": True}


def test_padding_never_changes_results():
    p, q, mask = _maps(0), _maps(1), _mask()
    before = {name: fn(p, q, mask) for name, fn in ATTENTION_METRICS.items()}
    before["entropy"] = attention_entropy(p, mask)
    pad = (mask[:, None, :, None] == 0) | (mask[:, None, None, :] == 0)  # (B, 1, T, T) padded row or column
    noisy_p = torch.where(pad, torch.rand(B, H, T, T) * 5, p)
    noisy_q = torch.where(pad, torch.full_like(q, float("nan")), q)
    after = {name: fn(noisy_p, noisy_q, mask) for name, fn in ATTENTION_METRICS.items()}
    after["entropy"] = attention_entropy(noisy_p, mask)
    for name in before:
        torch.testing.assert_close(after[name], before[name], rtol=1e-12, atol=1e-12)
    float16 = attention_js(p.half(), q.half(), mask.bool())
    torch.testing.assert_close(float16, before["js"], atol=1e-3, rtol=0)


def test_errors():
    p, mask = _maps(0), _mask()
    with pytest.raises(ValueError, match=r"\(batch, heads, T, T\), got torch.Size\(\[3, 4, 7\]\)"):
        attention_js(p[..., 0], p[..., 0], mask)
    with pytest.raises(ValueError, match=r"same shape.*\(3, 4, 7, 7\).*\(3, 2, 7, 7\)"):
        attention_js(p, p[:, :2], mask)
    with pytest.raises(ValueError, match=r"mask must have shape \(batch, T\) = \(3, 7\)"):
        attention_js(p, p, mask[:, :5])
    with pytest.raises(ValueError, match="softmax"):
        attention_entropy(torch.randn(B, H, T, T), mask)
    with pytest.raises(ValueError, match="no real token"):
        attention_entropy(p, torch.zeros_like(mask))
    with pytest.raises(ValueError, match="eps"):
        attention_kl(p, p, mask, eps=0.0)


def test_attention_table_is_tidy_and_marks_pruned_heads():
    maps_a = [_maps(0), _maps(1)]
    maps_b = [_maps(2), _maps(3)]
    mask = _mask()
    table = attention_table(maps_a, maps_b, mask, pruned_heads={(1, 2)})
    assert list(table.columns) == ["layer", "head", "metric", "value", "pruned"]
    assert len(table) == 2 * H * 5
    assert set(table.metric) == {"js", "kl", "cosine", "entropy_a", "entropy_b"}
    js1 = table[(table.layer == 1) & (table.metric == "js")].set_index("head").value
    want = attention_js(maps_a[1], maps_b[1], mask).numpy()
    np.testing.assert_allclose(js1.drop(2).to_numpy(), np.delete(want, 2))
    pruned = table[table.pruned]
    assert set(zip(pruned["layer"], pruned["head"])) == {(1, 2)} and pruned.value.isna().all() and len(pruned) == 5
    assert not table[~table.pruned].value.isna().any()

    single = attention_table(maps_a, None, mask)
    assert set(single.metric) == {"entropy_a"} and len(single) == 2 * H
    np.testing.assert_allclose(single[single.layer == 0].value, attention_entropy(maps_a[0], mask).numpy())

    def max_diff(p, q, m):
        return (p - q).abs().amax(dim=(0, 2, 3))

    custom = attention_table(maps_a, maps_b, mask, metrics=["js", max_diff])
    assert set(custom.metric) == {"js", "max_diff"}
    assert isinstance(custom, pd.DataFrame) and custom.layer.dtype.kind == "i" and custom.pruned.dtype == bool


def test_attention_table_in_row_blocks_matches_the_references(monkeypatch):
    """Blocks of one row each (BLOCK_ELEMENTS below one row's map) pool to the per-row references,
    padding-only rows included; row blocking bounds memory and never changes a number beyond float64 rounding."""
    import kaviz.measure.attention as attention

    maps_a, maps_b, mask = [_maps(0)], [_maps(1)], _mask()
    whole = attention_table(maps_a, maps_b, mask)
    monkeypatch.setattr(attention, "BLOCK_ELEMENTS", 1)
    blocked = attention_table(maps_a, maps_b, mask)
    pd.testing.assert_frame_equal(blocked, whole, rtol=1e-12, atol=1e-15)
    js = blocked[blocked.metric == "js"].value.to_numpy()
    np.testing.assert_allclose(js, _ref_rows(maps_a[0], maps_b[0], REFS[attention_js]), rtol=1e-10)
    padded = torch.cat([mask, torch.zeros(1, T, dtype=mask.dtype)])  # a batch row that is all padding
    extra = [torch.cat([m, torch.full((1, H, T, T), float("nan"))]) for m in maps_a + maps_b]
    pd.testing.assert_frame_equal(attention_table(extra[:1], extra[1:], padded), whole, rtol=1e-12, atol=1e-15)


def test_attention_table_errors():
    maps, mask = [_maps(0)], _mask()
    with pytest.raises(ValueError, match="maps_b is None"):
        attention_table(maps, None, mask, metrics=["js"])
    with pytest.raises(ValueError, match="unknown attention metric 'jsd'; known: js, kl, cosine, entropy"):
        attention_table(maps, maps, mask, metrics=["jsd"])
    with pytest.raises(ValueError, match=r"pruned_heads \[\(0, 4\)\]"):
        attention_table(maps, maps, mask, pruned_heads=[(0, 4)])
    with pytest.raises(ValueError, match="1 and 2"):
        attention_table(maps, maps * 2, mask)


def test_attention_metrics_have_one_home():
    """kaviz.measure.attention is where the attention metrics live; similarity does not re-export them."""
    from kaviz.measure import attention as attention_metrics
    from kaviz.measure import similarity

    assert attention_metrics.attention_js.__module__ == "kaviz.measure.attention"
    assert not hasattr(similarity, "attention_js")
