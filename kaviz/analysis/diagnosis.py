"""Why a pruned student keeps its teacher's score or does not: the causes a run can measure, one row
per pruned (method, sparsity, budget).

- **Teacher quality**: how far the teacher stands above the best constant answer (``headroom``). A
  teacher a few points above "always class 1" leaves its students little to learn from it.
- **Capacity**: the encoder weights a student keeps (``nonzero_encoder``). 95% sparsity keeps
  0.53M of MiniLM-L6's 10.6M encoder weights, but 4.2M of BERT-base's 85M.
- **Loss balance**: how the distillation loss splits between its attention, hidden-state and
  prediction terms (``share_att``, ``share_hid``, ``share_pred``), weighted as in training
  (``distill.alpha_*``), averaged over the last part of training. The prediction term is logged as
  KL divergence (the paper's soft cross-entropy less the teacher's entropy: the same gradient).
- **Budget**: training examples the student saw (``examples_seen``).

``gain_kept`` puts students of different tasks on one scale: the fraction of the teacher's gain over
the constant answer a student keeps (1 at the teacher's score, 0 at the constant answer).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

#: The distillation loss's terms as :class:`kaviz.train.distill.DistillLoss` logs them, and the
#: ``distill`` config weights they are summed with.
LOSS_TERMS = {"att": "alpha_att", "hid": "alpha_hid", "pred": "alpha_pred"}
#: Loss shares are averaged over this last fraction of a unit's logged steps.
TAIL = 0.2

COLUMNS = [
    "task", "method", "sparsity", "budget", "metric", "seeds", "mean", "teacher", "constant", "headroom",
    "gain_kept", "nonzero_encoder", "encoder", "examples_seen",
    *(f"share_{t}" for t in LOSS_TERMS),
]  # fmt: skip


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
    weights, examples seen and :func:`loss_shares` (NaN where a unit logs no loss terms)."""
    t = table[(table.stage == "pruned") & (table.metric == metric)] if len(table) else table
    if t.empty:
        return pd.DataFrame(columns=COLUMNS)
    weights = {t_: float((run.config.get("distill") or {}).get(a, 1.0)) for t_, a in LOSS_TERMS.items()}
    m = run.metrics()
    per_unit = m.pivot_table(index="unit", columns="metric", values="value", aggfunc="first")
    units = m.drop_duplicates("unit").set_index("unit")[["method", "sparsity", "budget"]]
    hist = run.unit_table("history")
    shares = {u: loss_shares(g, weights) for u, g in hist.groupby("unit")} if len(hist) else {}
    rows = []
    for _, r in t.iterrows():
        mine = units[(units.method == r.method) & np.isclose(units.sparsity.astype(float), float(r.sparsity))]
        mine = mine[mine.budget.isna()] if pd.isna(r.budget) else mine[np.isclose(mine.budget.astype(float), r.budget)]
        ids = list(mine.index)
        cols = ["nonzero_encoder_params", "encoder_params", "examples_seen"]
        col = per_unit.reindex(index=ids, columns=cols).astype(float).mean()  # NaN where none has it
        share = {f"share_{k}": _mean([shares.get(u, {}).get(k, math.nan) for u in ids]) for k in LOSS_TERMS}
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
