"""Knowledge-distillation losses of the paper (TinyBERT-style), with the layer map.

L = a_att * L_att + a_hid * L_hid + a_pred * L_pred  (paper: 1:1:1)

- L_att: MSE between student and teacher *pre-softmax* attention scores of every mapped layer,
  with masked positions (scores <= -100) set to 0 first.
- L_hid: MSE between projected student hidden states and teacher hidden states for the embedding
  output and every mapped layer; the projection is a learnable ``Linear(d_s, d_t)`` (initialised
  to the identity when the widths match).
- L_pred: soft cross-entropy between temperature-scaled logits, computed as KL(p_t || p_s), which
  differs from the paper's soft CE only by the teacher's entropy, a constant: same gradients, and
  0 when student == teacher. For regression, MSE to the gold labels (as the official code).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from kaviz.core.config import DistillConfig
from kaviz.core.structure import dims

MASKED_SCORE = -100.0


def layer_map(n_student: int, n_teacher: int) -> list[int]:
    """Teacher layer (1-based, 0 = embeddings) for each student layer 1..n_student, uniform stride.

    12 -> 12 maps one to one; 4 -> 12 maps to 3, 6, 9, 12 (TinyBERT).
    """
    if n_student < 1 or n_teacher < 1:
        raise ValueError(f"layer counts must be >= 1, got student={n_student}, teacher={n_teacher}")
    if n_student > n_teacher:
        raise ValueError(f"student has more layers ({n_student}) than the teacher ({n_teacher})")
    return [round((j + 1) * n_teacher / n_student) for j in range(n_student)]


def attention_loss(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """Sum over layers of MSE between pre-softmax scores ``(B, H, T, T)``, masked entries zeroed."""
    losses = []
    for s, t in zip(student, teacher, strict=True):
        s = torch.where(s <= MASKED_SCORE, torch.zeros_like(s), s)
        t = torch.where(t <= MASKED_SCORE, torch.zeros_like(t), t)
        losses.append(F.mse_loss(s, t))
    return torch.stack(losses).sum()


def hidden_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], projection: nn.Module) -> torch.Tensor:
    """Sum over mapped layers of MSE(projection(h_s), h_t); states ``(B, T, d)``."""
    losses = [F.mse_loss(projection(s), t) for s, t in zip(student, teacher, strict=True)]
    return torch.stack(losses).sum()


def prediction_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    labels: torch.Tensor | None = None,
    regression: bool = False,
) -> torch.Tensor:
    """Soft cross-entropy (as KL) on ``(B, C)`` logits at temperature T; MSE to gold for regression."""
    if regression:
        if labels is None:
            return F.mse_loss(student_logits.view(-1), teacher_logits.view(-1))
        return F.mse_loss(student_logits.view(-1), labels.view(-1).to(student_logits.dtype))
    log_ps = F.log_softmax(student_logits / temperature, dim=-1)
    log_pt = F.log_softmax(teacher_logits / temperature, dim=-1)
    return (log_pt.exp() * (log_pt - log_ps)).sum(-1).mean()


class DistillLoss(nn.Module):
    """Computes the three losses for one batch from student and teacher model outputs.

    Both outputs need ``hidden_states`` (embeddings + every layer), ``attentions`` (pre-softmax
    scores, see :mod:`kaviz.train.models`) and ``logits``. The projection's parameters must be given to
    the optimizer with the student's.
    """

    def __init__(
        self,
        n_student_layers: int,
        n_teacher_layers: int,
        d_student: int,
        d_teacher: int,
        temperature: float = 1.0,
        alpha_att: float = 1.0,
        alpha_hid: float = 1.0,
        alpha_pred: float = 1.0,
        regression: bool = False,
        projection: str = "linear",
    ):
        super().__init__()
        self.map = layer_map(n_student_layers, n_teacher_layers)
        self.projection: nn.Module
        if projection == "none" and d_student == d_teacher:  # the paper's code when pruning: states as they are
            self.projection = nn.Identity()
        else:
            self.projection = nn.Linear(d_student, d_teacher)
            with torch.no_grad():
                nn.init.zeros_(self.projection.bias)
                if d_student == d_teacher:
                    self.projection.weight.copy_(torch.eye(d_teacher))
        self.temperature, self.regression = temperature, regression
        self.alpha_att, self.alpha_hid, self.alpha_pred = alpha_att, alpha_hid, alpha_pred

    def forward(self, student_out, teacher_out, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        t_att = [teacher_out.attentions[j - 1] for j in self.map]  # attentions[i] is layer i+1
        t_hid = [teacher_out.hidden_states[0]] + [teacher_out.hidden_states[j] for j in self.map]
        att = attention_loss(list(student_out.attentions), t_att)
        hid = hidden_loss(list(student_out.hidden_states), t_hid, self.projection)
        pred = prediction_loss(student_out.logits, teacher_out.logits, self.temperature, labels, self.regression)
        total = self.alpha_att * att + self.alpha_hid * hid + self.alpha_pred * pred
        return {"loss": total, "att": att.detach(), "hid": hid.detach(), "pred": pred.detach()}


def distill_objective(
    student: nn.Module, teacher: nn.Module, cfg: DistillConfig, device: torch.device, regression: bool = False
) -> tuple[DistillLoss, Callable]:
    """The distillation criterion (train its projection with the student) and a ``loss_fn`` that
    runs the teacher once per batch under ``no_grad`` and the student with every layer's output."""
    ds, dt = dims(student), dims(teacher)
    crit = DistillLoss(
        ds["num_layers"],
        dt["num_layers"],
        ds["hidden"],
        dt["hidden"],
        cfg.temperature,
        cfg.alpha_att,
        cfg.alpha_hid,
        cfg.alpha_pred,
        regression=regression,
        projection=cfg.projection,
    ).to(device)
    teacher.to(device).eval()

    def loss_fn(model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        labels = batch.pop("labels")
        with torch.no_grad():
            t_out = teacher(**batch, output_hidden_states=True, output_attentions=True)
        s_out = model(**batch, output_hidden_states=True, output_attentions=True)
        batch["labels"] = labels
        return crit(s_out, t_out, labels)

    return crit, loss_fn
