"""Findings: a few plain sentences with their numbers, read off a run's tables (no model needed).

Every rule is a plain function ``(Tables) -> Finding | None`` in :data:`RULES`; the thresholds and
the wording live here and nowhere else. A rule whose inputs are missing returns None; a
:class:`Finding` carries the unrounded numbers its sentence states (formatted by :func:`fmt`) and
the app page whose figure shows them. Only the main student budget is read (rows whose budget is
``main_budget`` or NaN, as in every by-sparsity figure); seeds are averaged with
:func:`kaviz.core.schema.over_seeds`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from kaviz.analysis.evidence import CLASS_METRICS, constant_answer, paired_difference, score_metric
from kaviz.core import schema
from kaviz.core.registry import METHOD_INFO

# ----- thresholds and wording ---------------------------------------------------------------------

#: A score within this of the best constant answer (score units: 0.01 = one point) has fallen to it.
CONSTANT_MARGIN = 0.01
#: Representations part at the first layer whose CKA to the teacher drops > CKA_DROP or is < CKA_FLOOR.
CKA_DROP, CKA_FLOOR = 0.10, 0.50
CKA_CLOSE = 0.80  # a method that never parts "stays close" when its lowest CKA is at least this
CKA_METRIC = "linear_cka"
TEACHER = "finetuned"  # the stage, and the reference of rows compared with it
#: A general-probe change smaller than this is "kept".
GENERAL_SAME = 0.01
#: The paper's claim: CLAIM_METHOD scores at least as high as every other method (within
#: CLAIM_TOLERANCE) at every sparsity from CLAIM_FROM on.
CLAIM_METHOD = "knowledge-aware"
CLAIM_FROM = 0.90
CLAIM_TOLERANCE = 0.0
#: The claim's differences come with a paired bootstrap interval (dev examples and seeds) at this level.
CLAIM_LEVEL, CLAIM_BOOT = 0.95, 1000
#: What pruning buys: read at this batch size (else the nearest); a speedup < 1 + SPEED_SAME buys nothing.
INFERENCE_BATCH, SPEED_SAME = 32, 0.05

INFO, WARNING = 0, 1  # severity; warnings are shown first
METRIC_NAMES = {"accuracy": "accuracy", "f1": "F1", "matthews": "MCC", "pearson": "Pearson r", "spearman": "Spearman"}
SCORE_PAGE = "pages/2_accuracy_vs_sparsity.py"
KNOWLEDGE_PAGE = "pages/3_knowledge_flow.py"
INFERENCE_PAGE = "pages/9_inference.py"


@dataclass(frozen=True)
class Finding:
    """One sentence, the numbers it states (unrounded), the page whose figure shows them."""

    rule: str
    text: str
    numbers: dict[str, float]
    page: str
    severity: int = INFO
    order: int = 0  # position of its rule in RULES

    def __post_init__(self) -> None:
        if not self.numbers or not all(math.isfinite(v) for v in self.numbers.values()):
            raise ValueError(f"finding {self.rule!r} lacks a finite number behind {self.text!r}: {self.numbers}")


@dataclass(frozen=True)
class Tables:
    """A run's tables at the main budget, as the rules read them. ``pruned``: method, sparsity,
    mean (over seeds) of ``score`` of the pruned units; ``teacher``: its score; ``constant``: (value,
    class) of the best constant answer on the dev labels (classification only); ``focus``: the method
    sentences follow (the paper's when present, else the best at the highest sparsity all methods
    reached) and its highest sparsity; ``metric_name``: what sentences call ``score``."""

    metrics: pd.DataFrame
    knowledge: pd.DataFrame
    inference: pd.DataFrame
    pruned: pd.DataFrame
    teacher: float | None
    constant: tuple[float, float] | None
    focus: tuple[str, float] | None
    metric_name: str
    metric: str | None = None  # the task metric ``score`` is (accuracy, f1, ...)
    predictions: pd.DataFrame | None = None  # unit, example, label, prediction: intervals need them


def fmt(value: float, kind: Literal["score", "ratio", "corr", "sparsity"]) -> str:
    """A number as sentences show it: ``score`` 88.0, ``ratio`` 98.5%, ``corr`` 0.93, ``sparsity`` 90%."""
    v = float(value)
    return {"score": f"{100 * v:.1f}", "ratio": f"{100 * v:.1f}%", "corr": f"{v:.2f}"}.get(kind, f"{100 * v:g}%")


def label(method: str) -> str:
    """How sentences name a method (the registry's label)."""
    return METHOD_INFO[method].label if method in METHOD_INFO else str(method)


def _common_top(pruned: pd.DataFrame) -> tuple[float, pd.DataFrame] | None:
    """The highest sparsity every method reached (else the highest any reached), its rows best first."""
    if pruned.empty:
        return None
    common = set.intersection(*[set(g["sparsity"]) for _, g in pruned.groupby("method", sort=False)])
    s = max(common) if common else float(pruned["sparsity"].max())
    return s, pruned[np.isclose(pruned["sparsity"], s)].sort_values("mean", ascending=False, kind="stable")


# ----- rules -------------------------------------------------------------------------------------------


def score_kept(t: Tables) -> Finding | None:
    """Per method, score / teacher score at the highest sparsity every method reached, best first."""
    teacher, top = t.teacher, _common_top(t.pruned)
    if teacher is None or top is None or teacher <= 0:
        return None
    s, rows = top
    kept = [(str(m), float(v) / teacher, float(v)) for m, v in zip(rows["method"], rows["mean"])]
    best, ratio, score = kept[0]
    text = f"At {fmt(s, 'sparsity')}, {label(best)} keeps {fmt(ratio, 'ratio')} of the teacher's {t.metric_name} "
    text += f"({fmt(score, 'score')} of {fmt(teacher, 'score')})"
    text += "".join(f"{'; ' if i == 1 else ', '}{label(m)} {fmt(r, 'ratio')}" for i, (m, r, _) in enumerate(kept) if i)
    numbers = {"sparsity": s, "teacher": teacher, f"score:{best}": score} | {f"kept:{m}": r for m, r, _ in kept}
    return Finding("score_kept", text + ".", numbers, SCORE_PAGE)


def teacher_vs_constant(t: Tables) -> Finding | None:
    """Loud when the fine-tuned teacher does not beat the best constant answer by CONSTANT_MARGIN."""
    const, teacher = t.constant, t.teacher
    if const is None or teacher is None or teacher > const[0] + CONSTANT_MARGIN:
        return None
    text = f"The fine-tuned teacher's {t.metric_name} ({fmt(teacher, 'score')}) does not beat the constant answer "
    text += f"({fmt(const[0], 'score')}, always class {const[1]:g}) by more than {100 * CONSTANT_MARGIN:.1f} point: "
    text += "the scores of its students say nothing about knowledge kept."
    numbers = {"teacher": teacher, "constant": const[0], "margin": CONSTANT_MARGIN}
    return Finding("teacher_vs_constant", text, numbers, SCORE_PAGE, severity=WARNING)


def constant_floor(t: Tables) -> Finding | None:
    """Per method, the sparsity from which its score stays within CONSTANT_MARGIN of the constant answer."""
    const, pruned = t.constant, t.pruned
    if const is None or pruned.empty:
        return None
    value, cls = const
    falls: dict[str, tuple[float, float]] = {}  # method -> (from sparsity, score there)
    for method, g in pruned.groupby("method", sort=False):
        g = g.sort_values("sparsity", ascending=False)
        down = (g["mean"] <= value + CONSTANT_MARGIN).to_numpy()
        n = len(down) if down.all() else int(np.argmin(down))  # highest sparsities that all fell
        if n:
            falls[str(method)] = (float(g["sparsity"].iloc[n - 1]), float(g["mean"].iloc[n - 1]))
    answer = f"the constant answer ({t.metric_name} {fmt(value, 'score')}, always class {cls:g})"
    numbers = {"constant": value, "margin": CONSTANT_MARGIN}
    if not falls:
        low = pruned.loc[pruned["mean"].idxmin()]
        text = f"No method falls to {answer}: the lowest score, {label(str(low['method']))} at "
        text += f"{fmt(low['sparsity'], 'sparsity')}, is {fmt(low['mean'], 'score')}."
        numbers |= {"lowest": float(low["mean"]), "sparsity": float(low["sparsity"])}
        return Finding("constant_floor", text, numbers, SCORE_PAGE)
    parts = ", ".join(f"{label(m)} from {fmt(s, 'sparsity')} ({fmt(v, 'score')})" for m, (s, v) in falls.items())
    numbers |= {f"from:{m}": s for m, (s, _) in falls.items()} | {f"score:{m}": v for m, (_, v) in falls.items()}
    tail = "the other methods stay above it"
    if len(falls) == pruned["method"].nunique():
        numbers["sparsity"] = max(f[0] for f in falls.values())
        tail = f"from {fmt(numbers['sparsity'], 'sparsity')} on, no method beats it"
    text = f"Within {100 * CONSTANT_MARGIN:.1f} point of {answer}: {parts}; {tail}."
    return Finding("constant_floor", text, numbers, SCORE_PAGE)


def cka_by_layer(knowledge: pd.DataFrame, method: str, sparsity: float) -> pd.Series:
    """Linear CKA to the teacher per teacher layer (0 = embeddings), mean over seeds, of one method
    at one sparsity (empty when there is none)."""
    rows = schema.layer_rows(schema.compared(knowledge[knowledge["metric"] == CKA_METRIC]))
    rows = rows[(rows["reference"] == TEACHER) & (rows["stage"] == "pruned") & (rows["method"] == method)]
    rows = rows[np.isclose(rows["sparsity"].astype(float), sparsity)]
    rows = rows.assign(layer=pd.to_numeric(rows["ref_layer"]).fillna(rows["layer"]).astype("int64"))
    return schema.over_seeds(rows, ["layer"]).set_index("layer")["mean"].sort_index().astype(float)


def parting_layer(cka: pd.Series) -> tuple[int, float, float] | None:
    """(layer, CKA at the layer before (NaN for the first), CKA there) of the first layer whose CKA
    drops by more than CKA_DROP from the layer before or lies below CKA_FLOOR; None if none does."""
    prev = math.nan
    for layer, v in cka.items():
        if v < CKA_FLOOR or prev - v > CKA_DROP:
            return int(layer), prev, float(v)
        prev = float(v)
    return None


def _parting_words(part: tuple[int, float, float], key: str = "") -> tuple[str, dict[str, float]]:
    """The words and numbers of a :func:`parting_layer` result (``key`` ends the number names)."""
    layer, before, at = part
    values = fmt(at, "corr") if math.isnan(before) else f"{fmt(before, 'corr')} → {fmt(at, 'corr')}"
    numbers = {f"layer{key}": float(layer), f"at{key}": at} | ({} if math.isnan(before) else {f"before{key}": before})
    return f"at {'the embeddings' if layer == 0 else f'layer {layer}'} (linear CKA {values})", numbers


def representations_part(t: Tables) -> Finding | None:
    """Where the followed method's representations part from the teacher at its highest sparsity,
    and the other methods that part at that sparsity."""
    method, s = t.focus or ("", 0.0)
    if (cka := cka_by_layer(t.knowledge, method, s)).empty:
        return None
    numbers: dict[str, float] = {"sparsity": s}
    part = parting_layer(cka)
    if part is None:
        low = int(cka.idxmin())
        how = ("drifts from the teacher with no sharp break", "stays close to the teacher at every layer")
        text = f"At {fmt(s, 'sparsity')}, {label(method)} {how[int(cka[low] >= CKA_CLOSE)]} (linear CKA at least "
        text += f"{fmt(cka[low], 'corr')}, at {'the embeddings' if low == 0 else f'layer {low}'})"
        numbers |= {"lowest": float(cka[low]), "layer": float(low)}
    else:
        words, more = _parting_words(part)
        text = f"At {fmt(s, 'sparsity')}, the representations of {label(method)} part from the teacher {words}"
        numbers |= more
    others = []
    for other in dict.fromkeys(t.pruned["method"]):
        if other != method and (p := parting_layer(cka_by_layer(t.knowledge, other, s))) is not None:
            words, more = _parting_words(p, f":{other}")
            others.append(f"{label(other)} parts from it {words}")
            numbers |= more
    text += ("; " + ", ".join(others) if others else "") + "."
    return Finding("representations_part", text, numbers, KNOWLEDGE_PAGE)


def _verb(before: float, after: float, lower_better: bool) -> str:
    change = (before - after) if lower_better else (after - before)
    return "kept" if abs(change) < GENERAL_SAME else ("raised" if change > 0 else "lowered")


def general_knowledge(t: Tables) -> Finding | None:
    """General-probe value: pre-trained -> fine-tuned -> the followed method at its highest sparsity
    (the other methods there in brackets). Loss-like probes (``*loss``): lower is better."""
    names, focus = schema.general_metrics(t.knowledge), t.focus
    if not names or focus is None:
        return None
    metric = next((m for m in names if not m.endswith("loss")), names[0])
    rows = schema.own(schema.model_rows(t.knowledge[t.knowledge["metric"] == metric]))
    table = schema.over_seeds(rows, ["stage", "method", "sparsity"])
    method, s = focus
    dense = table[table["stage"] != "pruned"].set_index("stage")["mean"].astype(float)
    at_s = table[(table["stage"] == "pruned") & np.isclose(table["sparsity"].astype(float), s)]
    at_s = at_s.set_index("method")["mean"].astype(float)
    pre, fine, mine = dense.get("pretrained"), dense.get(TEACHER), at_s.get(method)
    if fine is None or mine is None:
        return None
    name = " ".join(w.upper() if len(w) <= 3 else w.capitalize() for w in schema.family_label(metric).split("_"))
    lower = metric.endswith("loss")
    numbers = {"finetuned": fine, "sparsity": s, f"pruned:{method}": mine}
    verb, text = _verb(fine, mine, lower), ""
    if pre is not None:
        numbers["pretrained"] = pre
        text = f"Fine-tuning alone {_verb(pre, fine, lower)} general knowledge "
        text += f"({name} {fmt(pre, 'corr')} → {fmt(fine, 'corr')}); {label(method)} pruning to {fmt(s, 'sparsity')} "
        text += f"{verb} it {'at' if verb == 'kept' else 'to'} {fmt(mine, 'corr')}"
    else:
        text = f"{label(method)} pruning to {fmt(s, 'sparsity')} {verb} general knowledge "
        text += f"({name} {fmt(fine, 'corr')} → {fmt(mine, 'corr')})"
    others = [(str(m), float(v)) for m, v in at_s.items() if m != method]
    if others:
        text += " (" + ", ".join(f"{label(m)} {fmt(v, 'corr')}" for m, v in others) + ")"
        numbers |= {f"pruned:{m}": v for m, v in others}
    return Finding("general_knowledge", text[0].upper() + text[1:] + ".", numbers, KNOWLEDGE_PAGE)


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


def _signed(x: float) -> str:
    return ("+" if x >= 0 else "−") + fmt(abs(x), "score")


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
            words += f" (difference {_signed(d)}, {100 * CLAIM_LEVEL:.0f}% interval [{_signed(lo)}, {_signed(hi)}]"
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
    if noise:
        numbers["separated"] = float(not any(noise))
        if any(noise):
            verdict += (
                ". Where the interval of a difference includes 0, the run cannot tell the methods apart: "
                "more seeds or dev examples would"
            )
        else:
            verdict += ", every difference outside noise (paired bootstrap over dev examples and seeds)"
    return Finding("method_ordering", f"{text} {verdict}.", numbers, SCORE_PAGE, severity=WARNING if broken else INFO)


def inference_gain(t: Tables) -> Finding | None:
    """The fastest pruned (method, sparsity, variant) at INFERENCE_BATCH: speedup, score, size on disk."""
    inf, teacher = t.inference, t.teacher
    if inf.empty or teacher is None or not {"speedup", "median_s", "batch_size", "variant"} <= set(inf.columns):
        return None
    score = t.metrics[t.metrics["metric"] == "score"][["unit", "stage", "method", "sparsity", "value"]]
    inf = inf.drop(columns=[c for c in [*schema.UNIT_KEYS[1:], "value"] if c in inf.columns])
    rows = inf[inf["speedup"].notna() & inf["median_s"].notna()].merge(score, on="unit")
    rows = rows[rows["stage"] == "pruned"]
    if rows.empty:
        return None
    sizes = rows["batch_size"].unique()
    batch = int(sizes[np.argmin(np.abs(sizes - INFERENCE_BATCH))])
    rows = rows[rows["batch_size"] == batch].assign(size_ratio=rows.get("size_ratio", np.nan))
    g = schema.over_seeds(rows, ["method", "sparsity", "variant"], "speedup", also=["value", "size_ratio"])
    top = g.loc[g["mean"].idxmax()]
    speed, s = float(top["mean"]), float(top["sparsity"])
    who = f"{label(str(top['method']))} at {fmt(s, 'sparsity')} ({top['variant']})"
    sc = f"{t.metric_name} {fmt(top['value'], 'score')}, teacher {fmt(teacher, 'score')}"
    text = f"The fastest pruned model, {who}, runs {speed:.1f}× faster than the dense teacher at batch {batch} ({sc})"
    if speed < 1 + SPEED_SAME:
        text = f"Pruning buys no speed here: the fastest pruned model, {who}, runs at {speed:.1f}× the dense "
        text += f"teacher's speed at batch {batch} ({sc})"
    numbers = {"speedup": speed, "sparsity": s, "batch_size": float(batch), "score": float(top["value"])}
    numbers["teacher"] = teacher
    if pd.notna(top["size_ratio"]):
        text += f"; it takes {fmt(top['size_ratio'], 'ratio')} of the teacher's size on disk"
        numbers["size_ratio"] = float(top["size_ratio"])
    return Finding("inference_gain", text + ".", numbers, INFERENCE_PAGE)


#: The rules, in the order their sentences are shown (warnings first).
RULES: tuple[Callable[[Tables], Finding | None], ...] = (
    teacher_vs_constant, score_kept, method_ordering, constant_floor,
    representations_part, general_knowledge, inference_gain,
)  # fmt: skip


# ----- entry points ------------------------------------------------------------------------------------


def _frame(df: pd.DataFrame | None, columns: list[str]) -> pd.DataFrame:
    return df if df is not None and len(df) and set(columns) <= set(df.columns) else pd.DataFrame(columns=columns)


def tables(metrics: pd.DataFrame, *frames: pd.DataFrame | None, main_budget: float | None = None) -> Tables:
    """The :class:`Tables` the rules read; ``frames``: knowledge, predictions, inference (any may be
    left out or None), all as for :func:`findings`."""
    knowledge, predictions, inference = (*frames, None, None, None)[:3]
    m = schema.at_budget(_frame(metrics, schema.METRIC_COLUMNS), main_budget).dropna(subset=["value"])
    scores = schema.over_seeds(m[m["metric"] == "score"], ["stage", "method", "sparsity"])
    teacher = scores.loc[scores["stage"] == TEACHER, "mean"]
    k = schema.at_budget(_frame(knowledge, schema.UNIT_KEYS + schema.KNOWLEDGE_COLUMNS), main_budget).dropna(
        subset=["value"]
    )
    p = _frame(predictions, ["unit", "example", "label"])
    pruned = scores[scores["stage"] == "pruned"].reset_index(drop=True)
    metric = score_metric(m) if len(scores) else None
    constant = None
    if len(p) and metric in CLASS_METRICS:
        unit = TEACHER if (p["unit"] == TEACHER).any() else p["unit"].iloc[0]
        constant = constant_answer(metric, p[p["unit"] == unit].sort_values("example")["label"].to_numpy())
    best = float(teacher.iloc[0]) if len(teacher) else None
    focus, top = None, _common_top(pruned)
    if top is not None:
        method = CLAIM_METHOD if CLAIM_METHOD in set(pruned["method"]) else str(top[1]["method"].iloc[0])
        focus = method, float(pruned.loc[pruned["method"] == method, "sparsity"].max())
    inf = _frame(inference, ["unit"])
    inf = inf[inf["unit"].isin(set(m["unit"]))]
    preds = _frame(predictions, ["unit", "example", "label", "prediction"])
    return Tables(m, k, inf, pruned, best, constant, focus, METRIC_NAMES.get(metric or "", "score"), metric, preds)


def findings(
    metrics: pd.DataFrame,
    knowledge: pd.DataFrame | None = None,
    predictions: pd.DataFrame | None = None,
    inference: pd.DataFrame | None = None,
    *,
    main_budget: float | None = None,
) -> list[Finding]:
    """The findings of a run, warnings first, then in :data:`RULES` order.

    ``metrics``: ``Run.metrics()``; ``knowledge``: ``kaviz.analysis.analyzer.knowledge_table(run)``;
    ``predictions``, ``inference``: those unit tables; ``main_budget``:
    ``kaviz.core.config.main_budget(run.config)`` (None: only rows without a budget, as for a run
    whose budget is in steps). Any input but ``metrics`` may be None or empty: the rules that need it
    are skipped. The arguments are not modified.
    """
    t = tables(metrics, knowledge, predictions, inference, main_budget=main_budget)
    found = [dataclasses.replace(f, order=i) for i, rule in enumerate(RULES) if (f := rule(t)) is not None]
    return sorted(found, key=lambda f: (-f.severity, f.order))


def findings_table(found: list[Finding]) -> pd.DataFrame:
    """One row per finding: rule, severity ("warning" or "info"), text, page, numbers (JSON)."""
    rows = [(f.rule, "warning" if f.severity else "info", f.text, f.page, json.dumps(f.numbers)) for f in found]
    return pd.DataFrame(rows, columns=["rule", "severity", "text", "page", "numbers"])
