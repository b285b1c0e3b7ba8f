"""Loss maps and the task-vs-general plane (kaviz.views.plots_maps) on hand-made tables whose
values are known by formula, plus one smoke test on the shipped showcase run."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kaviz.core import schema
from kaviz.views import plots_maps as pm

LAYERS, HEADS = 3, 2  # hidden states 0..3 (0 = embeddings), layers 1..3 have 2 heads each
DEAD = ("oneshot-magnitude", 0.9, 1, 2, 1)  # method, sparsity, seed, layer, head of the pruned head
#: (stage, method, sparsity, seed, budget); oneshot has two seeds at 90%, gradual trains at the main
#: budget 2 and once more at budget 4 (a budget curve), small-dense has one layer per teacher layer 3.
UNITS = [
    ("pretrained", "pretrained", 0.0, 1, math.nan),
    ("finetuned", "finetuned", 0.0, 1, math.nan),
    ("pruned", "oneshot-magnitude", 0.5, 1, math.nan),
    ("pruned", "oneshot-magnitude", 0.9, 1, math.nan),
    ("pruned", "oneshot-magnitude", 0.9, 2, math.nan),
    ("pruned", "gradual-magnitude", 0.9, 1, 2.0),
    ("pruned", "gradual-magnitude", 0.5, 1, 2.0),
    ("pruned", "gradual-magnitude", 0.7, 1, 2.0),
    ("pruned", "small-dense", 0.5, 1, 2.0),
    ("pruned", "gradual-magnitude", 0.9, 1, 4.0),
]


def b(seed: int, budget: float) -> float:
    """A seed's offset (+0.04 for seed 2) plus a budget-4 student's (+0.1)."""
    return 0.04 * (seed - 1) + (0.1 if budget == 4.0 else 0.0)


def cka(stage: str, s: float, r: int, ref: str, off: float) -> float:
    """linear_cka at reference layer r: students 1 - s r / 4 (0.8 - ... vs pretrained) + offset;
    the teacher vs pretrained 1 - r / 10."""
    return 1 - r / 10 if stage == "finetuned" else (1.0 if ref == "finetuned" else 0.8) - s * r / 4 + off


def js(stage: str, s: float, r: int, h: int, off: float) -> float:
    """js at reference layer r, head h: students s (r + h) / 10 + offset; the teacher (r + h) / 100."""
    return (r + h) / 100 if stage == "finetuned" else s * (r + h) / 10 + off


SCORE = {"pretrained": 0.5, "finetuned": 0.8}  # students: 0.8 - s / 4 + offset
GENERAL = {"pretrained": 0.9, "finetuned": 0.6}  # students: 0.6 + s / 10 + offset


def unit_id(stage, method, s, seed, budget) -> str:
    return stage if stage != "pruned" else f"{method}_{s}_{seed}" + ("_b4" if budget == 4.0 else "")


def make_knowledge(general: bool = True) -> pd.DataFrame:
    rows = []
    for stage, method, s, seed, budget in UNITS:
        key = {"unit": unit_id(stage, method, s, seed, budget), "stage": stage, "method": method}
        key |= {"sparsity": s, "seed": seed, "budget": budget}
        off = b(seed, budget)
        pairs = [(0, 0), (1, 3)] if method == "small-dense" else [(x, x) for x in range(LAYERS + 1)]
        refs = {"pretrained": [], "finetuned": ["pretrained"]}.get(stage, ["finetuned", "pretrained"])

        def row(ref, layer, r, head, metric, value, pruned=False, key=key):
            place = {"reference": ref, "layer": layer, "ref_layer": r, "head": head}
            rows.append(key | place | {"metric": metric, "value": value, "pruned": pruned})

        for ref in refs:
            for layer, r in pairs:
                row(ref, layer, r, -1, "linear_cka", cka(stage, s, r, ref, off))
                for h in range(HEADS) if layer else ():
                    dead = (method, s, seed, layer, h) == DEAD
                    row(ref, layer, r, h, "js", 0.69 if dead else js(stage, s, r, h, off), dead)  # finite on purpose
                    row(ref, layer, r, h, "kl", 2 * js(stage, s, r, h, off))
        if general:
            row("self", -1, None, -1, "general_sts_spearman", GENERAL.get(stage, 0.6 + s / 10 + off))
        row("self", 1, None, -1, "probe_accuracy", 0.5)
    return pd.DataFrame(rows)


def make_metrics() -> pd.DataFrame:
    rows = []
    for stage, method, s, seed, budget in UNITS:
        key = {"run": "maps", "stage": stage, "method": method, "sparsity": s, "seed": seed, "budget": budget}
        key["unit"] = unit_id(stage, method, s, seed, budget)
        score = SCORE.get(stage, 0.8 - s / 4 + b(seed, budget))
        rows += [key | {"metric": "score", "value": score}, key | {"metric": "accuracy", "value": 0.0}]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def k() -> pd.DataFrame:
    return schema.at_budget(make_knowledge(), 2.0)  # one budget, as the pages pass them


@pytest.fixture(scope="module")
def metrics() -> pd.DataFrame:
    return schema.at_budget(make_metrics(), 2.0)


# ----- loss maps ----------------------------------------------------------------------------------


@pytest.mark.parametrize("ref", ["finetuned", "pretrained"])
def test_loss_map_table_is_the_seed_mean_of_the_formula(k, ref):
    before = k.copy()
    t = pm.loss_map_table(k, "oneshot-magnitude", reference=ref)
    pd.testing.assert_frame_equal(k, before)  # input untouched
    assert list(t.index) == [0, 1, 2, 3] and list(t.columns) == [0.5, 0.9]
    for r in range(4):
        assert t.loc[r, 0.5] == pytest.approx(cka("pruned", 0.5, r, ref, 0.0))
        assert t.loc[r, 0.9] == pytest.approx(cka("pruned", 0.9, r, ref, 0.02))  # seeds 1 and 2: offsets 0, 0.04


def test_loss_map_table_on_teacher_layers_and_one_budget(k):
    sd = pm.loss_map_table(k, "small-dense")  # student layer 1 was distilled from teacher layer 3
    assert list(sd.index) == [0, 1, 2, 3] and sd[0.5].isna().tolist() == [False, True, True, False]
    assert sd.loc[3, 0.5] == pytest.approx(1 - 0.5 * 3 / 4)
    gm = pm.loss_map_table(make_knowledge(), "gradual-magnitude", main_budget=2.0)  # the budget-4 student left out
    assert list(gm.columns) == [0.5, 0.7, 0.9] and gm.loc[2, 0.9] == pytest.approx(1 - 0.9 * 2 / 4)
    assert gm.equals(pm.loss_map_table(k, "gradual-magnitude"))  # a table already at one budget: as given
    b4 = pm.loss_map_table(make_knowledge(), "gradual-magnitude", main_budget=4.0)
    assert list(b4.columns) == [0.9] and b4.loc[2, 0.9] == pytest.approx(1 - 0.9 * 2 / 4 + 0.1)
    with pytest.raises(ValueError, match="no whole-layer 'linear_cka'.*'wanda'"):
        pm.loss_map_table(k, "wanda")


def test_one_budget_is_the_schema_filter():
    m = make_metrics()
    assert set(schema.at_budget(m, 2.0)["unit"]) == {unit_id(*u) for u in UNITS if u[4] != 4.0}
    assert set(schema.at_budget(m, 4.0)["unit"]) == {unit_id(*u) for u in UNITS if u[4] != 2.0}
    assert schema.at_budget(m.drop(columns="budget"), 2.0).shape == (len(m), 8)


def test_loss_map_panels_share_a_fixed_colour_scale(k):
    fig = pm.loss_map(k, ["oneshot-magnitude", "gradual-magnitude"], "linear_cka", "finetuned")
    one, grad = fig.data
    assert (one.name, grad.name) == ("oneshot-magnitude", "gradual-magnitude")
    assert (one.xaxis, grad.xaxis) == ("x", "x2")  # side by side
    assert np.asarray(one.z, dtype=float) == pytest.approx(pm.loss_map_table(k, "oneshot-magnitude").to_numpy())
    assert list(one.x) == ["50%", "90%"] and list(grad.x) == ["50%", "70%", "90%"] and list(one.y) == [0, 1, 2, 3]
    assert one.texttemplate == "%{z:.2f}"
    assert one.coloraxis == grad.coloraxis == "coloraxis"  # one colour bar
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == (0.0, 1.0)  # not the data's range
    assert [a.text for a in fig.layout.annotations] == ["one-shot magnitude", "gradual magnitude"]
    assert fig.layout.yaxis.autorange == "reversed"
    assert "fine-tuned teacher" in fig.layout.yaxis.title.text


def test_loss_map_all_methods_and_reference(k):
    fig = pm.loss_map(k, reference="pretrained")
    assert [t.name for t in fig.data] == ["oneshot-magnitude", "gradual-magnitude", "small-dense"]  # run order
    assert np.asarray(fig.data[0].z)[3, 1] == pytest.approx(0.8 - 0.9 * 3 / 4 + 0.02)
    assert "pre-trained model" in fig.layout.coloraxis.colorbar.title.text


def test_attention_loss_map_excludes_pruned_heads(k):
    t = pm.attention_loss_map_table(k, "oneshot-magnitude")
    assert list(t.index) == [1, 2, 3] and list(t.columns) == [0.5, 0.9]
    for r in (1, 2, 3):
        assert t.loc[r, 0.5] == pytest.approx(np.mean([js("pruned", 0.5, r, h, 0.0) for h in range(HEADS)]))
    # layer 2 at 90%: seed 1 has only head 0 left (its pruned head 1 holds 0.69), seed 2 both heads
    seed1 = js("pruned", 0.9, 2, 0, 0.0)
    seed2 = np.mean([js("pruned", 0.9, 2, h, 0.04) for h in range(HEADS)])
    assert t.loc[2, 0.9] == pytest.approx((seed1 + seed2) / 2)
    assert t.loc[3, 0.9] == pytest.approx(np.mean([js("pruned", 0.9, 3, h, 0.02) for h in range(HEADS)]))
    fig = pm.attention_loss_map(k, ["oneshot-magnitude"], "js", "finetuned")
    assert np.asarray(fig.data[0].z, dtype=float) == pytest.approx(t.to_numpy())
    assert list(fig.data[0].y) == [1, 2, 3]
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == (0.0, pytest.approx(math.log(2)))
    assert fig.layout.coloraxis.colorscale[0][1] != pm.loss_map(k).layout.coloraxis.colorscale[0][1]  # reversed


def test_attention_loss_map_open_range_and_all_pruned_layer(k):
    fig = pm.attention_loss_map(k, ["small-dense"], "kl")  # no upper bound: up to the largest value drawn
    assert fig.layout.coloraxis.cmax == pytest.approx(np.mean([2 * js("pruned", 0.5, 3, h, 0.0) for h in range(HEADS)]))
    dead = k.copy()  # every head of layer 3 of the gradual 50% student pruned
    heads = (dead["metric"] == "js") & (dead["method"] == "gradual-magnitude") & (dead["layer"] == 3)
    dead.loc[heads & (dead["sparsity"] == 0.5), "pruned"] = True
    t = pm.attention_loss_map_table(dead, "gradual-magnitude")
    assert math.isnan(t.loc[3, 0.5]) and not math.isnan(t.loc[3, 0.7])


# ----- task vs general knowledge -----------------------------------------------------------------


def test_plane_table_by_formula(metrics, k):
    before = metrics.copy()
    t = pm.plane_table(metrics, k)
    pd.testing.assert_frame_equal(metrics, before)
    assert list(t.columns) == pm.PLANE_COLUMNS
    assert list(t["label"]) == [
        "pre-trained",
        "fine-tuned",
        "oneshot-magnitude 50%",
        "oneshot-magnitude 90%",
        "gradual-magnitude 50%",
        "gradual-magnitude 70%",
        "gradual-magnitude 90%",  # the budget-4 student is left out
        "small-dense 50%",
    ]
    anchors = t.set_index("label")
    assert anchors.loc["pre-trained", ["x", "y"]].tolist() == pytest.approx([0.5 / 0.8, 1.0])
    assert anchors.loc["fine-tuned", ["x", "y"]].tolist() == pytest.approx([1.0, 0.6 / 0.9])
    for _, r in t[t["stage"] == "pruned"].iterrows():
        off = 0.02 if r["label"] == "oneshot-magnitude 90%" else 0.0  # mean of seeds 1 and 2
        assert r["x"] == pytest.approx((0.8 - r["sparsity"] / 4 + off) / 0.8)
        assert r["y"] == pytest.approx((0.6 + r["sparsity"] / 10 + off) / 0.9)
    assert anchors.loc["oneshot-magnitude 90%", "n_seeds"] == 2
    b4 = pm.plane_table(make_metrics(), make_knowledge(), "general_sts_spearman", main_budget=4.0).set_index("label")
    assert b4.loc["gradual-magnitude 90%", "x"] == pytest.approx((0.8 - 0.9 / 4 + 0.1) / 0.8)
    assert "gradual-magnitude 50%" not in b4.index and "oneshot-magnitude 50%" in b4.index


def test_plane_figure(metrics, k):
    fig = pm.plane(metrics, k)
    t = {tr.name: tr for tr in fig.data}
    assert list(t) == ["oneshot-magnitude", "gradual-magnitude", "small-dense", "pre-trained", "fine-tuned"]
    g = t["gradual-magnitude"]
    assert list(g.text) == ["50%", "70%", "90%"] and g.mode == "lines+markers+text"  # along sparsity
    assert list(g.x) == pytest.approx([(0.8 - s / 4) / 0.8 for s in (0.5, 0.7, 0.9)])
    assert t["small-dense"].mode == "markers+text"
    assert (t["pre-trained"].x[0], t["pre-trained"].y[0]) == (pytest.approx(0.625), 1.0)
    assert (t["fine-tuned"].x[0], t["fine-tuned"].y[0]) == (1.0, pytest.approx(2 / 3))
    assert t["pre-trained"].marker.symbol != t["fine-tuned"].marker.symbol and list(t["fine-tuned"].text) == [
        "fine-tuned"
    ]
    guides = [(s.x0, s.x1, s.y0, s.y1, s.line.dash) for s in fig.layout.shapes]
    assert (1.0, 1.0, 0, 1, "dot") in guides and (0, 1, 1.0, 1.0, "dot") in guides
    assert fig.layout.xaxis.title.text == "task knowledge kept (score / teacher)"
    assert fig.layout.yaxis.title.text == "general knowledge kept (probe / pre-trained)"


def test_plane_needs_a_general_probe(metrics):
    with pytest.raises(ValueError, match="no general-knowledge probe"):
        pm.plane_table(metrics, make_knowledge(general=False))
    with pytest.raises(ValueError, match="'general_glue' is not in this run; present: general_sts_spearman"):
        pm.plane(metrics, make_knowledge(), "general_glue")
    with pytest.raises(ValueError, match="task metric 'f1'"):
        pm.plane_table(metrics, make_knowledge(), metric="f1")
    k = make_knowledge()
    k = k[~((k["stage"] == "pretrained") & (k["metric"] == "general_sts_spearman"))]
    with pytest.raises(ValueError, match="pre-trained model has no general probe"):
        pm.plane_table(metrics, k)


# ----- the shipped showcase run -------------------------------------------------------------------

SHOWCASE = Path(__file__).resolve().parents[1] / "assets" / "runs" / "showcase-sst2"


@pytest.mark.skipif(not SHOWCASE.exists(), reason="no shipped showcase run")
def test_showcase_maps_and_plane():
    from kaviz.analysis.analyzer import knowledge_table
    from kaviz.core.config import main_budget
    from kaviz.store import RunStore

    run = RunStore(str(SHOWCASE.parent)).open_run("showcase-sst2")
    mb = main_budget(run.config)  # as the pages read them: budget-curve units have their own page
    k, m = schema.at_budget(knowledge_table(run), mb), schema.at_budget(run.metrics(), mb)
    rows = k[(k["method"] == "oneshot-magnitude") & (k["metric"] == "linear_cka") & (k["reference"] == "finetuned")]
    cka3 = schema.layer_rows(rows).query("layer == 3 and sparsity == 0.9")["value"].mean()
    t = pm.loss_map_table(k, "oneshot-magnitude")
    assert t.loc[3, 0.9] == pytest.approx(cka3) and t.index[0] == 0
    heads = k[(k["method"] == "knowledge-aware") & (k["metric"] == "js") & (k["reference"] == "pretrained")]
    heads = schema.head_rows(heads).query("layer == 2 and not pruned and sparsity == 0.9")
    assert pm.attention_loss_map_table(k, "knowledge-aware", reference="pretrained").loc[2, 0.9] == pytest.approx(
        heads["value"].mean()
    )
    general = k[k["metric"] == "general_sts_spearman"].set_index("unit")["value"]
    score = m[m["metric"] == "score"].set_index("unit")["value"]
    p = pm.plane_table(m, k).set_index("label")
    units = k[(k["method"] == "gradual-magnitude") & (k["sparsity"] == 0.9)]["unit"].unique()  # every seed's
    assert p.loc["gradual-magnitude 90%", "x"] == pytest.approx(score[units].mean() / score["finetuned"])
    assert p.loc["gradual-magnitude 90%", "y"] == pytest.approx(general[units].mean() / general["pretrained"])
    students = k[k["stage"] == "pruned"]["method"].nunique()
    assert len(pm.loss_map(k).data) == students  # one heatmap per method with students
    assert len([t for t in pm.plane(m, k).data if t.name in set(k["method"])]) == students
