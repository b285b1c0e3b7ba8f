"""kaviz.measure.similarity against independent float64 numpy/scipy references of the textbook formulas."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.linalg import orthogonal_procrustes
from scipy.spatial.distance import pdist, squareform

from kaviz.measure.cka_matrix import cka_matrix
from kaviz.measure.similarity import (
    HIGHER_IS_SIMILAR,
    METRICS,
    gram_linear,
    gram_rbf,
    hsic,
    linear_cka,
    minibatch_cka,
    procrustes,
    procrustes_similarity,
    pwcca,
    rbf_cka,
    resolve_metric,
    svcca,
    unbiased_cka,
    unbiased_hsic,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one intra-op thread (conftest)


# ---------------------------------------------------------------- numpy references


def _np(x):
    return x.detach().double().numpy()


def ref_hsic(k, m):
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(k @ h @ m @ h) / (n - 1) ** 2


def ref_cka_from_grams(k, m, hsic_fn):
    return hsic_fn(k, m) / math.sqrt(hsic_fn(k, k) * hsic_fn(m, m))


def ref_linear_cka(x, y):
    x, y = _np(x), _np(y)
    return ref_cka_from_grams(x @ x.T, y @ y.T, ref_hsic)


def ref_rbf_gram(x, sigma_frac=0.8):
    d = pdist(x)  # distinct pairs i < j
    sigma = sigma_frac * np.median(d)
    return np.exp(-(squareform(d) ** 2) / (2 * sigma**2))


def ref_rbf_cka(x, y, sigma_frac=0.8):
    return ref_cka_from_grams(ref_rbf_gram(_np(x), sigma_frac), ref_rbf_gram(_np(y), sigma_frac), ref_hsic)


def ref_unbiased_hsic_formula(k, m):
    """Song et al. 2012 eq. 5, written with explicit loops for the 1ᵀ·1 terms."""
    n = k.shape[0]
    kt, lt = k.copy(), m.copy()
    np.fill_diagonal(kt, 0)
    np.fill_diagonal(lt, 0)
    sum_k = sum(kt[i, j] for i in range(n) for j in range(n))
    sum_l = sum(lt[i, j] for i in range(n) for j in range(n))
    kl1 = sum(kt[i, :] @ lt[:, j] for i in range(n) for j in range(n))
    return (np.trace(kt @ lt) + sum_k * sum_l / ((n - 1) * (n - 2)) - 2 / (n - 2) * kl1) / (n * (n - 3))


def ref_unbiased_hsic_ustat(k, m):
    """Song et al. 2012 Theorem 2: U-statistic over 4-tuples with the symmetrised kernel h."""
    n = k.shape[0]
    total = 0.0
    for quad in itertools.combinations(range(n), 4):
        h = 0.0
        for s, t, u, v in itertools.permutations(quad):
            h += k[s, t] * m[s, t] + k[s, t] * m[u, v] - 2 * k[s, t] * m[s, u]
        total += h / 24
    return total / math.comb(n, 4)


def ref_minibatch_cka(x, y, batch_size, seed):
    n = x.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    xs, ys = _np(x), _np(y)
    hxy = hxx = hyy = 0.0
    for start in range(0, n - batch_size + 1, batch_size):
        idx = perm[start : start + batch_size]
        k, m = xs[idx] @ xs[idx].T, ys[idx] @ ys[idx].T  # uncentred: HSIC_1 is shift-invariant
        hxy += ref_unbiased_hsic_formula(k, m)
        hxx += ref_unbiased_hsic_formula(k, k)
        hyy += ref_unbiased_hsic_formula(m, m)
    return hxy / math.sqrt(hxx * hyy)


def _normalised(x):
    x = _np(x)
    x = x - x.mean(0)
    return x / np.linalg.norm(x)


def ref_procrustes(x, y):
    a, b = _normalised(x), _normalised(y)
    width = max(a.shape[1], b.shape[1])
    a = np.pad(a, ((0, 0), (0, width - a.shape[1])))
    b = np.pad(b, ((0, 0), (0, width - b.shape[1])))
    r, _ = orthogonal_procrustes(a, b)
    return np.linalg.norm(a @ r - b) ** 2


def _inv_sqrt(s):
    w, v = np.linalg.eigh(s)
    return v @ np.diag(w**-0.5) @ v.T


def ref_cca(xc, yc):
    """Canonical correlations and x-side canonical variates via covariance whitening."""
    sxx, syy, sxy = xc.T @ xc, yc.T @ yc, xc.T @ yc
    wx, wy = _inv_sqrt(sxx), _inv_sqrt(syy)
    u, rho, vt = np.linalg.svd(wx @ sxy @ wy, full_matrices=False)
    return rho, xc @ wx @ u, yc @ wy @ vt.T


def ref_svcca(x, y, keep=0.99):
    reduced = []
    for a in (_np(x), _np(y)):
        a = a - a.mean(0)
        u, s, _ = np.linalg.svd(a, full_matrices=False)
        k = int(np.searchsorted(np.cumsum(s**2) / np.sum(s**2), keep) + 1)
        reduced.append(u[:, :k] * s[:k])
    rho, _, _ = ref_cca(*reduced)
    return rho.mean()


def ref_pwcca(x, y):
    xc, yc = _np(x) - _np(x).mean(0), _np(y) - _np(y).mean(0)
    rho, hx, hy = ref_cca(xc, yc)
    h, z = (hx, xc) if xc.shape[1] <= yc.shape[1] else (hy, yc)
    h = h / np.linalg.norm(h, axis=0)
    alpha = np.abs(h.T @ z).sum(1)
    return (alpha * rho).sum() / alpha.sum()


# ---------------------------------------------------------------- fixtures


def _pair(n=60, d1=12, d2=9, noise=1.0, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d1, generator=g, dtype=torch.float64) + 2.0  # non-zero mean on purpose
    y = x @ torch.randn(d1, d2, generator=g, dtype=torch.float64) + noise * torch.randn(n, d2, generator=g)
    return x.to(dtype), y.to(dtype)


REFERENCE_CASES = {
    "linear_feature_form": (lambda x, y: linear_cka(x, y), ref_linear_cka, dict(n=60, d1=12, d2=9)),
    "linear_gram_form": (lambda x, y: linear_cka(x, y), ref_linear_cka, dict(n=10, d1=30, d2=25)),
    "rbf": (lambda x, y: rbf_cka(x, y), ref_rbf_cka, dict(n=40, d1=6, d2=5)),
    "rbf_frac": (lambda x, y: rbf_cka(x, y, 1.7), lambda x, y: ref_rbf_cka(x, y, 1.7), dict(n=41, d1=6, d2=5)),
    "unbiased": (
        unbiased_cka,
        lambda x, y: ref_minibatch_cka(x, y, x.shape[0], 0),
        dict(n=24, d1=5, d2=4),
    ),
    "minibatch": (
        lambda x, y: minibatch_cka(x, y, batch_size=8, seed=3),
        lambda x, y: ref_minibatch_cka(x, y, 8, 3),
        dict(n=30, d1=5, d2=4),
    ),
    "procrustes": (procrustes, ref_procrustes, dict(n=50, d1=7, d2=7)),
    "procrustes_widths_differ": (procrustes, ref_procrustes, dict(n=50, d1=7, d2=4)),
    "procrustes_n_lt_d": (procrustes, ref_procrustes, dict(n=6, d1=11, d2=9)),
    "svcca": (svcca, ref_svcca, dict(n=200, d1=10, d2=8, noise=3.0)),
    "pwcca": (pwcca, ref_pwcca, dict(n=200, d1=6, d2=8, noise=3.0)),
    "pwcca_y_side": (pwcca, ref_pwcca, dict(n=200, d1=9, d2=5, noise=3.0)),
}


@pytest.mark.parametrize("case", REFERENCE_CASES)
def test_metric_matches_reference(case):
    fn, ref, sizes = REFERENCE_CASES[case]
    x, y = _pair(**sizes)
    got, want = fn(x, y), ref(x, y)
    assert isinstance(got, float)
    assert got == pytest.approx(want, abs=1e-8)
    assert 0.05 < want < 0.99 or case.startswith("procrustes")  # the case is not trivial


def test_unbiased_hsic_matches_song_u_statistic_and_biased_hsic_matches_trace():
    x, y = _pair(n=7, d1=3, d2=2)
    k, m = gram_linear(x), gram_linear(y)  # (7, 7)
    kn, mn = k.numpy(), m.numpy()
    assert unbiased_hsic(k, m) == pytest.approx(ref_unbiased_hsic_ustat(kn, mn), rel=1e-10)
    assert ref_unbiased_hsic_formula(kn, mn) == pytest.approx(ref_unbiased_hsic_ustat(kn, mn), rel=1e-10)
    assert hsic(k, m) == pytest.approx(ref_hsic(kn, mn), rel=1e-10)
    with pytest.raises(ValueError, match="n >= 4"):
        unbiased_hsic(k[:3, :3], m[:3, :3])
    with pytest.raises(ValueError, match=r"\(7, 7\).*\(6, 6\)"):
        hsic(k, m[:6, :6])


def test_gram_rbf_bandwidth_on_known_points():
    x = torch.tensor([[0.0], [1.0], [3.0]])  # pair distances 1, 3, 2 -> median 2, sigma 1.6
    k = gram_rbf(x, sigma_frac=0.8)
    want = torch.exp(-torch.tensor([[0, 1, 9], [1, 0, 4], [9, 4, 0]], dtype=torch.float64) / (2 * 1.6**2))
    torch.testing.assert_close(k, want)
    dup = torch.tensor([[0.0], [0.0], [0.0], [2.0]])  # 3 of 6 pairs coincide; median (0 + 2) / 2 = 1
    assert gram_rbf(dup, 1.0)[0, 3] == pytest.approx(math.exp(-2.0))
    with pytest.raises(ValueError, match="sigma_frac"):
        gram_rbf(x, 0.0)


@pytest.mark.parametrize("name", METRICS)
def test_self_similarity(name):
    x, _ = _pair(n=40, d1=6, d2=6)
    expected = 0.0 if name == "procrustes" else 1.0
    assert METRICS[name](x, x) == pytest.approx(expected, abs=1e-9)
    assert HIGHER_IS_SIMILAR[name] is (name != "procrustes")


def test_linear_cka_invariances():
    x, y = _pair(n=50, d1=8, d2=8, dtype=torch.float64)
    base = linear_cka(x, y)
    q, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(5)))
    assert linear_cka(x @ q, y) == pytest.approx(base, abs=1e-12)
    assert linear_cka(3.7 * x, 0.01 * y) == pytest.approx(base, abs=1e-12)
    assert linear_cka(x + 100.0, y) == pytest.approx(base, abs=1e-10)
    stretch = torch.diag(torch.tensor([10.0, 1, 1, 1, 1, 1, 1, 0.1], dtype=torch.float64))
    a = q @ stretch  # invertible, not orthogonal
    assert abs(linear_cka(x @ a, y) - base) > 1e-2
    assert procrustes(x @ q, x) == pytest.approx(0.0, abs=1e-9)
    assert procrustes_similarity(x @ q, 2.0 * x) == pytest.approx(1.0, abs=1e-12)
    assert procrustes_similarity(x, y) == pytest.approx(1.0 - procrustes(x, y) / 2, abs=1e-12)
    assert svcca(x @ a, x) == pytest.approx(1.0, abs=1e-9)  # CCA is invariant to invertible maps


def _mean_gap(x, y, batch_size, reference, seeds=range(6)):
    return sum(abs(minibatch_cka(x, y, batch_size=batch_size, seed=s) - reference) for s in seeds) / len(seeds)


def test_minibatch_cka_converges_to_full_batch_unbiased_cka_as_batches_grow():
    x, y = _pair(n=512, d1=16, d2=12, noise=4.0, dtype=torch.float64)
    full = unbiased_cka(x, y)
    assert minibatch_cka(x, y, batch_size=512) == pytest.approx(full, abs=1e-12)
    assert minibatch_cka(x, y, batch_size=5000) == pytest.approx(full, abs=1e-12)  # one batch of all rows
    gaps = [_mean_gap(x, y, b, full) for b in (8, 64, 256)]  # ~0.027, 0.006, 0.001
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 0.005
    assert minibatch_cka(x, y, batch_size=64, seed=1) != minibatch_cka(x, y, batch_size=64, seed=2)
    assert minibatch_cka(x, y, batch_size=64, seed=1) == minibatch_cka(x, y, batch_size=64, seed=1)


def test_minibatch_cka_converges_as_number_of_batches_grows():
    """Fixed batch size: more batches shrink the gap to the full-batch estimate on all rows."""
    x, y = _pair(n=1024, d1=8, d2=8, noise=3.0, dtype=torch.float64)
    full = unbiased_cka(x, y)
    gaps = [_mean_gap(x[:n], y[:n], 32, full, range(4)) for n in (64, 256, 1024)]  # ~0.07, 0.02, 0.007
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 0.02


def _layers(n, widths, seed):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 6, generator=g)
    return [base @ torch.randn(6, w, generator=g) + 0.5 * torch.randn(n, w, generator=g) for w in widths]


@pytest.mark.parametrize(
    ("kind", "n", "block_mb", "options"),
    [
        ("linear", 40, 256.0, {}),  # feature form
        ("linear", 12, 256.0, {}),  # Gram form, one block
        ("linear", 12, 0.0001, {}),  # Gram form, one row per block
        ("linear", 30, 0.003, {}),  # Gram form (wide layers), several uneven blocks
        ("rbf", 20, 256.0, {"sigma_frac": 1.2}),
        ("unbiased", 20, 256.0, {}),
        ("minibatch", 30, 256.0, {"batch_size": 8, "seed": 4}),
        ("svcca", 40, 256.0, {}),
        (pwcca, 40, 256.0, {}),
    ],
)
def test_cka_matrix_equals_pair_loop(kind, n, block_mb, options):
    widths_a, widths_b = ([5, 7, 3], [4, 6]) if n != 30 or kind != "linear" else ([40, 50, 35], [45, 60])
    a, b = _layers(n, widths_a, 0), _layers(n, widths_b, 1)
    a[1] = torch.ones_like(a[1]) * 3.0  # a zero-variance layer
    metric = resolve_metric(kind if callable(kind) or kind in METRICS else f"{kind}_cka")
    for others in (b, None):
        m = cka_matrix(a, others, kind, block_mb=block_mb, **options)
        loop = torch.tensor([[metric(x, y, **options) for y in (others or a)] for x in a], dtype=torch.float64)
        assert m.shape == (3, len(others or a)) and m.dtype == torch.float64
        torch.testing.assert_close(m, loop, atol=1e-10, rtol=0)
        assert (m[1] == 0).all()


def test_cka_matrix_float32_products_and_function_kinds():
    a, b = _layers(12, [30, 20], 0), _layers(12, [25], 1)
    exact = cka_matrix(a, b)
    torch.testing.assert_close(cka_matrix(a, b, dtype=torch.float32), exact, atol=1e-5, rtol=0)
    torch.testing.assert_close(cka_matrix(a, b, kind=linear_cka), exact, atol=0, rtol=0)
    custom = cka_matrix(a, b, kind=lambda x, y: float(x.shape[1] + y.shape[1]))
    assert custom.tolist() == [[55.0], [45.0]]


# ---------------------------------------------------------------- edge cases


@pytest.mark.parametrize("name", METRICS)
def test_zero_variance_layer_gives_zero_similarity(name):
    x, y = _pair(n=30, d1=5, d2=5)
    const = torch.full((30, 5), 7.25)
    zero = torch.zeros(30, 5)
    expected = 2.0 if name == "procrustes" else 0.0
    for a, b in ((const, y), (x, const), (const, const), (zero, y)):
        assert METRICS[name](a, b) == expected


def test_constant_columns_n_lt_d_and_float16():
    x, y = _pair(n=12, d1=30, d2=20, dtype=torch.float64)
    x[:, :5] = 4.0  # constant features
    assert linear_cka(x, y) == pytest.approx(ref_linear_cka(x, y), abs=1e-10)
    assert rbf_cka(x, y) == pytest.approx(ref_rbf_cka(x, y), abs=1e-10)
    h, hy = x.half(), y.half()
    assert linear_cka(h, hy) == pytest.approx(ref_linear_cka(h.double(), hy.double()), abs=1e-10)
    assert linear_cka(h, hy) == pytest.approx(linear_cka(x, y), abs=1e-2)
    for name, fn in METRICS.items():  # every metric on half inputs: its float64 value, not just "in range"
        assert fn(h, hy) == pytest.approx(fn(h.double(), hy.double()), abs=2e-3), name


def test_svcca_n_lt_d_rule_caps_dimensions():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 50, generator=g), torch.randn(20, 50, generator=g)  # independent, n < d
    value = svcca(x, y)
    assert 0.0 < value < 0.9  # uncapped CCA on 19 directions of 20 rows would give exactly 1
    assert svcca(x, y, keep=1.0, rows_per_dim=1.0) == pytest.approx(1.0, abs=1e-9)
    assert svcca(x, x) == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(ValueError, match="keep"):
        svcca(x, y, keep=0.0)


def test_errors_name_the_bad_value():
    x, y = _pair(n=10, d1=3, d2=4)
    for fn in METRICS.values():
        with pytest.raises(ValueError, match=r"\(10, 3\).*\(9, 4\)"):
            fn(x, y[:9])
    with pytest.raises(ValueError, match=r"shape \(n, d\), got shape \(10,\)"):
        linear_cka(x[:, 0], y)
    bad = x.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        linear_cka(bad, y)
    with pytest.raises(ValueError, match="at least 4 rows|>= 4 rows"):
        minibatch_cka(x, y, batch_size=2)
    with pytest.raises(ValueError, match="unknown similarity metric 'cosine'; known: linear_cka"):
        cka_matrix([x], [y], kind="cosine")
    with pytest.raises(ValueError, match="sigma"):
        cka_matrix([x], [y], kind="linear", sigma=1.0)
    with pytest.raises(ValueError, match=r"reps_a\[0\] and reps_b\[1\].*\(10, 3\).*\(9, 4\)"):
        cka_matrix([x], [y, y[:9]])
    with pytest.raises(ValueError, match="non-empty"):
        cka_matrix([], [y])
    with pytest.raises(ValueError, match="dtype"):
        cka_matrix([x], [y], dtype=torch.float16)


def test_inputs_are_never_modified():
    x, y = _pair(n=20, d1=6, d2=5, dtype=torch.float64)
    x0, y0 = x.clone(), y.clone()
    for fn in METRICS.values():
        fn(x, y)
    for kind in ("linear", "rbf", "unbiased", "minibatch"):
        cka_matrix([x, y], [y], kind, block_mb=0.001)
        cka_matrix([x, y], None, kind)
    assert torch.equal(x, x0) and torch.equal(y, y0)
