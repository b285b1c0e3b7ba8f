"""kaviz.analysis.compare: config differences, tables over runs, mask overlap and surviving heads."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from kaviz.analysis import compare
from kaviz.core.config import RunConfig
from kaviz.core.structure import prunable_linears
from kaviz.stages.pipeline import plan_units
from kaviz.store import RunStore


def test_flatten():
    assert compare.flatten({"a": 1, "b": {"c": [1, 2], "d": {"e": None}}, "f": {}}) == {
        "a": 1,
        "b.c": [1, 2],
        "b.d.e": None,
        "f": {},
    }


def test_config_diff_lists_only_differing_keys():
    a = RunConfig(name="a").to_dict()
    b = RunConfig.from_dict({"name": "b", "training": {"max_steps": 10}, "sparsities": [0.5]}).to_dict()
    diff = compare.config_diff(a, b, ("run a", "run b"))
    assert list(diff.columns) == ["key", "run a", "run b"]
    assert list(diff["key"]) == ["name", "training.max_steps", "sparsities"]
    row = diff.set_index("key").loc["training.max_steps"]
    assert (row["run a"], row["run b"]) == ("null", "10")
    assert diff.set_index("key").loc["sparsities", "run b"] == "[0.5]"


def test_config_diff_types_and_missing_keys():
    diff = compare.config_diff({"x": True, "y": 1, "n": {"k": 1}}, {"x": 1, "y": 1.0, "z": "s"})
    rows = diff.set_index("key")
    assert list(diff["key"]) == ["x", "n.k", "z"]  # True != 1, but 1 == 1.0
    assert (rows.loc["n.k", "b"], rows.loc["z", "a"], rows.loc["z", "b"]) == (compare.MISSING, compare.MISSING, "s")
    assert compare.config_diff({"a": 1}, {"a": 1}).empty
    with pytest.raises(ValueError, match="at least two"):
        compare.config_table({"only": {}})


def test_config_table_of_three():
    t = compare.config_table({"p": {"a": 1, "b": 2}, "q": {"a": 1, "b": 3}, "r": {"a": 2, "b": 2}})
    assert t.to_dict("records") == [
        {"key": "a", "p": "1", "q": "1", "r": "2"},
        {"key": "b", "p": "2", "q": "3", "r": "2"},
    ]


def curve(teacher: float, points: dict[tuple[str, float], float]) -> pd.DataFrame:
    rows = [{"stage": "finetuned", "method": "finetuned", "sparsity": 0.0, "mean": teacher}]
    rows += [{"stage": "pruned", "method": m, "sparsity": s, "mean": v} for (m, s), v in points.items()]
    return pd.DataFrame(rows)


def test_stack_and_score_difference():
    a = curve(0.9, {("m1", 0.5): 0.8, ("m1", 0.9): 0.6, ("m2", 0.5): 0.7})
    b = curve(0.8, {("m1", 0.5): 0.75, ("m1", 0.9): 0.65, ("m3", 0.5): 0.1})
    stacked = compare.stack({"A": a, "B": b, "empty": a.iloc[:0]})
    assert list(stacked.columns)[0] == "run" and list(stacked["run"].unique()) == ["A", "B"]
    assert len(stacked) == len(a) + len(b)
    diff = compare.score_difference(a, b, ("A", "B"))
    assert list(diff.columns) == ["method", "sparsity", "A", "B", "difference"]
    assert diff[["method", "sparsity"]].values.tolist() == [["m1", 0.5], ["m1", 0.9]]  # only shared points
    assert diff["difference"].tolist() == pytest.approx([0.05, -0.05])


def knowledge(run_shift: float) -> pd.DataFrame:
    rows = []
    for method, seeds in (("m1", (1, 2)), ("m2", (1,))):
        for s in (0.5, 0.9):
            for seed in seeds:
                for layer in range(3):
                    base = {"stage": "pruned", "method": method, "sparsity": s, "seed": seed, "layer": layer}
                    v = 1 - s * layer / 10 + 0.01 * seed + run_shift
                    rows += [
                        {**base, "reference": "finetuned", "head": -1, "metric": "linear_cka", "value": v},
                        {**base, "reference": "pretrained", "head": -1, "metric": "linear_cka", "value": v / 2},
                        {**base, "reference": "finetuned", "head": 0, "metric": "jsd", "value": 9.0},
                        {**base, "reference": "self", "head": -1, "metric": "probe_accuracy", "value": 9.0},
                    ]
    rows.append(
        {
            "stage": "finetuned",
            "method": None,
            "sparsity": None,
            "seed": 1,
            "layer": 1,
            "reference": "pretrained",
            "head": -1,
            "metric": "rbf_cka",
            "value": 0.5,
        }
    )
    return pd.DataFrame(rows)


def test_knowledge_options_and_curves():
    tables = {"A": knowledge(0.0), "B": knowledge(0.1), "none": pd.DataFrame()}
    metrics, sparsities = compare.knowledge_options(tables)
    assert metrics == ["linear_cka", "rbf_cka"] and sparsities == [0.5, 0.9]
    c = compare.knowledge_curves(tables, "linear_cka", "finetuned", 0.9)
    assert list(c.columns) == ["run", "method", "sparsity", "layer", "value", "n_seeds"]
    assert len(c) == 2 * 2 * 3
    m1 = c[(c["run"] == "A") & (c["method"] == "m1")]
    assert m1["value"].tolist() == pytest.approx([1 - 0.9 * i / 10 + 0.015 for i in range(3)])  # mean of seeds 1, 2
    assert m1["n_seeds"].tolist() == [2, 2, 2]
    b2 = c[(c["run"] == "B") & (c["method"] == "m2")]
    assert b2["value"].tolist() == pytest.approx([1 - 0.9 * i / 10 + 0.11 for i in range(3)])
    pre = compare.knowledge_curves(tables, "linear_cka", "pretrained", 0.5 + 1e-12)  # float noise tolerated
    assert len(pre) == 12
    assert compare.knowledge_curves(tables, "jsd", "finetuned", 0.9).empty  # per-head rows are not layer curves
    assert compare.knowledge_curves(tables, "linear_cka", "finetuned", 0.8).empty


def test_matching_units():
    def units(rows):
        return pd.DataFrame(rows, columns=["unit", "stage", "method", "sparsity", "seed", "status"])

    a = units(
        [
            ["finetuned", "finetuned", None, None, None, "done"],
            ["p_m1_0.5", "pruned", "m1", 0.5, 42, "done"],
            ["p_m1_0.9", "pruned", "m1", 0.9, 42, "done"],
            ["p_m2_0.5", "pruned", "m2", 0.5, 42, "failed"],
        ]
    )
    b = units(
        [
            ["x_m1_0.5", "pruned", "m1", 0.5, 42, "done"],
            ["x_m1_0.9", "pruned", "m1", 0.9, 7, "done"],
            ["x_m2_0.5", "pruned", "m2", 0.5, 42, "done"],
        ]
    )
    m = compare.matching_units(a, b)
    assert m.to_dict("records") == [
        {"method": "m1", "sparsity": 0.5, "seed": 42, "unit_a": "p_m1_0.5", "unit_b": "x_m1_0.5"}
    ]


def random_masks(model, p: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for lin in prunable_linears(model).values():
            lin.weight[torch.rand(lin.weight.shape, generator=g) < p] = 0
    return model


def test_mask_overlap_against_sets(tiny_bert):
    a = random_masks(tiny_bert(seed=0), 0.5, 1)
    b = random_masks(tiny_bert(seed=1), 0.7, 2)
    before = {k: v.clone() for k, v in a.state_dict().items()}
    table = compare.mask_overlap(a, b)
    assert all(torch.equal(before[k], v) for k, v in a.state_dict().items())  # not modified
    assert len(table) == 2 * 6 and list(table["role"][:6]) == ["query", "key", "value", "attn_out", "ffn_in", "ffn_out"]
    for row, (name, la), lb in zip(table.itertuples(), prunable_linears(a).items(), prunable_linears(b).values()):
        kept_a = {i for i, v in enumerate(la.weight.flatten().tolist()) if v != 0}
        kept_b = {i for i, v in enumerate(lb.weight.flatten().tolist()) if v != 0}
        assert row.module == name
        assert (row.kept_a, row.kept_b, row.shared) == (len(kept_a), len(kept_b), len(kept_a & kept_b))
        assert row.jaccard == pytest.approx(len(kept_a & kept_b) / len(kept_a | kept_b))
    assert 0.15 < table["jaccard"].mean() < 0.35  # independent masks: about 0.5*0.3 / (1 - 0.5*0.7)


def test_mask_overlap_edge_cases(tiny_bert):
    a = tiny_bert()
    assert (compare.mask_overlap(a, a)["jaccard"] == 1.0).all()
    empty = random_masks(tiny_bert(), 1.1, 0)
    assert compare.mask_overlap(empty, empty)["jaccard"].map(math.isnan).all()
    assert (compare.mask_overlap(a, empty)["jaccard"] == 0.0).all()
    with pytest.raises(ValueError, match="shapes"):
        compare.mask_overlap(a, tiny_bert(inter=32))
    with pytest.raises(ValueError, match="different encoder matrices"):
        compare.mask_overlap(a, tiny_bert(layers=3))


def test_surviving_heads(tiny_bert):
    model = tiny_bert(hidden=32, heads=4)  # head dim 8
    layer = model.bert.encoder.layer[1].attention.self
    with torch.no_grad():
        layer.query.weight[8:16] = 0  # head 1: all of Q
        layer.key.weight[24:28] = 0  # head 3: half of K
        layer.value.weight[0:8, :16] = 0  # head 0: half of V
    t = compare.surviving_heads(model)
    assert list(t.columns) == ["layer", "head", "query", "key", "value", "nonzero"]
    assert len(t) == 2 * 4
    assert (t[t["layer"] == 0][["query", "key", "value", "nonzero"]] == 1.0).all().all()
    l1 = t[t["layer"] == 1].set_index("head")
    assert l1.loc[1, ["query", "key", "value"]].tolist() == [0.0, 1.0, 1.0]
    assert l1.loc[1, "nonzero"] == pytest.approx(2 / 3)
    assert l1.loc[3, "key"] == 0.5 and l1.loc[0, "value"] == 0.5 and l1.loc[2, "nonzero"] == 1.0


def test_unit_masks_from_checkpoints(tmp_path, tiny_bert):
    cfg = RunConfig.from_dict({"name": "r", "methods": ["oneshot-magnitude"], "sparsities": [0.5, 0.9]})
    units = plan_units(cfg)
    run = RunStore(tmp_path).create_run(cfg.to_dict(), units=units)
    models = {
        "finetuned": tiny_bert(seed=0),
        "pruned_oneshot-magnitude_s0.5_seed42": random_masks(tiny_bert(seed=0), 0.5, 3),
    }
    for u in units:
        run.start_unit(u["unit"])
        if u["unit"] in models:
            run.save_checkpoint(u["unit"], models[u["unit"]])
        run.finish_unit(u["unit"], [{"metric": "score", "value": 0.5}])
    assert compare.units_with_checkpoints(run) == list(models)
    overlap, heads = compare.unit_masks(run, "finetuned", run, "pruned_oneshot-magnitude_s0.5_seed42")
    expected = compare.mask_overlap(*models.values())
    pd.testing.assert_frame_equal(overlap, expected)
    assert overlap["jaccard"].to_numpy() == pytest.approx(np.full(12, 0.5), abs=0.1)
    assert set(heads["unit"]) == {"a", "b"} and (heads[heads["unit"] == "a"]["nonzero"] == 1.0).all()
    with pytest.raises(ValueError, match="no checkpoint"):
        compare.unit_masks(run, "pruned_oneshot-magnitude_s0.9_seed42", run, "finetuned")
    # the pre-trained stage needs no checkpoint when its model loads offline (here the packaged one)
    assert compare.load_checkpoint(run, "pretrained").config.num_labels == 2


def test_overlay_points_average_seeds_and_take_the_fastest_variant():
    import numpy as np
    import pandas as pd

    from kaviz.analysis.compare import overlay_points

    def rows(unit, method, s, seed, score, nz):
        base = dict(run="r", stage="pruned", method=method, sparsity=s, seed=seed, budget=np.nan, unit=unit)
        return [base | dict(metric="score", value=score), base | dict(metric="nonzero_encoder_params", value=nz)]

    m = pd.DataFrame(rows("u1", "wanda", 0.5, 1, 0.8, 100) + rows("u2", "wanda", 0.5, 2, 0.7, 100))
    inf = pd.DataFrame(
        [dict(unit="u1", batch_size=32, variant=v, speedup=x) for v, x in (("dense", 1.0), ("sparse", 1.5))]
        + [
            dict(unit="u2", batch_size=32, variant="dense", speedup=0.9),
            dict(unit="u2", batch_size=1, variant="dense", speedup=9.0),
        ]
    )
    p = overlay_points({"A": m}, {"A": inf})
    assert p.to_dict("records") == [
        dict(
            run="A",
            method="wanda",
            sparsity=0.5,
            score=pytest.approx(0.75),
            nonzero_params=100.0,
            speedup=pytest.approx(1.2),
        )
    ]
    assert overlay_points({"A": m}).speedup.isna().all()


def test_filter_runs_and_pareto_directions():
    import pandas as pd

    from kaviz.views.plots_costs import pareto_front
    from kaviz.views.ui_data import filter_runs, run_methods

    runs = pd.DataFrame(
        dict(run_id=["x", "y", "z"], task=["sst2", "mrpc", "sst2"], model=["m1", "m1", "m2"],
             methods=["wanda, sparsegpt", "knowledge-aware", "knowledge-aware, wanda"])
    )  # fmt: skip
    assert list(filter_runs(runs, tasks=["sst2"]).run_id) == ["x", "z"]
    assert list(filter_runs(runs, models=["m1"], methods=["knowledge-aware"]).run_id) == ["y"]
    assert list(filter_runs(runs).run_id) == ["x", "y", "z"]
    assert run_methods(runs) == ["wanda", "sparsegpt", "knowledge-aware"]
    pts = pd.DataFrame(dict(sparsity=[0.5, 0.9, 0.9], nonzero_params=[50, 10, 10], score=[0.9, 0.8, 0.7]))
    assert list(pareto_front(pts, "sparsity").score) == [0.9, 0.8]  # sparser is better
    assert list(pareto_front(pts, "nonzero_params").score) == [0.8, 0.9]  # fewer weights is better


def listing(*rows):
    return pd.DataFrame(
        [{"path": f"/r/{n}", "folder": "/r", "run_id": n, "task": t} for n, t in rows],
        columns=["path", "folder", "run_id", "task"],
    )


def test_default_pair_prefers_the_current_runs_task():
    runs = listing(("new-sst2", "sst2"), ("mrpc-1", "mrpc"), ("old-sst2", "sst2"), ("mrpc-2", "mrpc"))
    assert compare.default_pair(runs, ("/r", "mrpc-2")) == (["/r/mrpc-2", "/r/mrpc-1"], None)
    assert compare.default_pair(runs, None) == (["/r/new-sst2", "/r/old-sst2"], None)  # the first task with two
    lonely = listing(("cola", "cola"), ("a", "sst2"), ("b", "sst2"))
    pair, note = compare.default_pair(lonely, ("/r", "cola"))
    assert pair == ["/r/a", "/r/b"] and "no other run of cola's task (cola)" in note
    pair, note = compare.default_pair(listing(("x", "sst2"), ("y", "mrpc")), None)
    assert pair == ["/r/x", "/r/y"] and "no two runs share a task" in note


def knowledge_rows(sparsities, metric="linear_cka", reference="finetuned"):
    return pd.DataFrame(
        [
            {"unit": f"u{s}", "stage": "pruned", "method": "m", "sparsity": s, "seed": 42, "budget": None,
             "reference": reference, "layer": 1, "ref_layer": 1, "head": -1, "metric": metric, "value": 0.5}
            for s in sparsities
        ]
    )  # fmt: skip


def test_shared_sparsities_and_why_a_run_drops_out():
    tables = {
        "a": knowledge_rows([0.5, 0.9]),
        "b": knowledge_rows([0.5]),
        "c": pd.DataFrame(),
        "d": knowledge_rows([0.5, 0.9], reference="pretrained"),
    }
    assert compare.shared_sparsities(tables) == ([0.5], [0.5, 0.9])
    why = compare.knowledge_dropped(tables, "linear_cka", "finetuned", 0.9)
    assert why == {
        "b": "no pruned student at 90% (it has 50%)",
        "c": "no knowledge tables yet (`kaviz analyze` computes them)",
        "d": "no linear_cka against the fine-tuned teacher",
    }
    assert compare.knowledge_dropped(tables, "linear_cka", "finetuned", 0.5) == {
        "c": why["c"],
        "d": why["d"],
    }


def test_mask_pairs_say_why_none_compare():
    def units(seed, methods=("m",)):
        return pd.DataFrame(
            [{"unit": f"p_{m}_{seed}", "stage": "pruned", "method": m, "sparsity": 0.5, "seed": seed, "status": "done"}
             for m in methods]
        )  # fmt: skip

    pairs, why = compare.mask_pairs(units(42), units(43), ["p_m_42"], ["p_m_43"])
    assert pairs.empty and "different seeds (A: 42; B: 43)" in why
    pairs, why = compare.mask_pairs(units(42), units(42, ("other",)), ["p_m_42"], ["p_other_42"])
    assert pairs.empty and "no pruned student of the same method and sparsity" in why
    pairs, why = compare.mask_pairs(units(42), units(42), ["p_m_42"], [])
    assert pairs.empty and "run B kept no weights" in why
    pairs, why = compare.mask_pairs(units(42), units(42), ["p_m_42"], ["p_m_42"])
    assert why is None and list(pairs["unit_a"]) == ["p_m_42"]
