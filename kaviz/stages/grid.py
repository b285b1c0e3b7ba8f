"""The grid of a run: which units a config plans (stages, then students: method x sparsity x seed x
budget, and imported students), and what a larger grid adds to a stored run (``kaviz run --extend``)."""

from __future__ import annotations

from kaviz.core.config import GRID_KEYS, RunConfig
from kaviz.core.errors import ConfigError
from kaviz.core.registry import METHOD_INFO
from kaviz.core.validation import parse_import
from kaviz.store import manifest as mf
from kaviz.store import unit_id


def plan_units(cfg: RunConfig) -> list[dict]:
    """Units in execution order: pretrained, finetuned, then students (seed, sparsity, method)."""
    units = [
        {
            "unit": unit_id("pretrained"),
            "stage": "pretrained",
            "method": "pretrained",
            "sparsity": 0.0,
            "seed": cfg.seed,
        },
        {"unit": unit_id("finetuned"), "stage": "finetuned", "method": "finetuned", "sparsity": 0.0, "seed": cfg.seed},
    ]
    for label, _path, sparsity in parse_imports(cfg.import_students):
        units.append(
            {
                "unit": unit_id("pruned", label, sparsity, cfg.seed),
                "stage": "pruned",
                "method": label,
                "sparsity": sparsity,
                "seed": cfg.seed,
            }
        )
    main_budget = cfg.main_budget
    seen = {u["unit"] for u in units}

    def add(m: str, s: float, seed: int, budget: float | None) -> None:
        info = METHOD_INFO.get(m)
        trains = info.trains if info is not None else True
        if not trains and budget is not None and budget != main_budget:
            return  # a budget means nothing to a method that does not train
        extra = budget is not None and budget != main_budget
        uid = unit_id("pruned", m, s, seed, budget if extra else None)
        if uid in seen:
            return
        seen.add(uid)
        b = (budget if extra else main_budget) if trains else None
        units.append({"unit": uid, "stage": "pruned", "method": m, "sparsity": s, "seed": seed, "budget": b})

    extra_at = cfg.sparsities if cfg.extra_seed_sparsities is None else cfg.extra_seed_sparsities
    for seed in [cfg.seed, *cfg.extra_seeds]:
        for s in sorted(cfg.sparsities):
            if seed != cfg.seed and s not in extra_at:
                continue
            for m in cfg.methods:
                add(m, s, seed, main_budget)
    for block in cfg.extra_units:
        for budget in block.budgets or [main_budget]:
            for seed in block.seeds or [cfg.seed]:
                for s in sorted(block.sparsities or cfg.sparsities):
                    for m in block.methods or cfg.methods:
                        add(m, s, seed, budget)
    return units


def parse_imports(entries: list[str]) -> list[tuple[str, str, float]]:
    """'label@sparsity=path' entries of ``import_students`` -> (label, path, target sparsity), parsed
    by the config's own checker (:func:`kaviz.core.validation.parse_import`)."""
    return [parse_import(e) for e in entries]


def grid_extension(stored: dict, cfg: RunConfig) -> list[str]:
    """The units ``cfg`` would add to a run stored with config ``stored`` under ``kaviz run
    --extend`` (empty: the same grid). ConfigError when it cannot extend that run: a field outside
    ``GRID_KEYS`` differs, or the new grid leaves out a unit the run has."""
    old = RunConfig.from_dict(stored)
    _, fixed = mf.split_diff(old.to_dict(), cfg.to_dict(), GRID_KEYS)
    if fixed:
        raise ConfigError(f"only {', '.join(GRID_KEYS)} may change to extend a run; these differ: " + "; ".join(fixed))
    paths = {(label, s): p for label, p, s in parse_imports(old.import_students)}
    moved = [f"{label}@{s:g}" for label, p, s in parse_imports(cfg.import_students) if paths.get((label, s), p) != p]
    if moved:
        raise ConfigError(
            f"extending keeps imported students as they are; these point elsewhere now: {', '.join(moved)}"
        )
    before, after = [u["unit"] for u in plan_units(old)], [u["unit"] for u in plan_units(cfg)]
    dropped = [u for u in before if u not in after]
    if dropped:
        raise ConfigError(f"extending only adds units; the new grid leaves out {', '.join(dropped)}")
    return [u for u in after if u not in before]
