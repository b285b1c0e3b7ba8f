import pytest
import torch

from kaviz.core.structure import prunable_linears
from kaviz.train.pruning import (
    CubicPruner,
    MaskSet,
    cubic_sparsity,
    prune_magnitude,
    sparsity_summary,
    sparsity_table,
    topk_mask,
)


def test_cubic_schedule_start_middle_end():
    assert cubic_sparsity(0, 100, 0.9) == 0.0
    assert cubic_sparsity(100, 100, 0.9) == pytest.approx(0.9)
    # s_t = s_f (1 - (1 - t/T)^3): at t = T/2, 0.9 * (1 - 1/8)
    assert cubic_sparsity(50, 100, 0.9) == pytest.approx(0.9 * 0.875)
    assert cubic_sparsity(150, 100, 0.9) == pytest.approx(0.9)  # clipped after the ramp
    values = [cubic_sparsity(t, 100, 0.9) for t in range(101)]
    assert all(b >= a for a, b in zip(values, values[1:]))


def test_topk_mask_keeps_largest():
    w = torch.tensor([[0.1, -5.0, 0.3], [2.0, -0.05, 1.0]])
    m = topk_mask(w.abs(), 0.5)
    assert m.tolist() == [[False, True, False], [True, False, True]]
    with pytest.raises(ValueError, match="sparsity"):
        topk_mask(w.abs(), 1.5)


@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.9, 0.95])
def test_per_matrix_sparsity_exact(tiny_bert, sparsity):
    model = tiny_bert()
    prune_magnitude(model, sparsity)
    table = sparsity_table(model)
    assert len(table) == 2 * 6  # 2 layers x Q,K,V,O,FFN-in,FFN-out
    for _, row in table.iterrows():
        assert row.numel - row.nonzero == round(sparsity * row.numel)
    s = sparsity_summary(model)
    assert s["encoder_sparsity"] == pytest.approx(sparsity, abs=1e-3)


def test_only_encoder_linears_pruned(tiny_bert):
    model = tiny_bert()
    before = {n: p.clone() for n, p in model.named_parameters()}
    prune_magnitude(model, 0.9)
    pruned = {f"{n}.weight" for n in prunable_linears(model)}
    for n, p in model.named_parameters():
        if n in pruned:
            assert (p == 0).float().mean() > 0.85
        else:  # embeddings, biases, LayerNorm, pooler, classifier stay dense and unchanged
            assert torch.equal(p, before[n]), n


def test_magnitude_picks_smallest_per_matrix(tiny_bert):
    model = tiny_bert()
    lin = next(iter(prunable_linears(model).values()))
    w = lin.weight.detach().clone()
    prune_magnitude(model, 0.5)
    kept = lin.weight != 0
    assert w[kept].abs().min() >= w[~kept].abs().max()


def test_masked_weights_stay_zero_through_optimizer_steps(tiny_bert, batch):
    model = tiny_bert()
    masks = prune_magnitude(model, 0.8)
    zero_before = [(w == 0) for w in masks.weights]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    for _ in range(5):
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        masks.apply()
    for z, w in zip(zero_before, masks.weights):
        assert torch.all(w[z] == 0)


def test_gradual_pruner_reaches_target_and_never_revives(tiny_bert, batch):
    model = tiny_bert()
    ms = MaskSet(model)
    pruner = CubicPruner(ms, 0.9, total_steps=40, n_updates=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    prev = [m.clone() for m in ms.masks]
    for step in range(1, 41):
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        pruner.step(step)
        for p, m in zip(prev, ms.masks):
            assert not torch.any(m & ~p), "a pruned weight came back"
        prev = [m.clone() for m in ms.masks]
    pruner.finish()
    assert pruner.n_updates_done == 10
    assert sparsity_summary(model)["encoder_sparsity"] == pytest.approx(0.9, abs=1e-3)


def test_masks_from_zeros(tiny_bert):
    model = tiny_bert()
    prune_magnitude(model, 0.7)
    ms = MaskSet.from_zeros(model)
    assert ms.sparsity == pytest.approx(0.7, abs=1e-3)
    with pytest.raises(ValueError, match="only grow"):
        ms.update(0.5)


def test_masks_follow_the_model_to_another_device(tiny_bert):
    """Masks made while the model is on one device keep working after the model moves (the
    training loop moves it to the GPU after the methods made their masks); 'meta' stands in for it."""
    from kaviz.train.pruning import MaskSet

    model = tiny_bert()
    ms = MaskSet(model)
    ms.update(0.5)
    model.to("meta")
    ms.apply()
    ms.update(0.75)
    assert all(m.device.type == "meta" for m in ms.masks)
    assert ms.sparsity == 0.75


# ----- N:M patterns -------------------------------------------------------------------------------


def test_nm_mask_keeps_exactly_n_of_every_m_and_the_largest():
    from kaviz.train.pruning import nm_mask

    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 16, generator=g)
    for n, m in ((2, 4), (1, 4), (4, 8), (1, 2)):
        mask = nm_mask(w.abs(), n, m)
        assert (mask.reshape(-1, m).sum(1) == n).all()
        groups, kept = w.abs().reshape(-1, m), mask.reshape(-1, m)
        for gr, k in zip(groups, kept):  # textbook: the n largest of each group
            assert set(torch.argsort(gr, descending=True)[:n].tolist()) == set(k.nonzero().flatten().tolist())
    with pytest.raises(ValueError, match="does not divide"):
        nm_mask(torch.ones(2, 6), 2, 4)


def test_parse_pattern():
    from kaviz.core.names import parse_pattern

    assert parse_pattern("2:4") == (2, 4) and parse_pattern(None) is None
    for bad in ("4:2", "2:2", "0:4", "2-4", "a:b", "2:4:8"):
        with pytest.raises(ValueError):
            parse_pattern(bad)


def test_gradual_nm_masks_reach_the_pattern_and_never_regrow(tiny_bert):
    from kaviz.train.pruning import MaskSet

    model = tiny_bert(layers=2, hidden=32, heads=4)
    ms = MaskSet(model, pattern="2:4")
    seen = [m.clone() for m in ms.masks]
    for s in (0.1, 0.3, 0.45, 0.5):
        ms.update(s)
        for before, now in zip(seen, ms.masks):
            assert not (now & ~before).any()  # nothing returns
        seen = [m.clone() for m in ms.masks]
    for mask, w in zip(ms.masks, ms.weights):
        assert (mask.reshape(-1, 4).sum(1) == 2).all() and torch.equal(w != 0, mask)
    with pytest.raises(ValueError, match="50% sparse; 60% asked"):
        ms.update(0.6)
    one = MaskSet(tiny_bert(layers=2, hidden=32, heads=4), pattern="1:4")
    one.update(0.75)
    assert all((m.reshape(-1, 4).sum(1) == 1).all() for m in one.masks)
