"""Comparing runs: config differences, aligned tables over runs, mask overlap and surviving heads.

Plain pandas and torch, no streamlit.  Table functions take tables the store already gives
(:func:`kaviz.views.ui_data.sparsity_curve_table`, :func:`kaviz.analysis.analyzer.knowledge_table`) keyed by a run
label and return new frames; the mask functions read weights of models they are handed (or load
a unit's checkpoint with :func:`unit_masks`).  Torch is imported only where weights are read, so
the app's compare page loads fast.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from kaviz.core import schema

if TYPE_CHECKING:
    from torch import nn

    from kaviz.store import Run

MISSING = "(absent)"


# ----- configs ------------------------------------------------------------------------------------


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"task": {"name": "demo"}}`` -> ``{"task.name": "demo"}``; lists are kept as values."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def config_table(configs: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """The dotted config keys whose values differ between runs: ``key`` then one column per run.

    ``configs`` maps a run label to its config dict (nested).  Values are shown as text (JSON
    for non-strings, ``(absent)`` where a run lacks the key); keys keep the first config's order.
    """
    if len(configs) < 2:
        raise ValueError(f"config_table needs at least two configs, got {len(configs)}")
    flat = {label: flatten(c) for label, c in configs.items()}
    keys = list(dict.fromkeys(k for f in flat.values() for k in f))
    rows = []
    for k in keys:
        present = [f[k] for f in flat.values() if k in f]
        first = present[0]
        same = len(present) == len(flat) and all(
            v == first and isinstance(v, bool) == isinstance(first, bool) for v in present
        )
        if not same:
            rows.append({"key": k, **{label: _show(f[k]) if k in f else MISSING for label, f in flat.items()}})
    return pd.DataFrame(rows, columns=["key", *flat])


def config_diff(a: Mapping[str, Any], b: Mapping[str, Any], names: tuple[str, str] = ("a", "b")) -> pd.DataFrame:
    """:func:`config_table` of two configs: columns ``key``, ``names[0]``, ``names[1]``."""
    if names[0] == names[1]:
        raise ValueError(f"names must differ, got {names}")
    return config_table({names[0]: a, names[1]: b})


# ----- metric tables over runs --------------------------------------------------------------------


def stack(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Frames of several runs as one, with a leading ``run`` column (the mapping's keys, in order)."""
    frames = [df.assign(run=label) for label, df in tables.items() if len(df)]
    if not frames:
        cols = next((list(df.columns) for df in tables.values()), [])
        return pd.DataFrame(columns=["run", *cols])
    out = pd.concat(frames, ignore_index=True)
    return out[["run", *[c for c in out.columns if c != "run"]]]


def overlay_points(
    metrics: Mapping[str, pd.DataFrame], inference: Mapping[str, pd.DataFrame] | None = None
) -> pd.DataFrame:
    """One row per (run, method, target sparsity) of pruned students at each run's main budget
    (``metrics`` already filtered), means over seeds: run, method, sparsity, score, nonzero_params
    (non-zero encoder weights), and speedup (the fastest measured variant over the dense teacher at
    the largest batch size of the run's ``inference`` table; NaN without one)."""
    cols = ["run", "method", "sparsity", "score", "nonzero_params", "speedup"]
    frames = []
    for run, m in metrics.items():
        p = m[(m["stage"] == "pruned") & m["metric"].isin(["score", "nonzero_encoder_params"])]
        if p.empty:
            continue
        wide = p.pivot_table(index=["unit", "method", "sparsity"], columns="metric", values="value", aggfunc="first")
        wide = wide.reset_index().rename(columns={"nonzero_encoder_params": "nonzero_params"})
        for c in ("score", "nonzero_params"):
            if c not in wide:
                wide[c] = np.nan
        inf = (inference or {}).get(run)
        if inf is not None and len(inf) and "speedup" in inf.columns:
            top = inf[inf["batch_size"] == inf["batch_size"].max()].groupby("unit")["speedup"].max()
            wide = wide.join(top, on="unit")
        else:
            wide["speedup"] = np.nan
        per = schema.over_seeds(wide, ["method", "sparsity"], "score", also=["nonzero_params", "speedup"])
        frames.append(per.rename(columns={"mean": "score"}).assign(run=run))
    if not frames:
        return pd.DataFrame(columns=cols)
    return pd.concat(frames, ignore_index=True)[cols]


def score_difference(curve_a: pd.DataFrame, curve_b: pd.DataFrame, names: tuple[str, str] = ("a", "b")) -> pd.DataFrame:
    """Per (method, target sparsity) present in both curve tables: the two means and ``a - b``.

    The curve tables are :func:`kaviz.views.ui_data.sparsity_curve_table` frames; the pre-trained and
    fine-tuned rows are left out.  Columns: method, sparsity, ``names[0]``, ``names[1]``, difference.
    """
    keys = ["method", "sparsity"]

    def pruned(df: pd.DataFrame, name: str) -> pd.DataFrame:
        d = df[~df["stage"].isin(["pretrained", "finetuned"])]
        return d[[*keys, "mean"]].rename(columns={"mean": name})

    out = pruned(curve_a, names[0]).merge(pruned(curve_b, names[1]), on=keys, how="inner")
    out["difference"] = out[names[0]] - out[names[1]]
    return out.sort_values(keys, kind="stable").reset_index(drop=True)


def knowledge_options(tables: Mapping[str, pd.DataFrame]) -> tuple[list[str], list[float]]:
    """Per-layer metrics (whole-layer rows, :func:`kaviz.core.schema.layer_rows`) and the pruned target
    sparsities present in any of the runs' knowledge tables."""
    metrics: list[str] = []
    sparsities: set[float] = set()
    for df in tables.values():
        if df.empty:
            continue
        layer_rows = schema.compared(schema.layer_rows(df))
        metrics += [m for m in layer_rows["metric"].dropna().unique() if m not in metrics]
        sparsities |= set(df.loc[df["stage"] == "pruned", "sparsity"].dropna().astype(float))
    return metrics, sorted(sparsities)


def knowledge_curves(tables: Mapping[str, pd.DataFrame], metric: str, reference: str, sparsity: float) -> pd.DataFrame:
    """One curve per (run, method) over layers: ``metric`` against ``reference`` of the pruned
    units at target ``sparsity``, mean over seeds.

    ``tables`` maps run labels to :func:`kaviz.analysis.analyzer.knowledge_table` frames.  Columns: run,
    method, sparsity, layer, value, n_seeds.
    """
    cols = ["run", "method", "sparsity", "layer", "value", "n_seeds"]
    parts = []
    for label, df in tables.items():
        if df.empty:
            continue
        rows = schema.layer_rows(df)
        rows = rows[
            (rows["stage"] == "pruned")
            & np.isclose(rows["sparsity"].astype(float), sparsity)
            & (rows["metric"] == metric)
            & (rows["reference"] == reference)
        ]
        if rows.empty:
            continue
        stats = schema.over_seeds(rows, ["method", "layer"])
        agg = stats[["method", "layer", "mean", "n_seeds"]].rename(columns={"mean": "value"})
        parts.append(agg.assign(run=label, sparsity=float(sparsity)))
    if not parts:
        return pd.DataFrame(columns=cols)
    out = pd.concat(parts, ignore_index=True)[cols]
    return out.sort_values(["run", "method", "layer"], kind="stable").reset_index(drop=True)


def matching_units(units_a: pd.DataFrame, units_b: pd.DataFrame) -> pd.DataFrame:
    """Done pruned units of two runs with the same method, target sparsity and seed.

    ``units_*`` are Run.units() frames.  Columns: method, sparsity, seed, unit_a, unit_b.
    """
    keys = ["method", "sparsity", "seed"]

    def done(u: pd.DataFrame) -> pd.DataFrame:
        return u.loc[(u["stage"] == "pruned") & (u["status"] == "done"), [*keys, "unit"]]

    out = done(units_a).merge(done(units_b), on=keys, suffixes=("_a", "_b"))
    return out.sort_values(keys, kind="stable").reset_index(drop=True)


# ----- masks and heads ----------------------------------------------------------------------------


def mask_overlap(model_a: nn.Module, model_b: nn.Module) -> pd.DataFrame:
    """How much two pruned models agree on which encoder weights to keep, per layer and role (a
    fused matrix gives one row per role it holds).

    Columns: module, layer, role, numel, kept_a, kept_b (non-zero weights), shared (non-zero in
    both) and jaccard = shared / (kept in either); NaN where neither keeps a weight.  The models
    must have the same architecture and shapes (a ValueError names the first mismatch).
    """
    import torch

    from kaviz.core.structure import oriented, parts, prunable_linears

    lin_a, lin_b = prunable_linears(model_a), prunable_linears(model_b)
    if list(lin_a) != list(lin_b):
        raise ValueError(
            f"the models have different encoder matrices ({len(lin_a)} vs {len(lin_b)}); "
            "mask overlap needs two models of the same architecture and depth"
        )
    for name, la in lin_a.items():
        if la.weight.shape != lin_b[name].weight.shape:
            raise ValueError(
                f"{name}: shapes {tuple(la.weight.shape)} and {tuple(lin_b[name].weight.shape)} differ "
                "(a small-dense student?); mask overlap needs matrices of the same shape"
            )
    rows = []
    with torch.no_grad():
        for p in parts(model_a):  # one row per (layer, role): a fused matrix gives one row per role
            wa, wb = oriented(lin_a[p.name])[p.rows], oriented(lin_b[p.name])[p.rows]  # (rows, in) each
            ka, kb = wa != 0, wb != 0
            shared, either = int((ka & kb).sum()), int((ka | kb).sum())
            rows.append(
                {
                    "module": p.name,
                    "layer": p.layer,
                    "role": p.role,
                    "numel": wa.numel(),
                    "kept_a": int(ka.sum()),
                    "kept_b": int(kb.sum()),
                    "shared": shared,
                    "jaccard": shared / either if either else float("nan"),
                }
            )
    return pd.DataFrame(rows, columns=["module", "layer", "role", "numel", "kept_a", "kept_b", "shared", "jaccard"])


def surviving_heads(model: nn.Module) -> pd.DataFrame:
    """Per attention (query) head: the fraction of its query, key and value weights that are non-zero.

    Head ``h`` owns rows ``h*hd:(h+1)*hd`` of the query role; its key and value are those of the K/V
    head it reads (shared by ``heads / kv_heads`` query heads under grouped-query attention).
    Columns: layer, head, query, key, value, nonzero (over the three together).
    """
    import torch

    from kaviz.core.heads import kv_group
    from kaviz.core.structure import dims, oriented, parts, prunable_linears

    d = dims(model)
    lins = prunable_linears(model)
    per: dict[tuple[int, str], torch.Tensor] = {}
    with torch.no_grad():
        for p in parts(model):
            if p.role in ("query", "key", "value"):
                w = oriented(lins[p.name])[p.rows]  # (n * hd, in)
                per[(p.layer, p.role)] = (w != 0).reshape(-1, d["head_dim"] * w.shape[1]).float().mean(dim=1)  # (n,)
    rows = []
    for layer in sorted({k[0] for k in per}):
        for h in range(d["heads"]):
            g = kv_group(model, h)
            row = {"layer": layer, "head": h, "query": float(per[(layer, "query")][h])}
            row |= {r: float(per[(layer, r)][g]) for r in ("key", "value")}
            row["nonzero"] = (row["query"] + row["key"] + row["value"]) / 3
            rows.append(row)
    return pd.DataFrame(rows, columns=["layer", "head", "query", "key", "value", "nonzero"])


def units_with_checkpoints(run: Run) -> list[str]:
    """The run's done units that kept their weights (a checkpoint or compact weights), in planned order."""
    units = run.units()
    return [u for u in units.loc[units["status"] == "done", "unit"] if run.has_weights(u)]


def load_checkpoint(run: Run, unit: str) -> nn.Module:
    """The unit's saved weights as a classifier (no task needed: the checkpoint's config has its
    head), loaded like every other checkpoint: safetensors only (:func:`kaviz.analysis.unit_view.load_unit_model`)."""
    from kaviz.analysis.unit_view import load_unit_model

    model = load_unit_model(run, unit)
    if model is None:
        raise ValueError(f"unit {unit!r} of run {run.run_id!r} has no checkpoint (save_checkpoints was off?)")
    return model


def unit_masks(run_a: Run, unit_a: str, run_b: Run, unit_b: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mask overlap of two units' checkpoints, and their surviving heads (with a ``unit`` column
    that reads ``a`` or ``b``)."""
    model_a, model_b = load_checkpoint(run_a, unit_a), load_checkpoint(run_b, unit_b)
    overlap = mask_overlap(model_a, model_b)
    heads = pd.concat(
        [surviving_heads(model_a).assign(unit="a"), surviving_heads(model_b).assign(unit="b")], ignore_index=True
    )
    return overlap, heads


# ----- what a comparison can show, and why a run drops out -------------------------------------------


def default_pair(runs: pd.DataFrame, current: tuple[str, str] | None = None) -> tuple[list[str], str | None]:
    """The paths of the two runs Compare opens with, and a note when they are not of one task.

    ``runs`` is a listing (:func:`kaviz.views.ui_data.list_runs` order: featured, then newest);
    ``current``: (folder, run_id) of the run picked in the sidebar.  Preferred: the current run and
    the newest other run of its task; else the first task with two runs; else the first two runs,
    with the reason."""
    if len(runs) < 2:
        return list(runs["path"]), None
    rows = runs.to_dict("records")
    first = next((r for r in rows if current and (r["folder"], r["run_id"]) == tuple(current)), None)
    if first is not None:
        same = [r for r in rows if r["task"] == first["task"] and r["path"] != first["path"]]
        if same:
            return [first["path"], same[0]["path"]], None
    for task in dict.fromkeys(r["task"] for r in rows):
        of_task = [r["path"] for r in rows if r["task"] == task]
        if len(of_task) >= 2:
            note = (
                None if first is None else f"no other run of {first['run_id']}'s task ({first['task']}) to compare with"
            )
            return of_task[:2], note
    return [rows[0]["path"], rows[1]["path"]], "no two runs share a task: their scores are on different tasks"


def pruned_sparsities(table: pd.DataFrame) -> set[float]:
    """Target sparsities of the pruned units in a knowledge (or metrics) table."""
    if table.empty:
        return set()
    return {round(float(s), 6) for s in table.loc[table["stage"] == "pruned", "sparsity"].dropna()}


def shared_sparsities(tables: Mapping[str, pd.DataFrame]) -> tuple[list[float], list[float]]:
    """(shared, all): the pruned target sparsities every run with knowledge tables has, and any has."""
    sets = [pruned_sparsities(df) for df in tables.values() if not df.empty]
    sets = [s for s in sets if s]
    if not sets:
        return [], []
    return sorted(set.intersection(*sets)), sorted(set.union(*sets))


def knowledge_dropped(
    tables: Mapping[str, pd.DataFrame], metric: str, reference: str, sparsity: float
) -> dict[str, str]:
    """run -> why :func:`knowledge_curves` has no curve for it at ``sparsity``."""
    out = {}
    for label, df in tables.items():
        if df.empty:
            out[label] = "no knowledge tables yet (`kaviz analyze` computes them)"
            continue
        if round(float(sparsity), 6) not in pruned_sparsities(df):
            have = ", ".join(f"{100 * s:g}%" for s in sorted(pruned_sparsities(df))) or "none"
            out[label] = f"no pruned student at {100 * sparsity:g}% (it has {have})"
            continue
        rows = schema.layer_rows(df)
        if not ((rows["metric"] == metric) & (rows["reference"] == reference)).any():
            out[label] = f"no {metric} against the {schema.REFERENCE_NAMES.get(reference, reference)}"
    return out


def mask_pairs(
    units_a: pd.DataFrame, units_b: pd.DataFrame, weights_a: Sequence[str], weights_b: Sequence[str]
) -> tuple[pd.DataFrame, str | None]:
    """Students of two runs whose masks can be compared (same method, sparsity and seed, weights in
    both), and when there is none, the reason: no method and sparsity in common, different seeds,
    or no weights kept."""
    pairs = matching_units(units_a, units_b)
    if pairs.empty:
        keys = ["method", "sparsity"]

        def done(u: pd.DataFrame) -> pd.DataFrame:
            return u.loc[(u["stage"] == "pruned") & (u["status"] == "done"), [*keys, "seed"]]

        common = done(units_a).merge(done(units_b), on=keys, suffixes=("_a", "_b"))
        if common.empty:
            return pairs, "the two runs have no pruned student of the same method and sparsity"
        sa = ", ".join(str(int(s)) for s in sorted(common["seed_a"].unique()))
        sb = ", ".join(str(int(s)) for s in sorted(common["seed_b"].unique()))
        return (
            pairs,
            f"their students of the same method and sparsity have different seeds (A: {sa}; B: {sb}); masks are compared seed to seed",
        )
    kept = pairs[pairs["unit_a"].isin(list(weights_a)) & pairs["unit_b"].isin(list(weights_b))]
    if kept.empty:
        lacking = [n for n, w in (("A", weights_a), ("B", weights_b)) if not set(pairs[f"unit_{n.lower()}"]) & set(w)]
        return kept, (
            f"run {' and '.join(lacking) or 'A or B'} kept no weights for these students "
            "(runs copied without checkpoints have tables only)"
        )
    return kept.reset_index(drop=True), None
