"""Why a pruned student keeps its teacher's score or does not: the causes a run can measure, one row
per pruned (method, sparsity, budget).

- **Teacher quality**: how far the teacher stands above the best constant answer (``headroom``). A
  teacher a few points above "always class 1" leaves its students little to learn from it.
- **Capacity**: the encoder weights a student keeps (``nonzero_encoder``). 95% sparsity keeps
  0.53M of MiniLM-L6's 10.6M encoder weights, but 4.2M of BERT-base's 85M.
- **Loss balance**: how the distillation loss splits between its attention, hidden-state and
  prediction terms (``share_att``, ``share_hid``, ``share_pred``), weighted as in training
  (``distill.alpha_*``), averaged over the last part of training. The prediction term is logged as
  KL divergence (the paper's soft cross-entropy less the teacher's entropy: the same gradient). A
  loss's size is not its pull: :func:`gradient_shares` measures each term's gradient on a trained
  student's kept weights, i.e. which term steers it.
- **Budget**: training examples the student saw (``examples_seen``).

``gain_kept`` puts students of different tasks on one scale: the fraction of the teacher's gain over
the constant answer a student keeps (1 at the teacher's score, 0 at the constant answer).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from torch import nn

from kaviz.core.config import DistillConfig
from kaviz.core.structure import prunable_linears
from kaviz.train.distill import distill_objective

#: The distillation loss's terms as :class:`kaviz.train.distill.DistillLoss` logs them, and the
#: ``distill`` config weights they are summed with.
LOSS_TERMS = {"att": "alpha_att", "hid": "alpha_hid", "pred": "alpha_pred"}
#: Loss shares are averaged over this last fraction of a unit's logged steps.
TAIL = 0.2

COLUMNS = [
    "task", "method", "sparsity", "budget", "metric", "seeds", "mean", "teacher", "constant", "headroom",
    "gain_kept", "nonzero_encoder", "encoder", "examples_seen",
    *(f"share_{t}" for t in LOSS_TERMS), *(f"grad_{t}" for t in LOSS_TERMS),
]  # fmt: skip
#: The unit table :func:`store_gradient_shares` writes (term, norm, share).
GRADIENTS = "gradient_shares"


def loss_shares(history: pd.DataFrame, weights: dict[str, float] | None = None, tail: float = TAIL) -> dict[str, float]:
    """Each loss term's share of the weighted sum of the terms, averaged over the last ``tail``
    fraction (at least one) of the logged steps; ``weights``: term -> weight (1 where missing).
    ``{}`` when the history logs none of :data:`LOSS_TERMS` (a cross-entropy run)."""
    if not 0 < tail <= 1:
        raise ValueError(f"tail must lie in (0, 1], got {tail}")
    terms = [t for t in LOSS_TERMS if t in history.columns]
    h = history.dropna(subset=terms).sort_values("step") if terms else history.iloc[:0]
    if h.empty:
        return {}
    last = h.iloc[-max(1, math.ceil(tail * len(h))) :][terms].astype(float)
    last = last * pd.Series({t: float((weights or {}).get(t, 1.0)) for t in terms})
    total = last.sum(axis=1)
    shares = last[total > 0].div(total[total > 0], axis=0).mean()
    return {t: float(shares[t]) for t in terms}


def gain_kept(score: float, teacher: float, constant: float) -> float:
    """(score − constant) / (teacher − constant): 1 at the teacher's score, 0 at the constant answer,
    below 0 under it; NaN when the teacher does not beat the constant answer."""
    gain = teacher - constant
    return (score - constant) / gain if gain > 0 else math.nan


def _mean(values: list[float]) -> float:
    """The mean of the finite values; NaN when there is none."""
    v = [x for x in values if math.isfinite(x)]
    return float(np.mean(v)) if v else math.nan


def diagnosis(run, table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per pruned (method, sparsity, budget) of ``table`` (a
    :func:`kaviz.analysis.evidence.summary` of ``run``) at ``metric``, with :data:`COLUMNS`:
    the student's mean score, the teacher's and the constant answer's, ``headroom`` (teacher −
    constant), :func:`gain_kept`, and the means over the row's units of non-zero and all encoder
    weights, examples seen, :func:`loss_shares` (NaN where a unit logs no loss terms) and the
    gradient shares of :func:`store_gradient_shares` (``grad_*``, NaN where a unit has none)."""
    t = table[(table.stage == "pruned") & (table.metric == metric)] if len(table) else table
    if t.empty:
        return pd.DataFrame(columns=COLUMNS)
    weights = {t_: float((run.config.get("distill") or {}).get(a, 1.0)) for t_, a in LOSS_TERMS.items()}
    m = run.metrics()
    per_unit = m.pivot_table(index="unit", columns="metric", values="value", aggfunc="first")
    units = m.drop_duplicates("unit").set_index("unit")[["method", "sparsity", "budget"]]
    hist = run.unit_table("history")
    shares = {u: loss_shares(g, weights) for u, g in hist.groupby("unit")} if len(hist) else {}
    grads = run.unit_table(GRADIENTS)
    pulls = {u: dict(zip(g.term, g.share)) for u, g in grads.groupby("unit")} if len(grads) else {}
    rows = []
    for _, r in t.iterrows():
        mine = units[(units.method == r.method) & np.isclose(units.sparsity.astype(float), float(r.sparsity))]
        mine = mine[mine.budget.isna()] if pd.isna(r.budget) else mine[np.isclose(mine.budget.astype(float), r.budget)]
        ids = list(mine.index)
        cols = ["nonzero_encoder_params", "encoder_params", "examples_seen"]
        col = per_unit.reindex(index=ids, columns=cols).astype(float).mean()  # NaN where none has it
        share = {f"share_{k}": _mean([shares.get(u, {}).get(k, math.nan) for u in ids]) for k in LOSS_TERMS}
        share |= {f"grad_{k}": _mean([pulls.get(u, {}).get(k, math.nan) for u in ids]) for k in LOSS_TERMS}
        rows.append(
            {
                "task": r.task,
                "method": r.method,
                "sparsity": float(r.sparsity),
                "budget": r.budget,
                "metric": metric,
                "seeds": int(r.seeds),
                "mean": float(r["mean"]),
                "teacher": float(r.teacher),
                "constant": float(r.constant),
                "headroom": float(r.teacher - r.constant),
                "gain_kept": gain_kept(float(r["mean"]), float(r.teacher), float(r.constant)),
                "nonzero_encoder": float(col["nonzero_encoder_params"]),
                "encoder": float(col["encoder_params"]),
                "examples_seen": float(col["examples_seen"]),
                **share,
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def gradient_shares(
    student: nn.Module,
    teacher: nn.Module,
    batches: list[dict[str, torch.Tensor]],
    cfg: DistillConfig,
    *,
    regression: bool = False,
) -> pd.DataFrame:
    """Which distillation term steers ``student``: per term (``att``, ``hid``, ``pred``, weighted by
    ``cfg.alpha_*`` as in training) the L2 norm of its gradient over the student's *kept* (non-zero)
    prunable encoder weights, the trainer's masks hold the others at zero, mean over ``batches``
    (``model(**batch)`` dicts with ``labels``), and its ``share`` of the three norms. Eval mode (no
    dropout); the hidden-state projection starts at the identity (equal widths) as in training.
    Neither model is changed. Columns: term, norm, share."""
    device = next(student.parameters()).device
    crit, loss_fn = distill_objective(student, teacher, cfg, device, regression)
    weights = [p.weight for p in prunable_linears(student).values()]
    kept = [w.detach() != 0 for w in weights]
    alphas = {t: float(getattr(cfg, a)) for t, a in LOSS_TERMS.items()}
    norms: dict[str, list[float]] = {t: [] for t in LOSS_TERMS}
    was_training, flags = student.training, [p.requires_grad for p in student.parameters()]
    student.eval()
    try:
        for p in student.parameters():
            p.requires_grad_(True)
        for batch in batches:
            for term in LOSS_TERMS:  # one term at a time: its weight, the others' 0
                crit.alpha_att, crit.alpha_hid, crit.alpha_pred = (alphas[t] if t == term else 0.0 for t in LOSS_TERMS)
                loss = loss_fn(student, {k: v.to(device) for k, v in batch.items()})["loss"]
                grads = torch.autograd.grad(loss, weights, allow_unused=True)
                sq = sum(float(((g * m) ** 2).sum()) for g, m in zip(grads, kept) if g is not None)
                norms[term].append(math.sqrt(sq))
    finally:
        student.train(was_training)
        for p, flag in zip(student.parameters(), flags):
            p.requires_grad_(flag)
    mean = {t: float(np.mean(v)) for t, v in norms.items()}
    total = sum(mean.values())
    rows = [{"term": t, "norm": v, "share": v / total if total > 0 else math.nan} for t, v in mean.items()]
    return pd.DataFrame(rows, columns=["term", "norm", "share"])


def store_gradient_shares(
    run, unit: str, *, examples: int = 64, batch_size: int = 32, seed: int = 0
) -> pd.DataFrame | None:
    """:func:`gradient_shares` of a done unit against the run's teacher, on ``examples`` seeded
    training examples, written as the unit's :data:`GRADIENTS` table and returned; None (nothing
    written) when the unit or the teacher has no weights in the run (a shipped, tables-only run)."""
    from kaviz.analysis.unit_view import load_run_tokenizer, load_unit_model
    from kaviz.core.config import RunConfig
    from kaviz.data.tasks import load_task
    from kaviz.measure.capture import probe_inputs
    from kaviz.train.models import load_tokenizer

    cfg = RunConfig.from_dict(run.config)
    if run.checkpoint_dir(unit) is None or run.checkpoint_dir("finetuned") is None:
        return None
    student, teacher = load_unit_model(run, unit), load_unit_model(run, "finetuned")
    task = load_task(cfg.task, seed=cfg.seed)
    tok = load_run_tokenizer(run) or load_tokenizer(cfg.model)
    probe = probe_inputs(task, tok, examples, seed=seed, max_length=cfg.task.max_length, split="train")
    fields = {"input_ids": probe.input_ids, "attention_mask": probe.attention_mask, "labels": probe.labels}
    if probe.token_type_ids is not None:
        fields["token_type_ids"] = probe.token_type_ids
    batches = [{k: v[i : i + batch_size] for k, v in fields.items()} for i in range(0, len(probe), batch_size)]
    table = gradient_shares(student, teacher, batches, cfg.distill, regression=task.spec.is_regression)
    run.write_unit_table(unit, GRADIENTS, table)
    return table
