import io
from contextlib import redirect_stdout

import pandas as pd
import pytest
import torch

from kaviz.analysis.analyzer import Analyzer, knowledge_table, layer_pairs, pruned_heads
from kaviz.cli import main
from kaviz.stages.pipeline import Pipeline
from kaviz.store import RunStore
from tests.test_pipeline import tiny_config

ANALYSIS = {"probe_size": 32, "attribution_examples": 2, "ig_steps": 4, "cka_kinds": ["linear_cka", "rbf_cka"]}


@pytest.fixture(scope="module")
def analysed(tmp_path_factory, one_thread):
    cfg = tiny_config(name="a", methods=["knowledge-aware", "small-dense"], sparsities=[0.9], analysis=ANALYSIS)
    run = Pipeline(cfg, RunStore(tmp_path_factory.mktemp("runs")), progress=False).run()
    done = Analyzer(run, progress=False).run()
    return run, done


def test_every_unit_gets_tables(analysed):
    run, done = analysed
    assert done == list(run.units().unit)
    k = knowledge_table(run)
    assert {"stage", "method", "sparsity", "reference", "layer", "head", "metric", "value"} <= set(k.columns)
    refs = k.groupby("unit").reference.agg(set)
    assert refs["pretrained"] == {"self"}
    assert refs["finetuned"] == {"self", "pretrained"}
    assert refs["pruned_knowledge-aware_s0.9_seed42"] == {"self", "pretrained", "finetuned"}
    cka = k[k.metric == "linear_cka"]
    assert cka.value.between(-1e-9, 1 + 1e-9).all()
    assert set(k.metric) >= {
        "linear_cka",
        "rbf_cka",
        "js",
        "kl",
        "cosine",
        "attention_entropy",
        "probe_accuracy",
        "general_sts_spearman",
        "attribution_spearman",
        "attribution_topk_overlap",
    }


def test_small_dense_layers_follow_the_layer_map(analysed):
    run, _ = analysed
    k = knowledge_table(run)
    sd = k[(k.method == "small-dense") & (k.metric == "linear_cka") & (k.reference == "finetuned")]
    info = run.units().set_index("unit").loc["pruned_small-dense_s0.9_seed42", "info"]
    expected = layer_pairs(len(info["layer_map"]), 4, info["layer_map"])
    assert sorted(zip(sd.layer, sd.ref_layer)) == sorted(expected)


def test_cka_matrix_diagonal_matches_knowledge(analysed):
    run, _ = analysed
    mat = knowledge_table(run, "cka_matrix")
    k = knowledge_table(run)
    unit = "pruned_knowledge-aware_s0.9_seed42"
    m = mat[(mat.unit == unit) & (mat.reference == "finetuned") & (mat.layer == mat.ref_layer)].set_index("layer").value
    d = k[(k.unit == unit) & (k.reference == "finetuned") & (k.metric == "linear_cka")].set_index("layer").value
    pd.testing.assert_series_equal(m.sort_index(), d.sort_index(), check_names=False, atol=1e-9)


def test_analysis_is_incremental_and_force_recomputes(analysed):
    run, _ = analysed
    assert Analyzer(run, progress=False).run() == []
    again = Analyzer(run, progress=False).run(force=True)
    assert len(again) == len(run.units())


def test_export_knowledge_table(analysed):
    run, _ = analysed
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["export", str(run.path), "--table", "knowledge", "--format", "csv"]) == 0
    df = pd.read_csv(io.StringIO(buf.getvalue()))
    assert list(df.columns[:5]) == ["unit", "stage", "method", "sparsity", "seed"]
    assert {"reference", "layer", "head", "metric", "value"} <= set(df.columns)


def test_pruned_heads(tiny_bert):
    model = tiny_bert(layers=2, hidden=32, heads=4)
    assert pruned_heads(model) == set()
    with torch.no_grad():
        model.bert.encoder.layer[0].attention.self.query.weight[8:16] = 0  # head 1 of layer 0 (head dim 8)
        model.bert.encoder.layer[1].attention.self.key.weight[0:8] = 0
    assert pruned_heads(model) == {(0, 1), (1, 0)}


def test_layer_pairs():
    assert layer_pairs(2, 2) == [(0, 0), (1, 1), (2, 2)]
    assert layer_pairs(2, 4, [2, 4]) == [(0, 0), (1, 2), (2, 4)]
    with pytest.raises(ValueError, match="layer_map"):
        layer_pairs(2, 4)
