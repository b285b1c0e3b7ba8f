"""`kaviz import`: a run assembled from checkpoints made elsewhere (here torch.nn.utils.prune)."""

import pandas as pd
import pytest
import torch
from torch.nn.utils import prune

from kaviz.cli import main
from kaviz.core.config import ModelConfig
from kaviz.core.structure import prunable_linears
from kaviz.store import RunStore
from kaviz.train.models import load_tokenizer, register_attention, tiny_bert_config


@pytest.fixture
def checkpoints(tmp_path):
    from transformers import BertForSequenceClassification

    tok = load_tokenizer(ModelConfig(name_or_path="tiny"))
    torch.manual_seed(0)
    pre = BertForSequenceClassification(tiny_bert_config(len(tok), 2))
    pre.set_attn_implementation(register_attention())
    paths = {}
    for name in ("pretrained", "teacher"):
        paths[name] = tmp_path / name
        pre.save_pretrained(paths[name])
        tok.save_pretrained(paths[name])
    # a student pruned by another tool: torch.nn.utils.prune, L1 unstructured, 80% per matrix, made permanent
    for lin in prunable_linears(pre).values():
        prune.l1_unstructured(lin, "weight", amount=0.8)
        prune.remove(lin, "weight")
    paths["student"] = tmp_path / "tnup-80"
    pre.save_pretrained(paths["student"])
    return paths


def test_import_measures_external_student(tmp_path, checkpoints):
    out = tmp_path / "runs"
    code = main(
        [
            "import",
            "--name",
            "ext",
            "--pretrained",
            str(checkpoints["pretrained"]),
            "--teacher",
            str(checkpoints["teacher"]),
            "--student",
            f"torchprune@0.8={checkpoints['student']}",
            "--task",
            "demo",
            "--max-eval-examples",
            "50",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    run = RunStore(out).open_run("ext")
    m = run.metrics()
    assert set(m.stage) == {"pretrained", "finetuned", "pruned"}
    sp = m[(m.method == "torchprune") & (m.metric == "encoder_sparsity")].value.item()
    assert sp == pytest.approx(0.8, abs=1e-3)
    units = run.units().set_index("unit")
    assert units.loc["pruned_torchprune_s0.8_seed42", "status"] == "done"


def test_import_bad_student_spec(tmp_path, checkpoints, capsys):
    code = main(
        [
            "import",
            "--name",
            "ext",
            "--pretrained",
            str(checkpoints["pretrained"]),
            "--teacher",
            str(checkpoints["teacher"]),
            "--student",
            "no-sparsity-given",
            "--task",
            "demo",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 2
    assert "label@sparsity" in capsys.readouterr().err


def test_a_student_identical_to_its_teacher_measures_as_identical(tmp_path, checkpoints):
    """Known values instead of "the metric names are there": a student that is the teacher itself
    (and a teacher that is its pre-trained model, as saved by the fixture) has linear and RBF CKA 1,
    attention JS and KL 0 and cosine 1 at every layer and head, the teacher's own probe accuracy,
    and attributions that agree with the teacher's exactly; the student pruned by torch is identical at the
    embeddings (untouched) and not above them."""
    from kaviz.analysis.analyzer import knowledge_table

    out = tmp_path / "runs"
    args = ["import", "--name", "same", "--pretrained", str(checkpoints["pretrained"])]
    args += ["--teacher", str(checkpoints["teacher"]), "--student", f"clone@0={checkpoints['teacher']}"]
    args += ["--student", f"torchprune@0.8={checkpoints['student']}", "--task", "demo"]
    assert main([*args, "--max-eval-examples", "50", "--out", str(out), "--quiet"]) == 0
    run = RunStore(out).open_run("same")
    assert main(["analyze", str(run.path), "--quiet"]) == 0
    k = knowledge_table(run)
    clone = k[k.method == "clone"]
    vs_teacher = clone[clone.reference == "finetuned"].set_index(["metric", "layer", "head"]).value
    expected = {"linear_cka": 1.0, "js": 0.0, "kl": 0.0, "cosine": 1.0}
    for metric, value in expected.items():
        assert vs_teacher.loc[metric].to_numpy() == pytest.approx(value, abs=1e-5), metric
    teacher_self = k[(k.stage == "finetuned") & (k.reference == "self")].set_index(["metric", "layer", "head"]).value
    clone_self = clone[clone.reference == "self"].set_index(["metric", "layer", "head"]).value
    pd.testing.assert_series_equal(clone_self.sort_index(), teacher_self.sort_index(), atol=1e-6)
    for metric in ("attribution_spearman", "attribution_topk_overlap"):
        assert vs_teacher.loc[metric].to_numpy() == pytest.approx(1.0, abs=1e-6), metric
    pruned = k[(k.method == "torchprune") & (k.reference == "finetuned") & (k.metric == "linear_cka")]
    by_layer = pruned.set_index("layer").value.sort_index()
    assert by_layer.loc[0] == pytest.approx(1.0, abs=1e-6)  # torch pruned the encoder, not the embeddings
    assert (by_layer.loc[1:] < 1 - 1e-4).all()
