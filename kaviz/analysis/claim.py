"""The paper's claim as a findings rule: knowledge-aware pruning scores at least as high as every
other method from 90% sparsity on (Xu et al., NAACL 2021, Tables 1-2), tested per sparsity with a
paired bootstrap interval of each difference over the run's stored dev predictions
(:func:`kaviz.analysis.evidence.paired_difference`).
"""

from __future__ import annotations

import numpy as np

from kaviz.analysis.evidence import paired_difference
from kaviz.analysis.finding import CONSTANT_MARGIN, INFO, SCORE_PAGE, WARNING, Finding, Tables, fmt, label, signed

#: The paper's claim: CLAIM_METHOD scores at least as high as every other method (within
#: CLAIM_TOLERANCE) at every sparsity from CLAIM_FROM on.
CLAIM_METHOD = "knowledge-aware"
CLAIM_FROM = 0.90
CLAIM_TOLERANCE = 0.0
#: The claim's differences come with a paired bootstrap interval (dev examples and seeds) at this level.
CLAIM_LEVEL, CLAIM_BOOT = 0.95, 1000


def _unit_predictions(t: Tables, method: str, sparsity: float) -> tuple[list[np.ndarray], np.ndarray] | None:
    """(one prediction vector per seed, the dev labels) of a method's pruned units at ``sparsity``;
    None when any of them stored no predictions."""
    if t.predictions is None or t.predictions.empty:
        return None
    m = t.metrics
    units = m.loc[
        (m["stage"] == "pruned")
        & (m["method"] == method)
        & np.isclose(m["sparsity"], sparsity)
        & (m["metric"] == "score"),
        "unit",
    ].unique()
    preds, labels = [], None
    for u in units:
        g = t.predictions[t.predictions["unit"] == u].sort_values("example")
        if g.empty or (labels is not None and len(g) != len(labels)):
            return None
        preds.append(g["prediction"].to_numpy())
        labels = g["label"].to_numpy()
    return (preds, labels) if preds else None


def _difference(t: Tables, mine: str, rival: str, sparsity: float) -> tuple[float, float, float] | None:
    """Paired bootstrap (difference, low, high) of ``mine`` minus ``rival`` in score units; None
    without predictions for both."""
    a, b = _unit_predictions(t, mine, sparsity), _unit_predictions(t, rival, sparsity)
    if a is None or b is None or t.metric is None or len(a[1]) != len(b[1]):
        return None
    return paired_difference(a[0], b[0], a[1], t.metric, n_boot=CLAIM_BOOT, level=CLAIM_LEVEL)


def method_ordering(t: Tables) -> Finding | None:
    """The best method at each sparsity two or more methods share, and whether the paper's claim holds,
    with the paired 95% bootstrap interval of each tested difference: a difference whose interval
    includes 0 is said to be within noise, whichever way the means point."""
    shared = [(s, g) for s, g in t.pruned.groupby("sparsity", sort=True) if g["method"].nunique() >= 2]
    if not shared:
        return None
    numbers: dict[str, float] = {}
    best, held, broken, untold = [], [], [], []
    noise: list[bool] = []  # per tested sparsity with intervals: the difference's interval includes 0
    for s, g in shared:
        top = g.loc[g["mean"].idxmax()]
        best.append(f"{fmt(s, 'sparsity')} {label(str(top['method']))} {fmt(top['mean'], 'score')}")
        numbers[f"best@{s:g}:{top['method']}"] = float(top["mean"])
        if s < CLAIM_FROM - 1e-9 or CLAIM_METHOD not in set(g["method"]):
            continue
        mine = float(g.loc[g["method"] == CLAIM_METHOD, "mean"].iloc[0])
        rival = g[g["method"] != CLAIM_METHOD].sort_values("mean", ascending=False).iloc[0]
        r = float(rival["mean"])
        numbers |= {f"{CLAIM_METHOD}@{s:g}": mine, f"{rival['method']}@{s:g}": r}
        words = f"at {fmt(s, 'sparsity')} {fmt(mine, 'score')} vs {label(str(rival['method']))} {fmt(r, 'score')}"
        floor = t.constant[0] + CONSTANT_MARGIN if t.constant is not None else -np.inf
        if abs(r - mine) < 1e-12 or max(mine, r) <= floor:
            untold.append(words)  # a tie, or both at the constant answer: not evidence either way
            continue
        diff = _difference(t, CLAIM_METHOD, str(rival["method"]), s)
        if diff is not None:
            d, lo, hi = diff
            inside = lo <= 0 <= hi
            words += f" (difference {signed(d)}, {100 * CLAIM_LEVEL:.0f}% interval [{signed(lo)}, {signed(hi)}]"
            words += ", within noise)" if inside else ")"
            numbers |= {f"diff@{s:g}": d, f"diff_low@{s:g}": lo, f"diff_high@{s:g}": hi}
            noise.append(inside)
        (broken if r > mine + CLAIM_TOLERANCE else held).append(words)
    text = "Best method per sparsity: " + ", ".join(best) + f". The paper's claim ({CLAIM_METHOD} ≥ every other "
    text += f"method from {fmt(CLAIM_FROM, 'sparsity')} on)"
    if not held and not broken:
        why = f": {'; '.join(untold)} (a tie or the constant answer)" if untold else ""
        return Finding("method_ordering", text + f" is not tested in this run{why}.", numbers, SCORE_PAGE)
    numbers["claim_holds"] = float(not broken)
    verdict = f"does not hold in this run: {'; '.join(broken)}" if broken else f"holds in this run ({'; '.join(held)})"
    tested = len(held) + len(broken)
    if noise and any(noise):
        verdict += (
            ". Where the interval of a difference includes 0, the run cannot tell the methods apart: "
            "more seeds or dev examples would"
        )
    elif noise and len(noise) == tested:
        verdict += ", every difference outside noise (paired bootstrap over dev examples and seeds)"
    if noise and len(noise) < tested:
        verdict += f"; {tested - len(noise)} of {tested} differences have no interval (no stored dev predictions)"
    if noise and (any(noise) or len(noise) == tested):
        numbers["separated"] = float(not any(noise))
    return Finding("method_ordering", f"{text} {verdict}.", numbers, SCORE_PAGE, severity=WARNING if broken else INFO)
