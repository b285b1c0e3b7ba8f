"""AppTest of the knowledge pages (knowledge flow, attention, attribution).

Runs folders: ``tables`` holds a run whose knowledge tables are hand-made with known values
(tests/test_plots_knowledge.py) and no checkpoints; ``layers`` the same with per-layer rows only;
``bare`` a run with no knowledge tables; ``real`` a tiny run really trained, pruned and analysed,
with checkpoints, for the model-backed views.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from kaviz.core.config import RunConfig
from kaviz.store import RunStore
from tests.test_app import figures, frame, navigation_only, traces  # noqa: F401  (navigation_only: autouse)
from tests.test_plots_knowledge import CONFIG, PRUNED_UNIT, TEXTS, knowledge_tables, units

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
FLOW, ATTENTION, ATTRIBUTION = "pages/3_knowledge_flow.py", "pages/4_attention.py", "pages/5_attribution.py"
PAGES = [FLOW, ATTENTION, ATTRIBUTION]
TITLES = {FLOW: "Knowledge flow", ATTENTION: "Attention", ATTRIBUTION: "Attribution"}
KEYS = ("unit", "stage", "method", "sparsity", "seed")


def make_run(root: Path, name: str, *, analysed: bool, per_head: bool = True) -> None:
    """All units done with a score; with ``analysed``, the hand-made knowledge tables too (without
    ``per_head``: only the per-layer and whole-model rows, no attribution)."""
    planned = units(name)
    run = RunStore(root).create_run(RunConfig(name=name, **CONFIG).to_dict(), units=planned)
    for u in planned:
        run.start_unit(u["unit"])
        run.finish_unit(u["unit"], [{"metric": "score", "value": 0.9 - u["sparsity"] / 10}])
    if analysed:
        tables = knowledge_tables(planned)
        if not per_head:
            k = tables.pop("knowledge")
            tables = {"knowledge": k[(k["head"] == -1) & ~k["metric"].str.startswith("attribution")]}
        for table, df in tables.items():
            for unit, rows in df.groupby("unit", sort=False):
                run.write_unit_table(unit, table, rows.drop(columns=list(KEYS)).reset_index(drop=True))
    run.set_status("complete")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    out = {name: tmp_path_factory.mktemp(name) for name in ("tables", "bare", "layers", "real")}
    make_run(out["tables"], "k", analysed=True)
    make_run(out["layers"], "l", analysed=True, per_head=False)
    make_run(out["bare"], "b", analysed=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from kaviz.analysis.analyzer import Analyzer
        from kaviz.stages.pipeline import Pipeline
        from tests.test_pipeline import tiny_config

        cfg = tiny_config(name="r", methods=["oneshot-magnitude"], sparsities=[0.5])
        Analyzer(Pipeline(cfg, RunStore(out["real"]), progress=False).run(), progress=False).run()
    finally:
        torch.set_num_threads(threads)
    return out


def open_page(folder: Path, page: str, monkeypatch) -> AppTest:
    monkeypatch.setenv("KAVIZ_RUNS", str(folder))
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page(page).run()
    assert not at.exception
    assert at.title[0].value == TITLES[page]
    return at


def infos(at: AppTest) -> str:
    return "\n".join(i.value for i in at.info)


# ----- knowledge flow -----------------------------------------------------------------------------


def test_knowledge_flow_shows_similarity_cka_probe_and_general(folders, monkeypatch):
    at = open_page(folders["tables"], FLOW, monkeypatch)
    assert at.selectbox(key="knowledge_metric").options == ["linear_cka", "rbf_cka"]
    assert at.selectbox(key="knowledge_reference").value == "finetuned"
    flow, loss_map, cka, probe, general, plane = figures(at)
    one = np.asarray(loss_map.data[0].z, dtype=float)  # one-shot: layers 0..2 x sparsities 50%, 90%
    assert loss_map.data[0].name == "oneshot-magnitude" and list(loss_map.data[0].x) == ["50%", "90%"]
    assert one[1, 1] == pytest.approx(1 - 0.9 / 4 + 0.01)  # layer 1 at 90%: mean of seeds 42 and 7
    assert one[2, 0] == pytest.approx(1 - 0.5 * 2 / 4)
    plane_line = [t for t in plane.data if t.name == "oneshot-magnitude"][0]
    assert plane_line.y[0] == pytest.approx((0.7 - 0.2 * 0.5) / 0.8)  # general probe kept at 50%
    lines = traces(flow)
    assert list(lines) == ["oneshot-magnitude 50%", "oneshot-magnitude 90%", "small-dense 50%", "small-dense 90%"]
    assert list(lines["oneshot-magnitude 90%"].y) == pytest.approx([1.01, 1 - 0.225 + 0.01, 0.56])
    assert list(lines["small-dense 50%"].x) == [0, 2]  # one student layer, drawn at teacher layer 2
    assert "pruned_small-dense_s0.9_seed7" in cka.layout.title.text  # the last unit by default
    assert np.asarray(cka.data[0].z)[1, 2] == pytest.approx(1 - 0.1 - 0.09)
    assert list(traces(probe)["pre-trained"].y) == pytest.approx([0.5, 0.6, 0.7])
    g = traces(general)
    assert list(g["oneshot-magnitude"].y) == pytest.approx([0.6, 0.53])
    assert list(g["pre-trained"].y) == pytest.approx([0.8, 0.8])
    assert not at.info
    assert len([b for b in at.get("download_button") if "CSV" in str(b.proto)]) == 6


def test_knowledge_flow_controls(folders, monkeypatch):
    at = open_page(folders["tables"], FLOW, monkeypatch)
    at.selectbox(key="knowledge_metric").set_value("rbf_cka")
    at.selectbox(key="knowledge_reference").set_value("pretrained")
    at.multiselect(key="knowledge_methods").set_value(["small-dense"])
    at.multiselect(key="knowledge_sparsities").set_value([0.9])
    at.selectbox(key="knowledge_cka_unit").set_value("finetuned")
    at.run()
    assert not at.exception
    flow, loss_map, cka, probe, *_ = figures(at)
    lines = traces(flow)
    assert list(lines) == ["fine-tuned", "small-dense 90%"]
    assert [t.name for t in loss_map.data] == ["small-dense"]  # the method filter applies to the map
    assert list(lines["fine-tuned"].y) == pytest.approx([0.95, 0.85, 0.75])
    assert list(lines["small-dense 90%"].y) == pytest.approx([0.8 - 0.05 + 0.01, 0.8 - 0.45 - 0.05 + 0.01])
    assert at.selectbox(key="knowledge_cka_reference").value == "pretrained"  # the teacher has no other
    assert "finetuned vs pre-trained model" in cka.layout.title.text
    assert list(traces(probe)) == ["pre-trained", "fine-tuned", "small-dense 90%"]  # the filters apply here too


# ----- attention ----------------------------------------------------------------------------------


def test_attention_heads_and_entropy_without_checkpoints(folders, monkeypatch):
    at = open_page(folders["tables"], ATTENTION, monkeypatch)
    at.selectbox(key="attention_unit").set_value(PRUNED_UNIT).run()
    assert not at.exception
    assert at.selectbox(key="attention_metric").options == ["js", "kl", "cosine"]
    heads, entropy = figures(at)  # no maps: the run has no checkpoints
    heat, hatch = heads.data
    z = np.asarray(heat.z, dtype=float)
    assert z[0, 0] == pytest.approx(0.09) and math.isnan(z[1, 1])
    assert hatch.name == "pruned" and [a.text for a in heads.layout.annotations] == ["pruned"]
    change = np.asarray(entropy.data[0].z, dtype=float)
    assert change[0, 0] == pytest.approx(0.9) and math.isnan(change[1, 1])
    assert "checkpoint" in infos(at) and PRUNED_UNIT in infos(at)
    at.selectbox(key="attention_metric").set_value("kl")
    at.selectbox(key="attention_reference").set_value("pretrained")
    at.run()
    assert not at.exception
    assert np.asarray(figures(at)[0].data[0].z, dtype=float)[0, 1] == pytest.approx(2 * 0.9 * 2 / 10)
    assert at.selectbox(key="attention_example").options == [*TEXTS, "Type a sentence…"]


def test_attention_maps_from_checkpoints(folders, monkeypatch):
    at = open_page(folders["real"], ATTENTION, monkeypatch)
    assert at.selectbox(key="attention_unit").value == "pruned_oneshot-magnitude_s0.5_seed42"
    assert not at.info
    heads, entropy, maps = figures(at)
    assert np.asarray(heads.data[0].z).shape == (4, 4)  # the tiny BERT: 4 layers x 4 heads
    teacher, student = maps.data
    tokens = list(maps.layout.yaxis.ticktext)
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    for m in (teacher, student):
        z = np.asarray(m.z, dtype=float)
        assert z.shape == (len(tokens), len(tokens)) and z.sum(1) == pytest.approx(np.ones(len(tokens)), abs=1e-5)
    at.selectbox(key="attention_example").set_value("Type a sentence…").run()
    at.text_input(key="attention_text").input("a truly good film").run()
    at.selectbox(key="attention_layer").set_value(3)
    at.selectbox(key="attention_head").set_value(2)
    at.run()
    assert not at.exception
    maps = figures(at)[2]
    assert list(maps.layout.yaxis.ticktext) == ["[CLS]", "a", "truly", "good", "film", "[SEP]"]
    assert [a.text for a in maps.layout.annotations] == [
        "fine-tuned teacher, layer 3",
        f"{at.selectbox(key='attention_unit').value}, layer 3",
    ]


# ----- attribution --------------------------------------------------------------------------------


def test_attribution_agreement_and_examples_without_checkpoints(folders, monkeypatch):
    at = open_page(folders["tables"], ATTRIBUTION, monkeypatch)
    (agreement,) = figures(at)
    lines = traces(agreement)
    assert set(lines) == {"oneshot-magnitude", "small-dense"}  # no teacher line: it is the reference
    assert list(lines["oneshot-magnitude"].y) == pytest.approx([0.75, 1 - 0.45 + 0.01])
    examples = frame(at, "spearman")
    assert list(examples["text"]) == TEXTS
    assert list(examples["spearman"]) == pytest.approx([1 - 0.45 + 0.02 + 0.1, 1 - 0.45 + 0.02 - 0.1])
    assert "checkpoint" in infos(at)
    at.radio(key="attribution_metric").set_value("attribution_topk_overlap")
    at.selectbox(key="attribution_unit").set_value("pruned_oneshot-magnitude_s0.5_seed42")
    at.run()
    assert not at.exception
    assert list(traces(figures(at)[0])["small-dense"].y) == pytest.approx([1 - 0.125, 1 - 0.225])
    assert list(frame(at, "spearman")["spearman"]) == pytest.approx([0.85, 0.65])


def test_token_attributions_from_checkpoints(folders, monkeypatch):
    at = open_page(folders["real"], ATTRIBUTION, monkeypatch)
    assert not at.info
    agreement, tokens = figures(at)
    assert set(traces(agreement)) == {"oneshot-magnitude"}
    teacher, student = tokens.data
    assert abs(np.asarray(teacher.x)).sum() == pytest.approx(1.0) and abs(np.asarray(student.x)).sum() == pytest.approx(
        1.0
    )
    at.selectbox(key="attribution_example").set_value("Type a sentence…").run()
    at.text_input(key="attribution_text").input("not a good film").run()
    assert not at.exception
    tokens = figures(at)[1]
    assert list(tokens.layout.yaxis.ticktext) == ["[CLS]", "not", "a", "good", "film", "[SEP]"]


# ----- empty states -------------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES)
def test_run_without_knowledge_tables(folders, monkeypatch, page):
    at = open_page(folders["bare"], page, monkeypatch)
    assert f"kaviz analyze {folders['bare'] / 'b'}" in infos(at)
    assert not at.get("plotly_chart")


def test_run_with_per_layer_tables_only(folders, monkeypatch):
    at = open_page(folders["layers"], FLOW, monkeypatch)
    assert len(figures(at)) == 5 and "No CKA matrices" in infos(at)  # flow, loss map, probe, general, plane
    at.switch_page(ATTENTION).run()
    assert not at.exception
    assert "No per-head attention" in infos(at) and not at.get("plotly_chart")
    at.switch_page(ATTRIBUTION).run()
    assert not at.exception
    assert "no attribution agreement" in infos(at) and not at.get("plotly_chart")


@pytest.mark.parametrize("page", PAGES)
def test_no_runs(tmp_path, monkeypatch, page):
    at = open_page(tmp_path, page, monkeypatch)
    assert "kaviz demo --tiny --out runs" in infos(at)
    assert not at.get("plotly_chart")


def test_switching_runs_drops_stale_choices(folders, monkeypatch):
    monkeypatch.setenv("KAVIZ_RUNS", f"{folders['tables']},{folders['real']}")
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.sidebar.selectbox(key="app_run").set_value(str(folders["tables"] / "k")).run()
    at.switch_page(FLOW).run()
    at.multiselect(key="knowledge_sparsities").set_value([0.9]).run()
    at.switch_page(ATTENTION).run()
    at.selectbox(key="attention_unit").set_value(PRUNED_UNIT).run()
    at.sidebar.selectbox(key="app_run").set_value(str(folders["real"] / "r")).run()
    assert not at.exception
    assert at.selectbox(key="attention_unit").value == "pruned_oneshot-magnitude_s0.5_seed42"
    assert len(figures(at)) == 3  # the real run has checkpoints: maps too
    at.switch_page(FLOW).run()
    assert not at.exception
    assert at.multiselect(key="knowledge_sparsities").value == [0.5]
    assert "oneshot-magnitude 50%" in traces(figures(at)[0])


def test_analyze_now_starts_the_analysis_in_the_background(folders, monkeypatch):
    """Issue 14: where knowledge tables are missing, a button, not only a command to copy."""
    from kaviz import launcher

    started = []
    monkeypatch.setattr(launcher, "analyze", lambda folder, name: started.append((folder, name)))
    at = open_page(folders["bare"], FLOW, monkeypatch)
    at.button(key="analyze_now").click().run()
    assert not at.exception
    assert started == [(str(folders["bare"]), "b")]
    assert any("Analysing in the background" in s.value for s in at.success)
