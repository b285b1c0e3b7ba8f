"""Knowledge figures (kaviz.views.plots_knowledge) on hand-made analysis tables whose values are known.

:func:`knowledge_tables` also feeds the app tests (tests/test_app_knowledge.py), which write the
same tables into a run.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from kaviz.core.config import RunConfig
from kaviz.stages.pipeline import plan_units
from kaviz.views import plots_attention as pa
from kaviz.views import plots_knowledge as pk

#: The planned run: 2 methods x 2 sparsities, seed 7 added at 90%; small-dense students have one
#: layer (mapped to teacher layer 2), the others two; every model has 2 heads.
CONFIG = {
    "methods": ["oneshot-magnitude", "small-dense"],
    "sparsities": [0.5, 0.9],
    "extra_seeds": [7],
    "extra_seed_sparsities": [0.9],
}
HEADS = 2
PRUNED_UNIT, PRUNED_LAYER, PRUNED_HEAD = "pruned_oneshot-magnitude_s0.9_seed42", 2, 1
TEXTS = ["a good film", "a bad film"]


def units(name: str = "k") -> list[dict]:
    return plan_units(RunConfig(name=name, **CONFIG))


def layer_map(u: dict) -> list[int]:
    return [2] if u["method"] == "small-dense" else [1, 2]


def knowledge_tables(planned: list[dict]) -> dict[str, pd.DataFrame]:
    """knowledge, cka_matrix and attribution rows of every unit (with its unit, stage, method,
    sparsity, seed), by formula (s = sparsity, b = 0.02 for seed 7):

    - linear_cka vs finetuned at reference layer r: 1 - s r / 4 + b; vs pretrained 0.8 - s r / 4 + b
      (the teacher vs pretrained: 1 - r / 10); rbf_cka = linear_cka - 0.05;
    - js per (layer l, head h): s (l + h) / 10 + b (teacher vs pretrained: (l + h) / 100), kl = 2 js,
      cosine = 1 - js; head 1 of layer 2 of PRUNED_UNIT is pruned (NaN);
    - attention_entropy: 1 + l / 10 + h / 100 for the stages (+ 0.5 pre-trained), a student's is its
      teacher layer's + s;
    - probe_accuracy at layer l: 0.5 + l / 10 (students - s / 10); general_sts_spearman: 0.8
      pre-trained, 0.7 fine-tuned, 0.7 - 0.2 s + b students; attribution_spearman 1 - s / 2 + b,
      attribution_topk_overlap 1 - s / 4, per example ± 0.1 around the Spearman mean;
    - cka_matrix: 1 - |l - r| / 10 - s / 10.
    """
    know: list[dict] = []
    cka: list[dict] = []
    attr: list[dict] = []
    for u in planned:
        stage, s = u["stage"], u["sparsity"]
        b = 0.02 if u["seed"] == 7 else 0.0
        key = {k: u[k] for k in ("unit", "stage", "method", "sparsity", "seed")}
        lmap = layer_map(u) if stage == "pruned" else [1, 2]
        pairs = [(0, 0), *[(j + 1, t) for j, t in enumerate(lmap)]]
        refs = {"pretrained": [], "finetuned": ["pretrained"], "pruned": ["finetuned", "pretrained"]}[stage]

        def row(reference, layer, ref_layer, head, metric, value, pruned=False, key=key):
            know.append(
                {**key, "reference": reference, "layer": layer, "ref_layer": ref_layer, "head": head}
                | {"metric": metric, "value": value, "pruned": pruned}
            )

        for ref in refs:
            for lay, r in pairs:
                cka_v = 1 - r / 10 if stage == "finetuned" else (1.0 if ref == "finetuned" else 0.8) - s * r / 4 + b
                row(ref, lay, float(r), -1, "linear_cka", cka_v)
                row(ref, lay, float(r), -1, "rbf_cka", cka_v - 0.05)
                for j in range(3):
                    cka.append(
                        {**key, "layer": lay, "ref_layer": j, "metric": "linear_cka"}
                        | {"value": 1 - abs(lay - j) / 10 - s / 10, "reference": ref}
                    )
                if lay == 0:
                    continue
                for h in range(HEADS):
                    js = (lay + h) / 100 if stage == "finetuned" else s * (lay + h) / 10 + b
                    dead = (u["unit"], lay, h) == (PRUNED_UNIT, PRUNED_LAYER, PRUNED_HEAD)
                    for metric, v in (("js", js), ("kl", 2 * js), ("cosine", 1 - js)):
                        row(ref, lay, float(r), h, metric, math.nan if dead else v, dead)
        for lay, r in pairs:
            row("self", lay, math.nan, -1, "probe_accuracy", 0.5 + lay / 10 - s / 10)
            if lay:
                for h in range(HEADS):
                    teacher = 1 + r / 10 + h / 100
                    ent = teacher + (0.5 if stage == "pretrained" else s)
                    dead = (u["unit"], lay, h) == (PRUNED_UNIT, PRUNED_LAYER, PRUNED_HEAD)
                    row("self", lay, math.nan, h, "attention_entropy", math.nan if dead else ent, dead)
        general = {"pretrained": 0.8, "finetuned": 0.7}.get(stage, 0.7 - 0.2 * s + b)
        row("self", -1, math.nan, -1, "general_sts_spearman", general)
        if stage == "pruned":
            row("finetuned", -1, math.nan, -1, "attribution_spearman", 1 - s / 2 + b)
            row("finetuned", -1, math.nan, -1, "attribution_topk_overlap", 1 - s / 4)
            for i, text in enumerate(TEXTS):
                attr.append(
                    {**key, "example": i, "text": text, "target": 1 - i}
                    | {"spearman": 1 - s / 2 + b + (0.1 if i == 0 else -0.1), "topk_overlap": 1 - s / 4, "k": 5}
                )
    return {"knowledge": pd.DataFrame(know), "cka_matrix": pd.DataFrame(cka), "attribution": pd.DataFrame(attr)}


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    return knowledge_tables(units())


@pytest.fixture
def k(tables) -> pd.DataFrame:
    return tables["knowledge"]


def by_name(fig):
    return {t.name: t for t in fig.data}


# ----- per-layer lines ----------------------------------------------------------------------------


def test_layer_table_means_over_seeds_on_reference_layers(k):
    before = k.copy()
    t = pk.layer_table(k, "linear_cka", "finetuned")
    pd.testing.assert_frame_equal(k, before)  # input untouched
    assert list(dict.fromkeys(t["label"])) == [
        "oneshot-magnitude 50%",
        "oneshot-magnitude 90%",
        "small-dense 50%",
        "small-dense 90%",
    ]  # no stage compares with the teacher; methods in run order, then sparsity
    one = t[t["label"] == "oneshot-magnitude 90%"].set_index("layer")
    assert list(one.index) == [0, 1, 2]
    assert one.loc[2, "mean"] == pytest.approx(1 - 0.9 * 2 / 4 + 0.01)  # seeds 42 and 7
    assert one.loc[2, "n_seeds"] == 2 and one.loc[2, "std"] == pytest.approx(0.02 / math.sqrt(2))
    # the one-layer small-dense student is drawn at the teacher layer it was distilled from
    sd = t[t["label"] == "small-dense 50%"]
    assert list(sd["layer"]) == [0, 2] and sd["mean"].iloc[1] == pytest.approx(1 - 0.5 * 2 / 4)


def test_layer_table_filters_keep_stages(k):
    t = pk.layer_table(k, "linear_cka", "pretrained", methods=["small-dense"], sparsities=[0.9])
    assert list(dict.fromkeys(t["label"])) == ["fine-tuned", "small-dense 90%"]
    assert list(t[t["stage"] == "finetuned"]["mean"]) == pytest.approx([1.0, 0.9, 0.8])


def test_layer_table_self_uses_own_layers(k):
    t = pk.layer_table(k, "probe_accuracy", "self")
    sd = t[t["label"] == "small-dense 90%"]
    assert list(sd["layer"]) == [0, 1] and list(sd["mean"]) == pytest.approx([0.41, 0.51])
    assert list(t[t["label"] == "pre-trained"]["mean"]) == pytest.approx([0.5, 0.6, 0.7])


def test_layer_lines_colour_by_method_dash_by_sparsity(k):
    fig = pk.layer_lines(k, "rbf_cka", "pretrained")
    t = by_name(fig)
    assert list(t) == [
        "fine-tuned",
        "oneshot-magnitude 50%",
        "oneshot-magnitude 90%",
        "small-dense 50%",
        "small-dense 90%",
    ]
    assert t["oneshot-magnitude 50%"].line.color == t["oneshot-magnitude 90%"].line.color
    assert t["oneshot-magnitude 50%"].line.dash == "solid" and t["oneshot-magnitude 90%"].line.dash == "dash"
    assert t["small-dense 50%"].line.color != t["oneshot-magnitude 50%"].line.color
    assert list(t["fine-tuned"].y) == pytest.approx([0.95, 0.85, 0.75])
    assert list(t["small-dense 90%"].x) == [0, 2]
    assert "pre-trained model" in fig.layout.yaxis.title.text


def test_layer_lines_empty_selection_is_an_empty_figure(k):
    assert not pk.layer_lines(k, "linear_cka", "finetuned", methods=[]).data


# ----- one value per model over sparsity ---------------------------------------------------------


def test_metric_vs_sparsity_lines_and_references(k):
    fig = pk.metric_vs_sparsity(k, "general_sts_spearman")
    t = by_name(fig)
    assert set(t) == {
        "oneshot-magnitude",
        "oneshot-magnitude spread",
        "small-dense",
        "small-dense spread",
        "fine-tuned teacher",
        "pre-trained",
    }
    one = t["oneshot-magnitude"]
    assert list(one.x) == [0.5, 0.9]
    assert list(one.y) == pytest.approx([0.6, 0.7 - 0.18 + 0.01])
    band = t["oneshot-magnitude spread"]  # seeds 42 and 7 at 90%: 0.52 and 0.54; one seed at 50%
    assert list(band.x) == [0.5, 0.9, 0.9, 0.5]
    assert list(band.y) == pytest.approx([0.6, 0.54, 0.52, 0.6])
    assert t["small-dense"].mode == "markers"
    assert list(t["pre-trained"].y) == pytest.approx([0.8, 0.8]) and t["pre-trained"].line.dash == "dot"
    assert list(t["fine-tuned teacher"].y) == pytest.approx([0.7, 0.7])
    assert t["fine-tuned teacher"].line.dash == "dash"


def test_sparsity_table_attribution_agreement(k):
    t = pk.sparsity_table(k, "attribution_spearman", "finetuned")
    assert set(t["stage"]) == {"pruned"}
    row = t[(t["method"] == "small-dense") & (t["sparsity"] == 0.9)].iloc[0]
    assert row["mean"] == pytest.approx(0.56) and row["n_seeds"] == 2 and row["lo"] == pytest.approx(0.55)
    fig = pk.metric_vs_sparsity(k, "attribution_topk_overlap", "finetuned")
    assert {n for n in by_name(fig) if "spread" not in n} == {"oneshot-magnitude", "small-dense"}  # no dense rows
    assert list(by_name(fig)["oneshot-magnitude"].y) == pytest.approx([1 - 0.5 / 4, 1 - 0.9 / 4])


# ----- heatmaps -----------------------------------------------------------------------------------


def test_cka_heatmap(tables):
    cka = tables["cka_matrix"]
    grid = pk.cka_matrix_table(cka, "pruned_small-dense_s0.5_seed42", "finetuned")
    assert grid.shape == (2, 3) and grid.index.name == "layer"
    fig = pk.cka_heatmap(cka, "pruned_small-dense_s0.5_seed42", "finetuned")
    z = np.asarray(fig.data[0].z)
    assert z[0, 0] == pytest.approx(0.95) and z[1, 0] == pytest.approx(0.85) and z[0, 2] == pytest.approx(0.75)
    assert list(fig.data[0].y) == [0, 1] and list(fig.data[0].x) == [0, 1, 2]
    assert (fig.data[0].zmin, fig.data[0].zmax) == (pytest.approx(0.75), 1.0)
    with pytest.raises(ValueError, match="no CKA matrix"):
        pk.cka_matrix_table(cka, "pretrained", "finetuned")


def test_head_heatmap_hatches_pruned_heads(k):
    table = pa.head_table(k, PRUNED_UNIT, "js", "finetuned")
    assert len(table) == 4 and table["pruned"].sum() == 1
    fig = pa.head_heatmap(table, title="js")
    heat, hatch = fig.data
    z = np.asarray(heat.z, dtype=float)
    assert z[0, 0] == pytest.approx(0.9 * 1 / 10) and z[0, 1] == pytest.approx(0.9 * 2 / 10)
    assert math.isnan(z[1, 1]) and heat.text[1][1] == "pruned" and heat.text[0][0] == ""
    assert [(a.x, a.y, a.text) for a in fig.layout.annotations] == [(1, 2, "pruned")]
    assert hatch.name == "pruned" and hatch.fill == "toself" and hatch.fillpattern.shape == "/"
    assert [x for x in hatch.x if x is not None] == [0.5, 1.5, 1.5, 0.5, 0.5]
    unpruned = pa.head_heatmap(pa.head_table(k, "pruned_oneshot-magnitude_s0.5_seed42", "js", "finetuned"))
    assert len(unpruned.data) == 1 and not unpruned.layout.showlegend


def test_entropy_change_follows_layer_map(k):
    t = pa.entropy_change_table(k, "pruned_small-dense_s0.9_seed42", "finetuned")
    assert list(t["layer"]) == [1, 1] and list(t["ref_layer"]) == [2, 2]
    assert list(t["change"]) == pytest.approx([0.9, 0.9])  # vs teacher layer 2, not layer 1
    t = pa.entropy_change_table(k, PRUNED_UNIT, "pretrained")
    assert t.set_index(["layer", "head"])["change"].drop((2, 1)).to_numpy() == pytest.approx([0.4] * 3)
    assert math.isnan(t.set_index(["layer", "head"]).loc[(2, 1), "change"])
    fig = pa.head_heatmap(t, "change", colorscale="RdBu_r", zmid=0.0)
    assert fig.data[0].zmid == 0.0 and fig.data[1].name == "pruned"


def test_head_heatmap_needs_rows(k):
    with pytest.raises(ValueError, match="no per-head rows"):
        pa.head_heatmap(pa.head_table(k, "pretrained", "js", "finetuned"))


# ----- attention maps and token attributions ------------------------------------------------------


def test_attention_pair():
    tokens = ["[CLS]", "good", "good", "[SEP]"]  # repeated tokens stay apart (positions on the axes)
    t = np.eye(4)
    s = np.full((4, 4), 0.25)
    fig = pa.attention_pair(tokens, t, s, ("teacher L2", "student L1"))
    a, b = fig.data
    assert np.asarray(a.z).tolist() == t.tolist() and np.asarray(b.z) == pytest.approx(s)
    assert fig.layout.coloraxis.cmax == 1.0
    assert list(fig.layout.yaxis.ticktext) == tokens
    assert [x.text for x in fig.layout.annotations] == ["teacher L2", "student L1"]
    table = pa.attention_pair_table(tokens, t, s)
    assert len(table) == 16 and table.iloc[5][["query", "key", "teacher"]].tolist() == ["good", "good", 1.0]
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        pa.attention_pair(tokens, np.eye(3), s)


def test_attribution_bars_normalised():
    tokens = pd.DataFrame(
        {
            "example": 0,
            "text": "a b",
            "token": ["[CLS]", "a", "b", "[SEP]"],
            "position": [0, 1, 2, 3],
            "teacher": [0.0, 3.0, -1.0, 0.0],
            "student": [0.0, 1.0, 1.0, 0.0],
        }
    )
    table = pa.attribution_bars_table(tokens)
    assert list(table["teacher"]) == [0.0, 0.75, -0.25, 0.0] and list(table["student"]) == [0.0, 0.5, 0.5, 0.0]
    fig = pa.attribution_bars(tokens, normalize=False, names=("T", "S"))
    t, s = fig.data
    assert (t.name, s.name) == ("T", "S") and list(t.x) == [0.0, 3.0, -1.0, 0.0]
    assert t.marker.color[2] != t.marker.color[1]  # negative bars in another colour
    assert list(fig.layout.yaxis.ticktext) == ["[CLS]", "a", "b", "[SEP]"]
