"""Options that reproduce the paper's official code (github.com/DerronXu/SparseBERT) where kaviz's
defaults differ: BERT's Adam, no hidden-state projection, the students' own warm-up."""

from __future__ import annotations

import torch
from torch import nn

from kaviz.train.bertadam import BertAdam
from kaviz.train.distill import DistillLoss, hidden_loss


def official_bertadam_step(params, grads, state, lr, wd, b1=0.9, b2=0.999, e=1e-6, max_norm=1.0):
    """The official BertAdam.step, transcribed loop by loop (schedule 'none'): per tensor, clip the
    gradient to max_norm, update the moments, no bias correction, add weight decay to the update."""
    out = []
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        norm = float(torch.sqrt((g.double() ** 2).sum()))
        if norm > max_norm:
            g = g * (max_norm / (norm + 1e-6))  # torch.nn.utils.clip_grad_norm_'s factor
        m, v = state.get(i, (torch.zeros_like(p), torch.zeros_like(p)))
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        state[i] = (m, v)
        update = m / (v.sqrt() + e) + wd[i] * p
        out.append(p - lr * update)
    return out


def test_bertadam_is_the_official_step():
    """Three steps on a weight (decayed, a gradient clipped by its own norm) and a bias (no decay,
    small gradient): the same values as the transcription, and larger first steps than AdamW's."""
    gen = torch.Generator().manual_seed(0)
    w = nn.Parameter(torch.randn(4, 3, generator=gen))
    b = nn.Parameter(torch.randn(3, generator=gen))
    opt = BertAdam([{"params": [w], "weight_decay": 0.01}, {"params": [b], "weight_decay": 0.0}], lr=1e-2)
    ref, state = [w.detach().clone(), b.detach().clone()], {}
    for _ in range(3):
        gw, gb = 5 * torch.randn(4, 3, generator=gen), 0.01 * torch.randn(3, generator=gen)  # |gw| > 1: clipped
        w.grad, b.grad = gw.clone(), gb.clone()
        opt.step()
        ref = official_bertadam_step(ref, [gw, gb], state, 1e-2, [0.01, 0.0])
        assert torch.allclose(w.detach(), ref[0], atol=1e-6) and torch.allclose(b.detach(), ref[1], atol=1e-6)
    p1, p2 = nn.Parameter(torch.zeros(5)), nn.Parameter(torch.zeros(5))
    g = torch.full((5,), 0.1)
    for p, o in (
        (p1, BertAdam([p1], lr=1.0, weight_decay=0.0)),
        (p2, torch.optim.AdamW([p2], lr=1.0, weight_decay=0.0)),
    ):
        p.grad = g.clone()
        o.step()
    assert float(p1.detach().abs().max()) / float(p2.detach().abs().max()) > 3.0  # no bias correction: ~3.16x at step 1


def _outputs(hidden: list[torch.Tensor]):
    class Out:
        attentions = [torch.zeros(1, 1, 2, 2)]
        logits = torch.zeros(1, 2)

    o = Out()
    o.hidden_states = hidden
    return o


def test_no_projection_compares_hidden_states_directly():
    gen = torch.Generator().manual_seed(1)
    s = [torch.randn(2, 3, 8, generator=gen) for _ in range(2)]
    t = [torch.randn(2, 3, 8, generator=gen) for _ in range(2)]
    crit = DistillLoss(1, 1, 8, 8, projection="none")
    assert isinstance(crit.projection, nn.Identity) and not list(crit.parameters())
    want = sum(torch.nn.functional.mse_loss(a, b) for a, b in zip(s, t, strict=True))
    assert torch.allclose(crit(_outputs(s), _outputs(t))["hid"], want)
    assert torch.allclose(hidden_loss(s, t, DistillLoss(1, 1, 8, 8).projection), want)  # identity at start
    narrow = DistillLoss(1, 1, 4, 8, projection="none")  # a narrower student keeps its projection
    assert isinstance(narrow.projection, nn.Linear)


def test_students_take_their_own_warmup_and_optimizer(tmp_path, monkeypatch):
    """A tiny run with pruning.warmup_ratio 0 and pruning.optimizer bertadam: the teacher's training
    keeps training.warmup_ratio and AdamW, every student gets the pruning settings; unset, students
    inherit training.warmup_ratio (what runs made before these fields did)."""
    from kaviz.stages import recipe
    from kaviz.stages.pipeline import Pipeline
    from kaviz.store import RunStore
    from tests.test_pipeline import tiny_config

    calls = []
    real = recipe.train_loop

    def spy(model, loader, **kw):
        calls.append((kw["desc"], kw["warmup_ratio"], kw["optimizer"]))
        return real(model, loader, **kw)

    monkeypatch.setattr(recipe, "train_loop", spy)
    training = {"max_steps": 8, "batch_size": 16, "learning_rate": 1e-3, "num_threads": 1, "warmup_ratio": 0.25}
    pruning = {"max_steps": 6, "learning_rate": 1e-3, "mask_updates": 3, "warmup_ratio": 0.0, "optimizer": "bertadam"}
    cfg = tiny_config(
        methods=["knowledge-aware", "small-dense"],
        sparsities=[0.5],
        training=training,
        pruning=pruning,
        distill={"projection": "none"},
        analysis={"enabled": False},
    )
    run = Pipeline(cfg, RunStore(tmp_path), progress=False).run()
    assert run.status == "complete"
    assert calls[0] == ("fine-tune teacher", 0.25, "adamw")
    assert calls[1:] == [("knowledge-aware 0.5", 0.0, "bertadam"), ("small-dense 0.5", 0.0, "bertadam")]
    calls.clear()
    inherit = tiny_config(name="t2", methods=["gradual-magnitude"], sparsities=[0.5], training=training,
                          analysis={"enabled": False})  # fmt: skip
    Pipeline(inherit, RunStore(tmp_path), progress=False).run()
    assert calls[1] == ("gradual-magnitude 0.5", 0.25, "adamw")
