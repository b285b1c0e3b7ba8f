"""BERT's Adam, as the paper's official code trains its students with it.

From ``transformer/optimization.py`` of github.com/DerronXu/SparseBERT (the pytorch-pretrained-BERT
``BertAdam``): Adam without bias correction, epsilon 1e-6 added to the root of the second moment,
each parameter tensor's gradient clipped to L2 norm ``max_grad_norm`` on its own before the moments
are updated, and weight decay added to the update (decoupled from the moments):

    g <- clip(g, max_grad_norm);  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
    p <- p - lr (m / (sqrt(v) + eps) + weight_decay p)

Without bias correction the first steps are several times larger than torch's AdamW takes (about 3x
at step 1). The learning-rate schedule is left to a ``torch.optim.lr_scheduler`` as for AdamW.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class BertAdam(torch.optim.Optimizer):
    def __init__(
        self,
        params: Iterable,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.01,
        max_grad_norm: float = 1.0,
    ):
        if lr < 0 or eps < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"BertAdam: invalid lr {lr}, eps {eps} or betas {betas}")
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "max_grad_norm": max_grad_norm}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if group["max_grad_norm"] > 0:  # per tensor, in place, as the official code
                    torch.nn.utils.clip_grad_norm_(p, group["max_grad_norm"])
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["next_m"] = torch.zeros_like(p)
                    state["next_v"] = torch.zeros_like(p)
                m, v = state["next_m"], state["next_v"]
                m.mul_(b1).add_(grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
                update = m / (v.sqrt() + group["eps"])
                if group["weight_decay"] > 0.0:
                    update.add_(p, alpha=group["weight_decay"])
                p.add_(update, alpha=-group["lr"])
                state["step"] += 1
        return loss
