import copy

import pytest
import torch

from kaviz.train.distill import DistillLoss, attention_loss, hidden_loss, layer_map, prediction_loss


def _outputs(model, batch):
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    return model(**inputs, output_hidden_states=True, output_attentions=True)


def test_layer_map():
    assert layer_map(12, 12) == list(range(1, 13))
    assert layer_map(4, 12) == [3, 6, 9, 12]
    assert layer_map(1, 6) == [6]
    with pytest.raises(ValueError, match="more layers"):
        layer_map(7, 6)


def test_attention_outputs_are_pre_softmax_scores(tiny_bert, batch):
    model = tiny_bert().eval()
    out = _outputs(model, batch)
    scores = out.attentions[0]  # (B, H, T, T)
    assert scores.shape == (3, 4, 9, 9)
    assert (scores[2, :, :, 4:] < -1e30).all()  # padded keys carry the additive mask
    probs = scores.softmax(-1)
    model.set_attn_implementation("eager")
    eager = _outputs(model, batch)
    torch.testing.assert_close(probs, eager.attentions[0])
    torch.testing.assert_close(out.logits, eager.logits)


@pytest.mark.parametrize("regression", [False, True])
def test_each_loss_zero_when_student_equals_teacher(tiny_bert, batch, regression):
    teacher = tiny_bert(num_labels=1 if regression else 2).eval()
    student = copy.deepcopy(teacher).eval()
    t, s = _outputs(teacher, batch), _outputs(student, batch)
    crit = DistillLoss(2, 2, 32, 32, temperature=2.0, regression=regression)
    labels = t.logits.view(-1).detach() if regression else None  # regression: MSE to gold; gold = prediction here
    losses = crit(s, t, labels)
    for k in ("att", "hid", "pred", "loss"):
        assert losses[k].item() == pytest.approx(0.0, abs=1e-6), k


def test_each_loss_positive_when_different(tiny_bert, batch):
    teacher, student = tiny_bert(seed=0).eval(), tiny_bert(seed=1).eval()
    t, s = _outputs(teacher, batch), _outputs(student, batch)
    losses = DistillLoss(2, 2, 32, 32)(s, t)
    for k in ("att", "hid", "pred"):
        assert losses[k].item() > 0, k
    assert losses["loss"].item() == pytest.approx(sum(losses[k].item() for k in ("att", "hid", "pred")), rel=1e-5)


def test_soft_ce_equals_kl_plus_teacher_entropy():
    torch.manual_seed(0)
    s, t = torch.randn(5, 3), torch.randn(5, 3)
    T = 2.0
    pt = (t / T).softmax(-1)
    soft_ce = -(pt * (s / T).log_softmax(-1)).sum(-1).mean()  # the paper's soft cross-entropy
    entropy = -(pt * pt.log()).sum(-1).mean()
    assert prediction_loss(s, t, T).item() == pytest.approx((soft_ce - entropy).item(), rel=1e-5)


def test_masked_scores_zeroed_in_attention_loss():
    s = torch.zeros(1, 1, 2, 2)
    t = torch.zeros(1, 1, 2, 2)
    s[..., 1] = -1e4
    t[..., 1] = torch.finfo(torch.float32).min
    assert attention_loss([s], [t]).item() == 0.0


def test_projection_maps_widths_and_is_learnable(tiny_bert, batch):
    teacher, student = tiny_bert(hidden=32).eval(), tiny_bert(hidden=16, heads=4).eval()
    crit = DistillLoss(2, 2, 16, 32)
    losses = crit(_outputs(student, batch), _outputs(teacher, batch))
    losses["loss"].backward()
    assert crit.projection.weight.grad is not None and crit.projection.weight.shape == (32, 16)
    h = [torch.ones(2, 3, 16)]
    assert hidden_loss(h, [torch.zeros(2, 3, 32)], torch.nn.Linear(16, 32)).item() > 0
