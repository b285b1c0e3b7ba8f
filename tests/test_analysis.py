import io
import math
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


def test_stored_cka_equals_the_textbook_formula_on_fresh_captures(analysed):
    """Every stored linear CKA of the knowledge-aware unit against the teacher equals Kornblith et
    al.'s formula, ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) on column-centred mean-pooled
    features, recomputed here in float64 from the checkpoints on the same probe set."""
    from kaviz.analysis.unit_view import load_run_tokenizer, load_unit_model
    from kaviz.core.config import RunConfig
    from kaviz.data.tasks import load_task
    from kaviz.measure.capture import capture, probe_inputs

    run, _ = analysed
    cfg = RunConfig.from_dict(run.config)
    tok = load_run_tokenizer(run)
    probe = probe_inputs(
        load_task(cfg.task, seed=cfg.seed), tok, cfg.analysis.probe_size,
        seed=cfg.analysis.probe_seed, max_length=cfg.task.max_length,
    )  # fmt: skip
    unit = "pruned_knowledge-aware_s0.9_seed42"
    feats = {
        u: capture(load_unit_model(run, u), probe, tokens=False, attentions=False).mean for u in (unit, "finetuned")
    }

    def textbook(x, y):
        x = x.double() - x.double().mean(0)
        y = y.double() - y.double().mean(0)
        return float((y.T @ x).norm() ** 2 / ((x.T @ x).norm() * (y.T @ y).norm()))

    k = knowledge_table(run)
    rows = k[(k.unit == unit) & (k.reference == "finetuned") & (k.metric == "linear_cka")]
    assert len(rows) == len(feats[unit])
    for _, r in rows.iterrows():
        want = textbook(feats[unit][int(r.layer)], feats["finetuned"][int(r.ref_layer)])
        assert r.value == pytest.approx(want, abs=1e-6), int(r.layer)
    assert rows.value.min() < 0.999  # the pruned student differs from its teacher somewhere


def test_streamed_analysis_gives_the_same_tables_and_cleans_up(analysed, tmp_path, monkeypatch):
    """analysis.stream 'always' (maps to a scratch folder, one layer read back at a time) writes the
    same knowledge and CKA-matrix tables as the in-memory analysis ('auto' at this size) of the same run."""
    import dataclasses

    import kaviz.analysis.captures as captures
    from kaviz.core.config import RunConfig

    run, _ = analysed
    assert "streaming attention maps" not in run.log_path.read_text()  # 'auto' kept this tiny run in memory
    copy = run.copy_to(tmp_path / "copy", include_checkpoints=True)
    written: list[str] = []

    class Spy(captures.CaptureSink):
        def write(self, batch_index, tensors):
            written.extend(tensors)
            super().write(batch_index, tensors)

    monkeypatch.setattr(captures, "CaptureSink", Spy)
    acfg = dataclasses.replace(RunConfig.from_dict(run.config).analysis, stream="always")
    assert Analyzer(copy, acfg, progress=False).run(force=True) == list(run.units().unit)
    assert written and {k.split(".")[0] for k in written} == {"attn"}  # only maps were streamed
    assert not (copy.path / ".scratch").exists()
    for name in ("knowledge", "cka_matrix"):
        want, got = knowledge_table(run, name), knowledge_table(copy, name)
        pd.testing.assert_frame_equal(got, want, rtol=1e-9, atol=1e-12)
    k = knowledge_table(copy)
    assert {"js", "kl", "cosine", "attention_entropy"} <= set(k.metric)


def test_auto_streams_above_the_threshold(analysed, tmp_path):
    import dataclasses

    from kaviz.core.config import RunConfig

    run, _ = analysed
    copy = run.copy_to(tmp_path / "copy", include_checkpoints=True)
    acfg = dataclasses.replace(RunConfig.from_dict(run.config).analysis, stream_above_gib=1e-6, inference=False)
    Analyzer(copy, acfg, progress=False).run(force=True)
    assert "analyze: streaming attention maps to disk" in copy.log_path.read_text()
    pd.testing.assert_frame_equal(knowledge_table(copy), knowledge_table(run), rtol=1e-9, atol=1e-12)


def test_auto_sizes_each_model_shape_on_its_own(analysed, tmp_path, monkeypatch):
    """'auto' with a threshold between the teacher's and the smaller small-dense student's predicted
    peaks streams the captures of the teacher's shape and keeps the student's in memory."""
    import dataclasses
    from contextlib import contextmanager

    from kaviz.analysis.captures import wants_streaming
    from kaviz.analysis.unit_view import load_unit_model
    from kaviz.core.config import RunConfig

    run, _ = analysed
    cfg = RunConfig.from_dict(run.config)
    setup = Analyzer(run, progress=False)
    setup._setup()  # the probe set the analysis reads
    probe = setup.probe
    small = "pruned_small-dense_s0.9_seed42"
    need = {
        u: wants_streaming(dataclasses.replace(cfg.analysis, stream="auto"), load_unit_model(run, u), probe,
                           dtype=torch.float32, classes=2)[1]
        for u in ("finetuned", small)
    }  # fmt: skip
    assert need[small] < need["finetuned"]
    copy = run.copy_to(tmp_path / "copy", include_checkpoints=True)
    streamed: list[str] = []
    real = copy.scratch

    @contextmanager
    def spy(purpose):
        streamed.append(purpose.removeprefix("capture-"))
        with real(purpose) as folder:
            yield folder

    monkeypatch.setattr(copy, "scratch", spy)
    gib = (need[small] + need["finetuned"]) / 2 / 2**30
    acfg = dataclasses.replace(cfg.analysis, stream="auto", stream_above_gib=gib, inference=False)
    Analyzer(copy, acfg, progress=False).run(force=True)
    assert "finetuned" in streamed and small not in streamed
    assert copy.log_path.read_text().count("analyze: streaming attention maps to disk") == 1
    pd.testing.assert_frame_equal(knowledge_table(copy), knowledge_table(run), rtol=1e-9, atol=1e-12)


def test_gradient_shares_are_stored_for_a_unit_with_weights(analysed, tmp_path):
    """diagnosis.store_gradient_shares writes the knowledge-aware unit's gradient_shares table (three
    terms, shares summing to 1), diagnosis() reads it into grad_* columns; a tables-only copy of the
    run has no weights to measure and gets nothing."""
    from kaviz.analysis import diagnosis, evidence

    run, _ = analysed
    copy = run.copy_to(tmp_path / "copy", include_checkpoints=True)
    unit = "pruned_knowledge-aware_s0.9_seed42"
    table = diagnosis.store_gradient_shares(copy, unit, examples=8, batch_size=4)
    assert list(table.term) == list(diagnosis.LOSS_TERMS) and table.share.sum() == pytest.approx(1.0)
    assert (table.norm > 0).all() and copy.has_unit_table(unit, diagnosis.GRADIENTS)
    d = diagnosis.diagnosis(copy, evidence.summary(copy, n_boot=50), "accuracy").set_index("method")
    assert d.loc["knowledge-aware", "grad_pred"] == pytest.approx(float(table.share.iloc[2]))
    assert math.isnan(d.loc["small-dense", "grad_pred"])
    light = run.copy_to(tmp_path / "light")
    assert diagnosis.store_gradient_shares(light, unit) is None and not light.has_unit_table(unit, diagnosis.GRADIENTS)
