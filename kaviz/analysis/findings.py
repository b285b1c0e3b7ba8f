"""Findings: a few plain sentences with their numbers, read off a run's tables (no model needed).

Every rule is a plain function ``(Tables) -> Finding | None`` in :data:`RULES`; a rule's thresholds
and wording live beside it (here, or in :mod:`kaviz.analysis.claim` for the paper's claim), and
:class:`Finding`, :class:`Tables` and :func:`fmt` in :mod:`kaviz.analysis.finding`. A rule whose inputs are missing returns None; a
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

import numpy as np
import pandas as pd

from kaviz.analysis.claim import CLAIM_METHOD, method_ordering
from kaviz.analysis.evidence import CLASS_METRICS, constant_answer, score_metric
from kaviz.analysis.finding import (  # noqa: F401  (Finding, fmt, the pages, INFO/WARNING: this module's API too)
    CONSTANT_MARGIN,
    INFERENCE_PAGE,
    INFO,
    KNOWLEDGE_PAGE,
    METRIC_NAMES,
    SCORE_PAGE,
    TEACHER,
    WARNING,
    Finding,
    Tables,
    fmt,
    label,
)
from kaviz.core import schema

# ----- thresholds and wording ---------------------------------------------------------------------

#: Representations part at the first layer whose CKA to the teacher drops > CKA_DROP or is < CKA_FLOOR.
CKA_DROP, CKA_FLOOR = 0.10, 0.50
CKA_CLOSE = 0.80  # a method that never parts "stays close" when its lowest CKA is at least this
CKA_METRIC = "linear_cka"
#: A general-probe change smaller than this is "kept".
GENERAL_SAME = 0.01
#: What pruning buys: read at this batch size (else the nearest); a speedup < 1 + SPEED_SAME buys nothing.
INFERENCE_BATCH, SPEED_SAME = 32, 0.05


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
