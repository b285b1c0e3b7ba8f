"""`kaviz import`: a run assembled from checkpoints made elsewhere (here torch.nn.utils.prune)."""

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
