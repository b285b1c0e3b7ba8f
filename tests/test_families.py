"""Every architecture row end to end (issue 15): a tiny random model of each family built in code
(``tiny:<family>``), through pretrained -> fine-tune -> gradual, knowledge-aware, small-dense,
Wanda and SparseGPT students -> analysis, then the Overview and Knowledge-flow pages.

Checks per family: measured sparsity equals the target; CKA of a model with itself is 1 and the
per-head JS divergence of a model with itself is 0 (captured through the family's own attention
output); the pages render the run without an exception.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from kaviz.core.config import RunConfig
from kaviz.core.structure import STRUCTURES
from kaviz.stages.pipeline import Pipeline
from kaviz.store import RunStore
from kaviz.train.families import TINY_FAMILIES
from tests.test_app import navigation_only  # noqa: F401  (autouse: st.navigation under AppTest)

APP = str(Path(__file__).resolve().parent.parent / "app.py")
METHODS = ["gradual-magnitude", "knowledge-aware", "small-dense", "wanda", "sparsegpt"]
SPARSITY = 0.5


#: A made-up completion set (facts about nothing in particular; the tiny heads are random anyway).
COMPLETIONS = [{"prompt": "the colour of the sky is", "answer": " blue"}, {"prompt": "one, two,", "answer": " three"}]


def family_config(family: str, completion_file: str | None = None) -> RunConfig:
    return RunConfig.from_dict(
        {
            "name": f"fam-{family}",
            "model": {"name_or_path": f"tiny:{family}"},
            "task": {"name": "demo", "demo_train_size": 64, "demo_dev_size": 32, "max_length": 24},
            "training": {"max_steps": 4, "batch_size": 16, "learning_rate": 1e-3, "num_threads": 1},
            "pruning": {"max_steps": 4, "learning_rate": 1e-3, "mask_updates": 2, "calibration_examples": 16},
            "methods": METHODS,
            "sparsities": [SPARSITY],
            "analysis": {
                "probe_size": 16,
                "attribution_examples": 2,
                "ig_steps": 2,
                "inference_repeats": 2,  # the costs table is made, not timed carefully
                "inference_batch_sizes": [4],
                "completion_file": completion_file,
            },
        }  # fmt: skip
    )


@pytest.fixture(scope="module", params=list(TINY_FAMILIES))
def family_run(request, tmp_path_factory):
    from kaviz.analysis.analyzer import Analyzer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp(request.param)
        probe = root.parent / f"{request.param}-completions.jsonl"
        probe.write_text("".join(json.dumps(p) + "\n" for p in COMPLETIONS))
        run = Pipeline(family_config(request.param, str(probe)), RunStore(root), progress=False).run()
        Analyzer(run, progress=False).run()
    finally:
        torch.set_num_threads(threads)
    return request.param, root, run


def test_pipeline_reaches_every_target_sparsity(family_run):
    family, _, run = family_run
    assert run.status == "complete", family
    m = run.metrics()
    sp = m[(m.metric == "encoder_sparsity") & (m.stage == "pruned")].set_index("method").value
    assert set(sp.index) == set(METHODS)
    for method in ("gradual-magnitude", "knowledge-aware", "wanda"):
        assert sp[method] == pytest.approx(SPARSITY, abs=2e-3), (family, method)
    assert sp["sparsegpt"] == pytest.approx(SPARSITY, abs=0.02)  # rounded per column block
    assert sp["small-dense"] == pytest.approx(SPARSITY, abs=0.1)  # a smaller dense shape, not a mask
    table = run.unit_table("sparsity")
    table = table[table.unit == "pruned_gradual-magnitude_s0.5_seed42"]
    assert len(table) == 2 * len(set(table.role))  # every role of both layers: fused matrices split by role
    per_matrix = table.groupby("module")[["nonzero", "numel"]].sum()
    assert (1 - per_matrix.nonzero / per_matrix.numel - SPARSITY).abs().max() < 2e-3  # the target holds per matrix


def test_knowledge_tables_of_every_unit(family_run):
    from kaviz.analysis.analyzer import knowledge_table

    family, _, run = family_run
    k = knowledge_table(run)
    pruned = k[k.stage == "pruned"]
    assert set(pruned.method) == set(METHODS), family
    assert {"linear_cka", "js"} <= set(pruned.metric)
    assert pruned["value"].notna().any()
    general = set(k.loc[k.metric.str.startswith("general_"), "metric"])
    if STRUCTURES[family].causal:  # decoders: LM loss and completion probe on every unit as wide as the head
        want = {"general_lm_loss", "general_completion_exact", "general_completion_logprob"}
        assert general == want, family
        wide = k[(k.metric == "general_lm_loss") & (k.method != "small-dense")]
        assert set(wide.stage) == {"pretrained", "finetuned", "pruned"} and len(wide) == 2 + len(METHODS) - 1
        assert wide.value.between(0, 20).all()  # nats per token of a random 30k-word head: about log(30522)
    else:
        assert general <= {"general_sts_spearman", "general_mlm_loss"} and general, family


def test_a_model_measured_against_itself(family_run):
    from kaviz.analysis.analyzer import compare, layer_pairs
    from kaviz.analysis.captures import UnitCapture
    from kaviz.analysis.unit_view import load_unit_model
    from kaviz.core.config import AnalysisConfig
    from kaviz.measure.capture import ProbeInputs, capture
    from kaviz.train.models import load_tokenizer

    family, _, run = family_run
    cfg = RunConfig.from_dict(run.config)
    model = load_unit_model(run, "finetuned")
    tok = load_tokenizer(cfg.model)
    enc = tok(["the film was good", "a dull , slow plot and bad acting"], padding="max_length", max_length=12,
              truncation=True, return_tensors="pt")  # fmt: skip
    probe = ProbeInputs(enc["input_ids"], enc["attention_mask"], None, torch.zeros(2), ["a", "b"], [0, 1])
    cap = UnitCapture(capture(model, probe))
    n = cap.n_layers
    rows, _ = compare(cap, cap, layer_pairs(n, n), AnalysisConfig(), set(), probe.attention_mask)
    cka = [r["value"] for r in rows if r["metric"] == "linear_cka"]
    js = [r["value"] for r in rows if r["metric"] == "js"]
    assert cka and all(v == pytest.approx(1.0, abs=1e-5) for v in cka), family
    assert js and all(abs(v) < 1e-6 for v in js), family


@pytest.mark.parametrize("page", ["pages/1_overview.py", "pages/3_knowledge_flow.py"])
def test_pages_render_the_run(family_run, page, monkeypatch):
    family, root, _ = family_run
    monkeypatch.setenv("KAVIZ_RUNS", str(root))
    at = AppTest.from_file(APP, default_timeout=90).run()
    at.switch_page(page).run()
    assert not at.exception, (family, page, at.exception)
    assert at.title or at.header or at.markdown
    if page.endswith("knowledge_flow.py") and STRUCTURES[family].causal:  # the decoder probes beside the others
        assert "general_lm_loss" in at.selectbox(key="knowledge_general").options


def test_a_decoder_without_a_pad_token_loads_and_classifies_batches(tmp_path, tok):
    """GPT-2 and Llama checkpoints ship no pad token: kaviz pads with EOS (tokenizer and model), so a
    padded batch classifies each row at its own last real token."""
    from transformers import AutoModelForCausalLM

    from kaviz.core.config import ModelConfig
    from kaviz.train.families import tiny_family_config
    from kaviz.train.models import load_classifier, load_tokenizer

    cfg = tiny_family_config("gpt2", len(tok), 2, tok)
    cfg.pad_token_id = None
    AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path)
    no_pad = type(tok).from_pretrained(tok.name_or_path)
    no_pad.pad_token, no_pad.eos_token = None, "[SEP]"
    no_pad.save_pretrained(tmp_path)
    t = load_tokenizer(ModelConfig(name_or_path=str(tmp_path)))
    model = load_classifier(str(tmp_path), 2).eval()
    assert t.pad_token == "[SEP]" and model.config.pad_token_id == t.sep_token_id
    enc = t(["a good film", "bad"], padding=True, return_tensors="pt")
    with torch.no_grad():
        both = model(**enc).logits
        alone = model(**t(["bad"], return_tensors="pt")).logits
    assert torch.allclose(both[1], alone[0], atol=1e-5)
