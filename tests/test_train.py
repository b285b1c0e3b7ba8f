"""The shared training loop: precision, trained loss modules, loss history."""

import pytest
import torch

from kaviz.core.config import ConfigError, DistillConfig, RunConfig
from kaviz.train.distill import distill_objective
from kaviz.train.loop import autocast, ce_loss, resolve_precision, train_loop

CPU = torch.device("cpu")


def test_auto_precision_is_float32_without_a_gpu():
    assert resolve_precision("auto", CPU) == "fp32"
    assert resolve_precision("bf16", CPU) == "bf16"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp8", CPU)


def test_config_rejects_an_unknown_precision():
    with pytest.raises(ConfigError, match="training.precision"):
        RunConfig.from_dict({"training": {"precision": "half"}})


def test_bf16_autocast_runs_the_forward_in_bfloat16(tiny_bert, batch):
    model = tiny_bert()
    with autocast("bf16", CPU):
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    assert logits.dtype == torch.bfloat16
    with autocast("fp32", CPU):
        assert model(**{k: v for k, v in batch.items() if k != "labels"}).logits.dtype == torch.float32


def test_bf16_training_keeps_float32_weights_and_learns(tiny_bert, batch):
    model = tiny_bert()
    before = [p.detach().clone() for p in model.parameters()]
    res = train_loop(model, [batch], steps=6, lr=1e-2, loss_fn=ce_loss, device=CPU, progress=False,
                     precision="bf16", log_every=3)  # fmt: skip
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert [h["step"] for h in res.history] == [3.0, 6.0]
    assert res.history[-1]["loss"] < res.history[0]["loss"]


def test_extra_modules_are_trained_with_the_student(tiny_bert, batch):
    """The distillation projection is optimised together with the student (and wrapped with it)."""
    student, teacher = tiny_bert(seed=0), tiny_bert(seed=1).eval()
    crit, loss_fn = distill_objective(student, teacher, DistillConfig(), CPU)
    w0 = crit.projection.weight.detach().clone()
    t0 = [p.detach().clone() for p in teacher.parameters()]
    res = train_loop(student, [batch], steps=3, lr=1e-2, loss_fn=loss_fn, device=CPU, progress=False,
                     extra_modules=[crit], log_every=1)  # fmt: skip
    assert not torch.equal(w0, crit.projection.weight)
    assert all(torch.equal(a, b) for a, b in zip(t0, teacher.parameters()))  # the teacher is never trained
    assert {"loss", "att", "hid", "pred"} <= set(res.history[0])


def test_length_grouped_batches_cover_every_example_with_less_padding():
    from kaviz.train.loop import make_loader

    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, 60, (640,), generator=g).tolist()
    data = list(range(640))

    def collate(idx):
        return idx

    grouped = list(make_loader(data, collate, 16, shuffle=True, seed=1, lengths=lengths))
    plain = list(make_loader(data, collate, 16, shuffle=True, seed=1))
    assert sorted(i for b in grouped for i in b) == data  # one epoch: each example once
    assert grouped != list(make_loader(data, collate, 16, shuffle=True, seed=2, lengths=lengths))  # seeded order

    def padded(batches):
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    assert padded(grouped) < 0.7 * padded(plain)
    assert grouped == list(make_loader(data, collate, 16, shuffle=True, seed=1, lengths=lengths))  # reproducible
