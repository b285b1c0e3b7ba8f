"""Wanda and SparseGPT (kaviz.train.oneshot) against slow independent references on tiny layers
(float64), and the sequential model-level passes on a tiny BERT."""

from __future__ import annotations

import copy

import pytest
import torch

from kaviz.core.names import parse_pattern
from kaviz.core.structure import describe, prunable_linears
from kaviz.train.oneshot import (
    OneShotError,
    calibration_stats,
    prune_sparsegpt,
    prune_wanda,
    sparsegpt_prune,
    wanda_mask,
)
from kaviz.train.pruning import prune_magnitude, sparsity_table, topk_mask

pytestmark = pytest.mark.usefixtures("one_thread")
METHODS = {"wanda": prune_wanda, "sparsegpt": prune_sparsegpt}


def _layer(rows: int = 8, cols: int = 16, samples: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """W (rows, cols) and inputs X (samples, cols), float64: correlated features whose scales
    differ by orders of magnitude (the outlier features that make input-aware pruning pay)."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(rows, cols, generator=g, dtype=torch.float64)
    mix = torch.eye(cols, dtype=torch.float64) + 0.3 * torch.randn(cols, cols, generator=g, dtype=torch.float64)
    scale = torch.exp(1.5 * torch.randn(cols, generator=g, dtype=torch.float64))
    X = (torch.randn(samples, cols, generator=g, dtype=torch.float64) @ mix) * scale  # (samples, cols)
    return W, X


def _hessian(X: torch.Tensor) -> torch.Tensor:
    return 2.0 / X.shape[0] * X.T @ X  # (cols, cols)


def _recon_error(W: torch.Tensor, W_hat: torch.Tensor, X: torch.Tensor) -> float:
    return float(torch.linalg.norm(X @ W.T - X @ W_hat.T))


def _naive_wanda(W: torch.Tensor, norm: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Per row: score |W_ij| * norm_j, sort in Python, drop the round(s * cols) lowest."""
    keep = torch.ones_like(W, dtype=torch.bool)
    k = round(sparsity * W.shape[1])
    for r in range(W.shape[0]):
        order = sorted(range(W.shape[1]), key=lambda j: abs(float(W[r, j])) * float(norm[j]))
        for j in order[:k]:
            keep[r, j] = False
    return keep


def _obs_reference(
    W: torch.Tensor, H: torch.Tensor, sparsity: float, pattern: str | None, mask_every: int, percdamp: float = 0.01
) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT's Algorithm 1 as textbook OBS, no lazy blocks, no Cholesky: column j is pruned
    with the explicit inverse of the (damped) Hessian of the columns not yet visited, H[j:, j:]^-1,
    and every pruned weight w_rj moves its row by -w_rj / [H^-1]_00 * H^-1[0, :]. Masks are chosen
    every ``mask_every`` columns (unstructured: lowest w^2/[H^-1]_jj of the block, Python sort) or
    every M columns (N:M: per row, the N highest of the group)."""
    W = W.clone()
    rows, cols = W.shape
    Hd = H + percdamp * torch.diag(H).mean() * torch.eye(cols, dtype=H.dtype)
    Hinv = [torch.linalg.inv(Hd[j:, j:]) for j in range(cols)]
    for j in range(cols - 1):  # the OBS downdate gives the same sequence of inverses
        Hi = Hinv[j]
        down = (Hi - Hi[:, :1] @ Hi[:1, :] / Hi[0, 0])[1:, 1:]
        assert torch.allclose(down, Hinv[j + 1], rtol=1e-8, atol=1e-10)
    d = torch.tensor([float(Hi[0, 0]) for Hi in Hinv], dtype=W.dtype)  # [H_F^-1]_jj
    keep = torch.ones_like(W, dtype=torch.bool)
    nm = parse_pattern(pattern)
    for j in range(cols):
        if nm is None and j % mask_every == 0:
            block = range(j, min(j + mask_every, cols))
            cells = sorted((float(W[r, c] ** 2 / d[c]), r, c) for r in range(rows) for c in block)
            for _, r, c in cells[: round(sparsity * rows * len(block))]:
                keep[r, c] = False
        if nm is not None and j % nm[1] == 0:
            for r in range(rows):
                group = sorted(range(j, j + nm[1]), key=lambda c: float(W[r, c] ** 2 / d[c]))
                for c in group[: nm[1] - nm[0]]:
                    keep[r, c] = False
        for r in range(rows):
            if not keep[r, j]:
                W[r, j:] -= W[r, j] / d[j] * Hinv[j][0, :]
                W[r, j] = 0.0
    return W, keep


def _batches(seed: int, n: int = 4, size: int = 8, length: int = 16, labels: bool = False) -> list[dict]:
    """Random token batches with random right padding (every sequence at least half full)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(5, 100, (size, length), generator=g)
        lens = torch.randint(length // 2, length + 1, (size,), generator=g)
        am = (torch.arange(length).unsqueeze(0) < lens.unsqueeze(1)).long()  # (size, length)
        batch = {"input_ids": ids, "attention_mask": am}
        out.append(batch | {"labels": torch.zeros(size, dtype=torch.long)} if labels else batch)
    return out


@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.75])
def test_wanda_mask_equals_naive_per_row_sort(sparsity):
    W, X = _layer(rows=6, cols=12)
    norm = torch.linalg.norm(X, dim=0)  # (cols,)
    assert torch.equal(wanda_mask(W, norm, sparsity), _naive_wanda(W, norm, sparsity))


@pytest.mark.parametrize(
    "sparsity, pattern, blocksize",
    [
        (0.5, None, 16),
        (0.7, None, 16),
        (0.5, None, 4),
        (0.6, None, 5),
        (0.5, "2:4", 16),
        (0.5, "2:4", 4),
        (0.75, "1:4", 8),
    ],
)
def test_sparsegpt_equals_textbook_obs(sparsity, pattern, blocksize):
    """Blocked Cholesky SparseGPT == column-by-column OBS with explicit inverses; blocksize 16 is
    one block, smaller ones exercise the lazy updates between blocks (mask chosen per block in both)."""
    W, X = _layer(rows=8, cols=16, samples=64)
    H = _hessian(X)
    new, keep = sparsegpt_prune(W, H, sparsity, pattern, blocksize=blocksize)
    ref_W, ref_keep = _obs_reference(W, H, sparsity, pattern, mask_every=blocksize)
    assert torch.equal(keep, ref_keep)
    torch.testing.assert_close(new, ref_W, rtol=0, atol=1e-8)
    assert torch.equal(new != 0, keep)


def test_sparsegpt_float32_matches_float64():
    W, X = _layer(rows=8, cols=16, samples=64)
    new64, keep64 = sparsegpt_prune(W, _hessian(X), 0.5)
    new32, keep32 = sparsegpt_prune(W.float(), _hessian(X).float(), 0.5)
    assert new32.dtype == torch.float32 and torch.equal(keep32, keep64)
    torch.testing.assert_close(new32.double(), new64, rtol=1e-4, atol=1e-4)


def test_sparsegpt_inputs_untouched_and_dead_inputs_zeroed():
    W, X = _layer(rows=8, cols=16)
    X[:, 3] = 0.0  # an input that is always zero: H_33 = 0
    H = _hessian(X)
    W0, H0 = W.clone(), H.clone()
    new, keep = sparsegpt_prune(W, H, 0.5)
    assert torch.equal(W, W0) and torch.equal(H, H0)
    assert torch.isfinite(new).all() and not keep[:, 3].any() and (new[:, 3] == 0).all()


def test_sparsegpt_small_blocks_valid_and_better_than_magnitude():
    W, X = _layer(rows=16, cols=64, samples=256)
    new, keep = sparsegpt_prune(W, _hessian(X), 0.5, blocksize=16)
    assert int((~keep).sum()) == W.numel() // 2
    for b in range(0, 64, 16):  # the mask is chosen per block of 16 columns, each at 50%
        assert int((~keep[:, b : b + 16]).sum()) == 16 * 8
    assert torch.equal(new != 0, keep)
    magnitude = W * topk_mask(W.abs(), 0.5)
    assert _recon_error(W, new, X) < 0.5 * _recon_error(W, magnitude, X)


@pytest.mark.parametrize("sparsity", [0.5, 0.7])
def test_reconstruction_error_below_magnitude(sparsity):
    """||XW^T - XW_hat^T||: SparseGPT < Wanda < magnitude at the same sparsity."""
    W, X = _layer(rows=32, cols=64, samples=512, seed=3)
    magnitude = W * topk_mask(W.abs(), sparsity)
    wanda = W * wanda_mask(W, torch.linalg.norm(X, dim=0), sparsity)
    sgpt, _ = sparsegpt_prune(W, _hessian(X), sparsity)
    errors = [_recon_error(W, w_hat, X) for w_hat in (sgpt, wanda, magnitude)]
    assert errors == sorted(errors) and errors[0] < 0.7 * errors[2], errors


def test_two_four_keeps_two_of_every_four():
    W, X = _layer(rows=8, cols=32, samples=128)
    masks = {
        "wanda": wanda_mask(W, torch.linalg.norm(X, dim=0), 0.5, "2:4"),
        "sparsegpt": sparsegpt_prune(W, _hessian(X), 0.5, "2:4", blocksize=8)[1],
    }
    for name, keep in masks.items():
        assert (keep.reshape(-1, 4).sum(dim=1) == 2).all(), name


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("sparsity", [0.5, 0.7])
def test_model_sparsity_exact_and_only_encoder_linears_change(tiny_bert, method, sparsity):
    model = tiny_bert()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    calls: list[str] = []
    masks = METHODS[method](model, _batches(1, labels=True), sparsity, progress=calls.append)
    assert len(calls) == 2  # once per encoder layer
    linears = prunable_linears(model)
    for _, row in sparsity_table(model).iterrows():
        rows, cols = linears[row.module].weight.shape
        # Wanda compares within a row; SparseGPT within a block of columns (one block here)
        pruned = rows * round(sparsity * cols) if method == "wanda" else round(sparsity * rows * cols)
        assert row.numel - row.nonzero == pruned, row.module
    for (name, lin), keep in zip(linears.items(), masks.masks):
        assert torch.equal(keep, lin.weight != 0)
        kept_same = torch.equal(lin.weight[keep], before[f"{name}.weight"][keep])
        assert kept_same == (method == "wanda"), name  # SparseGPT updates the weights it keeps
    weights = {f"{n}.weight" for n in linears}
    for n, p in model.named_parameters():
        if n not in weights:  # embeddings, biases, LayerNorm, pooler, classifier
            assert torch.equal(p, before[n]), n


@pytest.mark.parametrize("method", list(METHODS))
def test_model_two_four(tiny_bert, method):
    model = tiny_bert()
    masks = METHODS[method](model, _batches(1), 0.5, "2:4")
    assert masks.pattern == (2, 4)
    for lin in prunable_linears(model).values():
        assert ((lin.weight != 0).reshape(-1, 4).sum(dim=1) == 2).all()


@pytest.mark.parametrize("method, kind", [("wanda", "norm"), ("sparsegpt", "hessian")])
def test_statistics_are_sequential(tiny_bert, method, kind):
    """Layer 1's statistics are those of the model whose layer 0 is already pruned, not the dense one's."""
    model = tiny_bert()
    dense = copy.deepcopy(model)
    cal = _batches(1)
    used: dict[str, torch.Tensor] = {}
    METHODS[method](model, cal, 0.5, stats=used)
    layer0_pruned = copy.deepcopy(dense)
    src = prunable_linears(model)
    for name, lin in prunable_linears(layer0_pruned).items():
        if describe(name, model)[0] == 0:
            lin.weight.data.copy_(src[name].weight)
    dense_stats = calibration_stats(dense, cal, 0, kind) | calibration_stats(dense, cal, 1, kind)
    expected = calibration_stats(layer0_pruned, cal, 1, kind)
    assert set(used) == set(src)
    for name, got in used.items():
        if describe(name, model)[0] == 0:
            torch.testing.assert_close(got, dense_stats[name])
        else:
            torch.testing.assert_close(got, expected[name])
            assert not torch.allclose(got, dense_stats[name], rtol=1e-3, atol=0), name


@pytest.mark.parametrize("kind", ["norm", "hessian"])
def test_padding_tokens_are_left_out(tiny_bert, kind):
    """A padded batch gives the statistics of its sequences run one by one without padding."""
    model = tiny_bert()
    padded = _batches(2, n=1, size=4)
    lens = padded[0]["attention_mask"].sum(dim=1).tolist()
    assert min(lens) < 16
    alone = [{k: v[i : i + 1, :n] for k, v in padded[0].items()} for i, n in enumerate(lens)]
    for layer in (0, 1):
        got, ref = calibration_stats(model, padded, layer, kind), calibration_stats(model, alone, layer, kind)
        for name in got:
            torch.testing.assert_close(got[name], ref[name], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_logits_closer_to_dense_than_magnitude(tiny_bert, seed):
    """At 50%, mean squared logit change on held-out random inputs: both below one-shot magnitude.
    Weights at std 0.2 and a 16-way head: the default std 0.02 leaves logits near constant (1e-9)."""
    dense = tiny_bert(seed=seed, initializer_range=0.2, num_labels=16).eval()
    cal, held_out = _batches(1), _batches(2, n=16)

    def change(prune) -> float:
        model = copy.deepcopy(dense)
        prune(model)
        with torch.no_grad():
            return sum(float(((model(**b).logits - dense(**b).logits) ** 2).mean()) for b in held_out) / len(held_out)

    magnitude = change(lambda m: prune_magnitude(m, 0.5))
    assert change(lambda m: prune_wanda(m, cal, 0.5)) < 0.8 * magnitude
    assert change(lambda m: prune_sparsegpt(m, cal, 0.5)) < 0.5 * magnitude


def test_clear_errors(tiny_bert):
    model = tiny_bert()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cal = _batches(1, n=1)
    for fn in METHODS.values():
        for bad in (1.0, -0.1):
            with pytest.raises(OneShotError, match=r"sparsity must be in \[0, 1\)"):
                fn(model, cal, bad)
        with pytest.raises(ValueError, match="5 does not divide"):
            fn(model, cal, 0.6, "2:5")
        with pytest.raises(OneShotError, match="2:4 pattern is 50% sparse; sparsity 0.7"):
            fn(model, cal, 0.7, "2:4")
        with pytest.raises(OneShotError, match="at least one calibration batch"):
            fn(model, [], 0.5)
        all_padding = [{**cal[0], "attention_mask": torch.zeros_like(cal[0]["attention_mask"])}]
        with pytest.raises(OneShotError, match="no tokens outside padding"):
            fn(copy.deepcopy(model), all_padding, 0.5)
    with pytest.raises(OneShotError, match="multiple of the pattern's M=4"):
        prune_sparsegpt(model, cal, 0.5, "2:4", blocksize=6)
    for n, p in model.named_parameters():  # every check ran before any weight changed
        assert torch.equal(p, before[n]), n
    with pytest.raises(OneShotError, match="not positive definite"):
        sparsegpt_prune(torch.ones(2, 2), torch.tensor([[1.0, 2.0], [2.0, 1.0]]), 0.5)
    with pytest.raises(OneShotError, match=r"weight \(out, in\) and H \(in, in\)"):
        sparsegpt_prune(torch.ones(2, 3), torch.eye(2), 0.5)
