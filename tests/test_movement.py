"""Movement pruning: the straight-through top-k mask against sorting, masks that follow scores and
not weights, the ``dL/dS = W * dL/dW'`` relation against autograd on a plain copy, a toy regression
whose shrinking weights get pruned, detach to a plain checkpoint, the schedule, N:M, soft movement."""

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from kaviz.core.structure import prunable_linears
from kaviz.train.loop import ce_loss, train_loop
from kaviz.train.movement import (
    MovementPruner,
    MovementScores,
    ThresholdBinarizer,
    TopKBinarizer,
    regularization,
    threshold_keep,
)
from kaviz.train.pruning import check_pattern, cubic_sparsity, nm_mask, sparsity_table, topk_mask

pytestmark = pytest.mark.usefixtures("one_thread")


def _no_dropout(tiny_bert, **kw):
    return tiny_bert(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **kw).eval()


def _random_scores(scores: MovementScores, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for s in scores.scores:
            s.copy_(torch.randn(s.shape, generator=g))


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.77, 0.9, 1.0])
def test_topk_keeps_exactly_the_highest_scores(sparsity):
    scores = torch.randn(7, 12, generator=torch.Generator().manual_seed(3))
    n_keep = 84 - round(sparsity * 84)
    expected = torch.zeros(84, dtype=torch.bool)
    expected[scores.reshape(-1).argsort(descending=True)[:n_keep]] = True  # reference: a full sort
    mask = TopKBinarizer.apply(scores, sparsity, None)
    assert mask.dtype == scores.dtype and set(mask.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(mask.bool(), expected.view(7, 12))
    assert torch.equal(mask.bool(), topk_mask(scores, sparsity))  # same count rule as magnitude masks


def test_binarizers_are_straight_through():
    s = torch.randn(5, 8, requires_grad=True)
    g = torch.randn(5, 8)
    (TopKBinarizer.apply(s, 0.6, None) * g).sum().backward()
    assert torch.equal(s.grad, g)  # the gradient reaches pruned and kept scores alike
    s.grad = None
    (ThresholdBinarizer.apply(s, 0.5, True) * g).sum().backward()
    assert torch.equal(s.grad, g)


def test_mask_follows_scores_not_weights(tiny_bert):
    model = _no_dropout(tiny_bert)
    scores = MovementScores(model)
    weights = [lin.weight.detach().clone() for lin in prunable_linears(model).values()]
    with torch.no_grad():
        for s, w in zip(scores.scores, weights):
            s.copy_(-w.abs())  # scores opposite to the magnitudes: the smallest weights score highest
    scores.attach(model)
    scores.set_sparsity(0.5)
    for mask, w, lin in zip(scores.masks(), weights, prunable_linears(model).values()):
        assert torch.equal(mask, topk_mask(-w.abs(), 0.5))
        assert not (mask & topk_mask(w.abs(), 0.5)).any()  # the exact complement of magnitude pruning
        assert w[mask].abs().max() < w[~mask].abs().min()
        assert torch.equal(lin.weight, w * mask)  # what the linear computes with


@pytest.mark.parametrize("sparsity", [0.0, 0.6])
def test_score_gradient_is_weight_times_grad_of_masked_weight(tiny_bert, batch, sparsity):
    model = _no_dropout(tiny_bert)
    scores = MovementScores(model)
    _random_scores(scores)
    reference = copy.deepcopy(model)  # plain copy: no scores, weights set to W' = W * M by hand
    scores.attach(model)
    scores.set_sparsity(sparsity)
    masks = scores.masks()
    ref_lins = list(prunable_linears(reference).values())
    with torch.no_grad():
        for lin, m in zip(ref_lins, masks):
            lin.weight.mul_(m)
    reference(**batch).loss.backward()
    model(**batch).loss.backward()
    lins = list(prunable_linears(model).values())
    for i, (lin, ref, m) in enumerate(zip(lins, ref_lins, masks)):
        w = lin.parametrizations.weight.original
        grad_w_prime = ref.weight.grad  # dL/dW' by autograd on the plain model
        torch.testing.assert_close(scores.scores[i].grad, w.detach() * grad_w_prime, rtol=1e-5, atol=1e-8)
        torch.testing.assert_close(w.grad, grad_w_prime * m, rtol=1e-5, atol=1e-8)  # masked weight gradient
        assert torch.all(w.grad[~m] == 0)
    if sparsity == 0.0:  # unmasked: the paper's movement term W * dL/dW on the dense model
        assert all(m.all() for m in masks)


def _toy_problem(seed: int = 0):
    """y = x W*^T with W* half zeros. The weights start where W*=0 at +-1 (must shrink to 0), elsewhere
    at +-0.5 with W*'s sign (must grow to +-2): magnitude keeps the wrong half, movement the right one."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.randperm(32, generator=g)[:16]
    support = torch.zeros(32, dtype=torch.bool)
    support[truth] = True
    support = support.view(4, 8)
    sign = torch.where(torch.rand(4, 8, generator=g) < 0.5, -1.0, 1.0)
    w_true = torch.where(support, 2.0 * sign, 0.0)
    w0 = torch.where(support, 0.5 * sign, 1.0 * sign)
    model = nn.Sequential(nn.Linear(8, 4, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(w0)
    x = torch.randn(128, 8, generator=g)
    return model, x, x @ w_true.T, support


def _train_toy(model, x, y, scores, pruner, steps, extra_loss=lambda: 0.0, score_lr=1e-2):
    opt = torch.optim.Adam([{"params": model.parameters(), "lr": 1e-2}, scores.param_group(lr=score_lr)])
    for step in range(1, steps + 1):
        loss = nn.functional.mse_loss(model(x), y) + extra_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
        pruner.step(step)
    with torch.no_grad():
        return float(nn.functional.mse_loss(model(x), y))


def test_toy_regression_prunes_weights_moving_to_zero():
    model, x, y, support = _toy_problem()
    w0 = model[0].weight.detach().clone()
    assert torch.equal(topk_mask(w0.abs(), 0.5), ~support)  # magnitude pruning would keep the wrong half
    scores = MovementScores(model, linears={"0": model[0]}).attach(model)
    pruner = MovementPruner(scores, 0.5, total_steps=300, ramp_end=0.7)
    loss = _train_toy(model, x, y, scores, pruner, 300)
    pruner.finish()
    assert torch.equal(scores.masks()[0], support)
    assert torch.equal(model[0].weight != 0, support)
    assert loss < 1e-2


def test_detach_leaves_plain_linears_whose_zeros_are_the_mask(tiny_bert, batch):
    model = _no_dropout(tiny_bert)
    keys, n_params = set(model.state_dict()), len(list(model.parameters()))
    scores = MovementScores(model).attach(model)
    assert len(list(model.parameters())) == n_params  # scores live beside the model, not in it
    _random_scores(scores)
    scores.set_sparsity(0.7)
    with torch.no_grad():
        logits = model(**batch).logits
    masks = scores.masks()
    assert scores.detach() is model and not scores.attached
    with torch.no_grad():
        after = model(**batch).logits
    torch.testing.assert_close(after, logits, rtol=0, atol=1e-6)
    assert set(model.state_dict()) == keys
    for lin, m, kept in zip(prunable_linears(model).values(), masks, scores.masks()):
        assert type(lin) is nn.Linear and not parametrize.is_parametrized(lin)
        assert torch.equal(lin.weight != 0, m) and torch.equal(kept, m)
    table = sparsity_table(model)
    assert (table.numel - table.nonzero == (0.7 * table.numel).round()).all()


def test_pruner_follows_cubic_schedule_and_reaches_target_exactly(tiny_bert):
    model = tiny_bert()
    scores = MovementScores(model).attach(model)
    _random_scores(scores, seed=1)
    pruner = MovementPruner(scores, 0.9, total_steps=40)
    values = []
    for step in range(1, 41):
        pruner.step(step)
        values.append(scores.sparsity)
        assert scores.sparsity == pytest.approx(cubic_sparsity(step, 40, 0.9))
    assert values[19] == pytest.approx(0.9 * 0.875) and values[-1] == pytest.approx(0.9)
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert pruner.n_updates_done == 40
    pruner.finish()
    assert not scores.attached and pruner.n_updates_done == 40
    for _, row in sparsity_table(model).iterrows():
        assert row.numel - row.nonzero == round(0.9 * row.numel)


def test_pruner_ramp_window_and_update_count(tiny_bert):
    scores = MovementScores(tiny_bert())
    pruner = MovementPruner(scores, 0.8, total_steps=100, n_updates=5, ramp_start=0.1, ramp_end=0.6)
    seen = {}
    for step in range(1, 101):
        pruner.step(step)
        seen[step] = scores.sparsity
    assert seen[10] == 0.0  # held at 0 during the initial warm-up
    assert seen[60] == pytest.approx(0.8) and seen[100] == pytest.approx(0.8)  # held at the target after
    assert seen[30] == pytest.approx(cubic_sparsity(20, 50, 0.8))
    assert pruner.n_updates_done == 5 and len(set(seen.values())) == 6


def test_nm_pattern_movement(tiny_bert, batch):
    model = tiny_bert()
    scores = MovementScores(model, pattern="2:4").attach(model)
    _random_scores(scores, seed=2)
    pruner = MovementPruner(scores, 0.5, total_steps=10)
    for step in range(1, 6):
        pruner.step(step)
    assert 0 < scores.sparsity < 0.5
    for mask, s in zip(scores.masks(), scores.scores):
        assert torch.equal(mask & nm_mask(s, 2, 4), nm_mask(s, 2, 4))  # on the way, only N:M's losers go
        assert (~mask).sum() == round(scores.sparsity * mask.numel())
    model(**batch).loss.backward()  # trains through the pattern mask
    pruner.finish()
    for lin in prunable_linears(model).values():
        counts = (lin.weight != 0).reshape(-1, 4).sum(dim=1)
        assert torch.all(counts == 2)
        check_pattern(lin.weight != 0, 2, 4)
    with pytest.raises(ValueError, match="50% sparse"):
        MovementScores(tiny_bert(), pattern="2:4").set_sparsity(0.6)
    with pytest.raises(ValueError, match="target 0.9"):
        MovementPruner(MovementScores(tiny_bert(), pattern="2:4"), 0.9, total_steps=10)
    with pytest.raises(ValueError, match="multiple of M=5"):
        MovementScores(tiny_bert(), pattern="2:5")


def test_bad_arguments_name_the_value(tiny_bert):
    with pytest.raises(ValueError, match="'l0'"):
        MovementScores(tiny_bert(), method="l0")
    scores = MovementScores(tiny_bert())
    with pytest.raises(ValueError, match="1.5"):
        scores.set_sparsity(1.5)
    with pytest.raises(ValueError, match="set_threshold"):
        MovementScores(tiny_bert(), method="sigmoied_threshold").set_sparsity(0.5)
    with pytest.raises(ValueError, match="not attached"):
        scores.detach()


def test_threshold_mask_and_l1_regularization_known_values():
    s = torch.tensor([[-3.0, -1.0, 0.0, 1.0], [2.0, -0.5, 0.5, -2.0]])
    # sigmoid: 0.047 0.269 0.5 0.731 | 0.881 0.378 0.622 0.119
    assert threshold_keep(s, 0.3).tolist() == [[False, False, True, True], [True, True, True, False]]
    low = torch.arange(-500.0, -100.0).view(20, 20)  # all sigmoids ~0: keep int(0.005 * 400) + 1 = 3
    kept = threshold_keep(low, 0.1)
    assert kept.sum() == 3 and kept.view(-1)[-3:].all()
    model = nn.Sequential(nn.Linear(4, 2), nn.Linear(2, 3))
    scores = MovementScores(model, "sigmoied_threshold", linears={"0": model[0], "1": model[1]})
    with torch.no_grad():
        scores.scores[1].fill_(math.log(3.0))  # sigmoid = 0.75; scores[0] stays at the constant 0 -> 0.5
    reg = regularization(scores)
    assert reg.item() == pytest.approx((0.5 + 0.75) / 2)
    reg.backward()  # d/dS of mean(sigmoid(S)) / 2 matrices = sigmoid'(S) / (2 numel)
    torch.testing.assert_close(scores.scores[0].grad, torch.full((2, 4), 0.25 / 16))
    torch.testing.assert_close(scores.scores[1].grad, torch.full((3, 2), 0.1875 / 12))


def test_soft_movement_toy_prunes_the_shrinking_weights():
    model, x, y, support = _toy_problem()
    scores = MovementScores(model, "sigmoied_threshold", linears={"0": model[0]}).attach(model)
    pruner = MovementPruner(scores, 0.1, total_steps=300, ramp_end=0.7, final_lambda=10.0)
    seen = []

    def penalty():
        seen.append((pruner.regu_lambda, scores.threshold))
        return pruner.regu_lambda * regularization(scores)

    _train_toy(model, x, y, scores, pruner, 300, penalty, score_lr=5e-2)  # tau is absolute: the lr matters
    assert all(lam == pytest.approx(10.0 * tau / 0.1) for lam, tau in seen)
    assert seen[0] == (0.0, 0.0) and seen[-1][1] == pytest.approx(0.1)
    pruner.finish()
    assert torch.equal(model[0].weight != 0, support)


def test_train_loop_trains_scores_as_extra_module(tiny_bert, batch):
    model = tiny_bert()
    scores = MovementScores(model).attach(model)
    pruner = MovementPruner(scores, 0.5, total_steps=6)
    result = train_loop(
        model,
        [batch],
        steps=6,
        lr=1e-3,
        loss_fn=ce_loss,
        device=torch.device("cpu"),
        extra_modules=[scores],
        on_step=pruner.step,
        progress=False,
    )
    assert result.steps == 6 and scores.sparsity == pytest.approx(0.5)
    assert all(s.abs().max() > 0 for s in scores.scores)  # the optimizer moved the scores off their init
    pruner.finish()
    assert all(type(lin) is nn.Linear for lin in prunable_linears(model).values())
    for _, row in sparsity_table(model).iterrows():
        assert row.numel - row.nonzero == round(0.5 * row.numel)


def test_topk_masks_do_not_depend_on_score_lr_without_decay(tiny_bert, batch):
    """Adam's update / lr depends on gradients only, so with zero init and no weight decay the scores
    of two lrs (a power of 2 apart: exact in floating point) are proportional and the masks equal."""

    def run(score_lr: float) -> list[torch.Tensor]:
        model = tiny_bert(seed=3)
        scores = MovementScores(model).attach(model)
        pruner = MovementPruner(scores, 0.8, total_steps=20)
        groups = [{"params": model.parameters(), "lr": 1e-3}, scores.param_group(lr=score_lr)]
        opt = torch.optim.AdamW(groups, weight_decay=0.0)
        torch.manual_seed(0)  # same dropout draws in both runs
        for step in range(1, 21):
            loss = model(**batch).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            pruner.step(step)
        return scores.masks()

    for a, b in zip(run(2**-7), run(2**-12)):
        assert torch.equal(a, b)
