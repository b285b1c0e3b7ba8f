import pytest
import torch

from kaviz.core.config import PACKAGED_MODEL, ModelConfig
from kaviz.core.structure import UnsupportedArchitectureError, dims, prunable_linears, structure_of
from kaviz.train.models import (
    encoder_params,
    load_pretrained,
    load_tokenizer,
    packaged_model_dir,
    pick_device,
    resolve_source,
    small_dense_shape,
    small_dense_student,
)


@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.9, 0.95])
def test_small_dense_matches_budget(tiny_bert, sparsity):
    teacher = tiny_bert(layers=4, hidden=64, heads=4, inter=256)
    student, lmap = small_dense_student(teacher, sparsity)
    measured = 1 - encoder_params(student) / encoder_params(teacher)
    assert measured == pytest.approx(sparsity, abs=0.005)
    assert len(lmap) == dims(student)["num_layers"]
    assert dims(student)["hidden"] % 4 == 0


def test_small_dense_copies_pretrained_layers(tiny_bert):
    teacher = tiny_bert(layers=4, hidden=32, heads=4, inter=64)
    student, lmap = small_dense_student(teacher, 0.5)  # 2 layers, full width
    assert lmap == [2, 4]
    for j, t in enumerate(lmap):
        torch.testing.assert_close(
            student.bert.encoder.layer[j].attention.self.query.weight,
            teacher.bert.encoder.layer[t - 1].attention.self.query.weight,
        )
    torch.testing.assert_close(
        student.bert.embeddings.word_embeddings.weight, teacher.bert.embeddings.word_embeddings.weight
    )


def test_small_dense_narrow_slices_per_head(tiny_bert):
    teacher = tiny_bert(layers=2, hidden=32, heads=4, inter=64)
    shape = small_dense_shape(teacher, 0.95)
    assert shape["hidden"] < 32
    student, _ = small_dense_student(teacher, 0.95)
    h, hd_t = shape["hidden"], 32 // 4
    hd_s = h // 4
    q_t = teacher.bert.encoder.layer[1].attention.self.query.weight.reshape(4, hd_t, 32)
    q_s = student.bert.encoder.layer[0].attention.self.query.weight.reshape(4, hd_s, h)
    torch.testing.assert_close(q_s, q_t[:, :hd_s, :h])


def test_unknown_architecture_is_named():
    with pytest.raises(UnsupportedArchitectureError, match="STRUCTURES"):
        structure_of(torch.nn.Linear(2, 2))


def test_distilbert_structure():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    m = DistilBertForSequenceClassification(
        DistilBertConfig(vocab_size=50, dim=16, n_layers=2, n_heads=2, hidden_dim=32)
    )
    assert len(prunable_linears(m)) == 12
    assert dims(m) == {"num_layers": 2, "hidden": 16, "heads": 2, "kv_heads": 2, "head_dim": 8, "intermediate": 32}


def test_resolve_source():
    assert resolve_source(PACKAGED_MODEL) == str(packaged_model_dir())
    assert resolve_source("bert-base-uncased") == "bert-base-uncased"  # a hub id is passed through
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_source("./no/such/folder")


def test_packaged_minilm_loads_offline():
    model = load_pretrained(ModelConfig(), num_labels=2)
    assert dims(model) == {
        "num_layers": 6,
        "hidden": 384,
        "heads": 12,
        "kv_heads": 12,
        "head_dim": 32,
        "intermediate": 1536,
    }
    tok = load_tokenizer(ModelConfig())
    out = model(**tok(["a fine film"], return_tensors="pt"), output_attentions=True)
    assert out.attentions[0].shape[1] == 12


def test_tiny_model():
    model = load_pretrained(ModelConfig(name_or_path="tiny"), num_labels=3)
    assert dims(model)["num_layers"] == 4 and model.config.num_labels == 3


def test_pick_device():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type in ("cpu", "cuda", "mps")
