"""Structured pruning: importance against finite differences, plan arithmetic, shrink == masked original, save/load.

tiny_bert() defaults: 2 layers, d = 32, 4 heads (d_head = 8), FFN 64. One head holds 4 * 32 * 8 = 1024
encoder weights, one neuron 2 * 32 = 64; a layer 4 * 32 * 32 + 2 * 32 * 64 = 8192, the encoder 16384.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from kaviz.train.models import encoder_params, register_attention
from kaviz.train.pruning import sparsity_summary
from kaviz.train.structured import head_cost, importance, neuron_cost, plan
from kaviz.train.structured_io import load_shrunk
from kaviz.train.structured_shrink import kept_heads, mask_model, shrink, structured_sparsity

pytestmark = pytest.mark.usefixtures("one_thread")
HEAD, NEURON, TOTAL = 1024, 64, 16384


def _inputs(seed: int = 3, n: int = 4, t: int = 10, num_labels: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (n, t), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 3:] = 0
    labels = torch.randn(n, generator=g) if num_labels == 1 else torch.randint(0, num_labels, (n,), generator=g)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _forward(model, batch):
    with torch.no_grad():
        return model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            output_attentions=True,
            output_hidden_states=True,
        )


def _mixed_plan() -> dict:
    """Different head counts per layer (3 and 2 left) and neurons from both layers."""
    g = torch.Generator().manual_seed(0)
    return {
        "heads": {0: [1], 1: [0, 3]},
        "neurons": {0: sorted(torch.randperm(64, generator=g)[:20].tolist()), 1: list(range(0, 64, 2))},
    }


def _removed_weights(p: dict) -> int:
    return sum(len(v) for v in p["heads"].values()) * HEAD + sum(len(v) for v in p["neurons"].values()) * NEURON


def test_costs_follow_kwon(tiny_bert):
    model = tiny_bert()
    assert (head_cost(model), neuron_cost(model), encoder_params(model)) == (HEAD, NEURON, TOTAL)


# --- shrink ------------------------------------------------------------------------------------------------


def test_shrunk_model_equals_masked_original(tiny_bert):
    model = tiny_bert().eval()
    p = _mixed_plan()
    masked, shrunk = mask_model(copy.deepcopy(model), p), shrink(copy.deepcopy(model), p)
    assert shrunk.config._attn_implementation == register_attention()
    batch = _inputs()
    a, b = _forward(masked, batch), _forward(shrunk, batch)
    torch.testing.assert_close(b.logits, a.logits, atol=1e-5, rtol=0)
    for ha, hb in zip(a.hidden_states, b.hidden_states):
        torch.testing.assert_close(hb, ha, atol=1e-5, rtol=0)
    assert [x.shape[1] for x in b.attentions] == [3, 2]
    assert kept_heads(shrunk) == [[0, 2, 3], [1, 2]] and kept_heads(model) == [[0, 1, 2, 3]] * 2
    for layer, kept in enumerate(kept_heads(shrunk)):  # kaviz's pre-softmax scores of the heads that stay
        torch.testing.assert_close(b.attentions[layer], a.attentions[layer][:, kept], atol=1e-5, rtol=0)
    assert not torch.allclose(a.logits, _forward(model, batch).logits)  # the pruning did change the model


def test_parameter_counts_match_plan_arithmetic(tiny_bert):
    model = tiny_bert()
    p = _mixed_plan()
    before = sum(x.numel() for x in model.parameters())
    shrunk = shrink(copy.deepcopy(model), p)
    n_heads, n_neurons = 3, 20 + 32
    weights = n_heads * HEAD + n_neurons * NEURON
    biases = n_heads * 3 * 8 + n_neurons  # Q/K/V biases of a head; the FFN-in bias of a neuron
    assert _removed_weights(p) == weights == 3 * 1024 + 52 * 64
    assert sum(x.numel() for x in shrunk.parameters()) == before - weights - biases
    assert encoder_params(shrunk) == TOTAL - weights
    assert structured_sparsity(shrunk, TOTAL) == pytest.approx(weights / TOTAL, abs=1e-12)
    layer = shrunk.bert.encoder.layer[1]
    assert layer.attention.self.query.weight.shape == (16, 32)
    assert layer.attention.output.dense.weight.shape == (32, 16)
    assert layer.intermediate.dense.weight.shape == (32, 32) and layer.output.dense.weight.shape == (32, 32)
    assert layer.attention.self.num_attention_heads == 2 and layer.attention.self.all_head_size == 16
    assert shrunk.config.kaviz_structured == {
        "heads": [3, 2],
        "intermediate": [44, 32],
        "pruned_heads": {"0": [1], "1": [0, 3]},
    }
    assert shrunk.config.num_attention_heads == 4  # d_head = hidden / heads must still hold


def test_structured_sparsity_agrees_with_unstructured_accounting(tiny_bert):
    model = tiny_bert()
    p = _mixed_plan()
    frac = _removed_weights(p) / TOTAL
    masked = mask_model(copy.deepcopy(model), p)  # zeros in place: measured by the unstructured summary
    assert sparsity_summary(masked)["encoder_sparsity"] == pytest.approx(frac, abs=1e-12)
    shrunk = shrink(copy.deepcopy(model), p)
    assert sparsity_summary(shrunk, TOTAL)["encoder_sparsity"] == pytest.approx(structured_sparsity(shrunk, TOTAL))
    with pytest.raises(ValueError, match="reference_encoder_params"):
        structured_sparsity(shrunk, 0)


def test_second_shrink_maps_ids_back_to_original_heads(tiny_bert):
    model = tiny_bert().eval()
    once = shrink(copy.deepcopy(model), {"heads": {0: [2]}})
    twice = shrink(once, {"heads": {0: [2]}, "neurons": {1: [0, 5]}})  # current head 2 of layer 0 is head 3
    assert twice.config.kaviz_structured["pruned_heads"] == {"0": [2, 3], "1": []}
    assert kept_heads(twice) == [[0, 1], [0, 1, 2, 3]]
    masked = mask_model(copy.deepcopy(model), {"heads": {0: [2, 3]}, "neurons": {1: [0, 5]}})
    batch = _inputs()
    torch.testing.assert_close(_forward(twice, batch).logits, _forward(masked, batch).logits, atol=1e-5, rtol=0)


def test_shrunk_model_trains(tiny_bert):
    shrunk = shrink(tiny_bert(), _mixed_plan())
    shrunk(**_inputs()).loss.backward()
    assert all(p.grad is not None for p in shrunk.bert.encoder.parameters())
    half = shrink(tiny_bert().to(torch.bfloat16), _mixed_plan())
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}


def test_shrink_is_table_driven_for_distilbert():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(0)
    cfg = DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64)
    model = DistilBertForSequenceClassification(cfg).eval()
    model.set_attn_implementation(register_attention())
    p = _mixed_plan()
    masked, shrunk = mask_model(copy.deepcopy(model), p), shrink(copy.deepcopy(model), p)
    batch = _inputs()
    a, b = _forward(masked, batch), _forward(shrunk, batch)
    torch.testing.assert_close(b.logits, a.logits, atol=1e-5, rtol=0)
    assert [x.shape[1] for x in b.attentions] == [3, 2]
    assert shrunk.distilbert.transformer.layer[1].attention.n_heads == 2
    assert encoder_params(shrunk) == TOTAL - _removed_weights(p)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"heads": {0: [0, 1, 2, 3]}}, "every head of layer 0"),
        ({"neurons": {1: list(range(64))}}, "every neuron of layer 1"),
        ({"heads": {0: [4]}}, "head ids \\[4\\] from layer 0"),
        ({"heads": {2: [0]}}, "layers \\[2\\]"),
    ],
)
def test_bad_plans_are_refused_before_any_change(tiny_bert, bad, match):
    model = tiny_bert()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for fn in (mask_model, shrink):
        with pytest.raises(ValueError, match=match):
            fn(model, bad)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


# --- plan --------------------------------------------------------------------------------------------------


def _scores(low_head=(1, 2)) -> tuple[torch.Tensor, torch.Tensor]:
    heads = torch.full((2, 4), 100.0)
    heads[low_head] = 1e-6
    neurons = torch.arange(2 * 64, dtype=torch.float).reshape(2, 64) + 1.0  # layer 0 neuron 0 lowest
    return heads, neurons


def test_plan_known_values(tiny_bert):
    model = tiny_bert()
    heads, neurons = _scores()
    exact = plan(heads, neurons, model, HEAD / TOTAL)  # exactly one head's worth: the unimportant head
    assert exact == {"heads": {1: [2]}, "neurons": {}, "removed_fraction": HEAD / TOTAL}
    more = plan(heads, neurons, model, (HEAD + 1) / TOTAL)  # one weight more: plus the cheapest neuron
    assert more == {"heads": {1: [2]}, "neurons": {0: [0]}, "removed_fraction": (HEAD + NEURON) / TOTAL}
    small = plan(heads, torch.ones(2, 64), model, 3 * NEURON / TOTAL)  # equal scores: whole neurons, no head
    assert small["heads"] == {} and sum(map(len, small["neurons"].values())) == 3


@pytest.mark.parametrize("target", [0.01, 0.1, 0.25, 0.3, 0.5, 0.61, 0.75, 0.8, 0.86])
def test_plan_meets_target_within_one_unit(tiny_bert, target):
    model = tiny_bert()
    g = torch.Generator().manual_seed(int(target * 100))
    p = plan(torch.rand(2, 4, generator=g), torch.rand(2, 64, generator=g) * 0.05, model, target)
    removed = _removed_weights(p)
    assert p["removed_fraction"] == removed / TOTAL
    need = -(-int(round(target * TOTAL * 1e6)) // 1_000_000)  # ceil without float trouble
    assert need <= removed < need + (NEURON if target <= 0.8 else HEAD)
    for layer in (0, 1):
        assert len(p["heads"].get(layer, [])) <= 3 and len(p["neurons"].get(layer, [])) <= 63
    shrunk = shrink(copy.deepcopy(model), p)
    assert structured_sparsity(shrunk, TOTAL) == pytest.approx(p["removed_fraction"], abs=1e-12)


def test_plan_never_empties_a_layer(tiny_bert):
    model = tiny_bert()
    heads = torch.tensor([[1e-9, 2e-9, 5e-9, 3e-9], [9.0, 9.0, 9.0, 9.0]])  # layer 0 looks useless
    p = plan(heads, torch.full((2, 64), 5.0), model, 0.3)
    assert p["heads"][0] == [0, 1, 3]  # the best head of layer 0 stays
    near_max = plan(torch.rand(2, 4), torch.rand(2, 64), model, 0.867)  # max is 14208 / 16384 = 0.8672
    assert all(len(near_max["heads"][i]) == 3 and len(near_max["neurons"][i]) == 63 for i in (0, 1))


@pytest.mark.parametrize(
    ("target", "match"),
    [(0.0, r"\(0, 1\)"), (1.0, r"\(0, 1\)"), (1.5, r"\(0, 1\)"), ("0.5", r"\(0, 1\)"), (0.9, "at most 14208")],
)
def test_plan_rejects_impossible_targets(tiny_bert, target, match):
    with pytest.raises(ValueError, match=match):
        plan(torch.rand(2, 4), torch.rand(2, 64), tiny_bert(), target)


def test_plan_rejects_scores_of_the_wrong_shape(tiny_bert):
    with pytest.raises(ValueError, match=r"head_scores must have shape \(2, >= 4\)"):
        plan(torch.rand(3, 4), torch.rand(2, 64), tiny_bert(), 0.5)
    with pytest.raises(ValueError, match=r"neuron_scores must have shape \(2, >= 64\)"):
        plan(torch.rand(2, 4), torch.rand(2, 32), tiny_bert(), 0.5)


# --- importance --------------------------------------------------------------------------------------------


def _finite_difference(model, batch, module, cols: torch.Tensor, eps: float = 1e-4) -> float:
    """dL/dxi by central differences, scaling the unit's input columns of ``module`` by (1 +- eps):
    W diag(xi) x == W (xi x), so this is the mask gradient with no hooks involved (float64)."""
    losses = []
    for sign in (1.0, -1.0):
        m = copy.deepcopy(model)
        lin = m.get_submodule(module)
        with torch.no_grad():
            lin.weight[:, cols] *= 1.0 + sign * eps
            losses.append(float(m(**batch).loss))
    return (losses[0] - losses[1]) / (2 * eps)


@pytest.mark.parametrize("num_labels", [2, 1])
def test_importance_matches_finite_differences(tiny_bert, num_labels):
    model = tiny_bert(num_labels=num_labels, initializer_range=0.3).double().eval()
    batches = [_inputs(seed, num_labels=num_labels) for seed in (3, 4)]
    for b in batches:
        b["labels"] = b["labels"].double() if num_labels == 1 else b["labels"]
    heads, neurons = importance(model, batches, kind="taylor")
    fisher_h, fisher_n = importance(model, batches, kind="fisher")
    assert heads.shape == (2, 4) and neurons.shape == (2, 64)
    grads_h = [
        _finite_difference(model, b, "bert.encoder.layer.1.attention.output.dense", torch.arange(16, 24))
        for b in batches
    ]
    grads_n = [_finite_difference(model, b, "bert.encoder.layer.0.output.dense", torch.tensor([7])) for b in batches]
    assert float(heads[1, 2]) == pytest.approx(sum(abs(g) for g in grads_h), rel=1e-5)
    assert float(fisher_h[1, 2]) == pytest.approx(sum(g * g for g in grads_h), rel=1e-5)
    assert float(neurons[0, 7]) == pytest.approx(sum(abs(g) for g in grads_n), rel=1e-5)
    assert float(fisher_n[0, 7]) == pytest.approx(sum(g * g for g in grads_n), rel=1e-5)
    assert abs(grads_h[0]) > 1e-4  # the reference is not trivially zero


def test_dead_head_scores_zero_and_ranks_lowest(tiny_bert):
    model = tiny_bert(initializer_range=0.3).eval()
    att = model.bert.encoder.layer[0].attention
    rows = torch.arange(8, 16)  # head 1
    with torch.no_grad():
        for lin in (att.self.query, att.self.key, att.self.value):
            lin.weight[rows] = 0
            lin.bias[rows] = 0
        att.output.dense.weight[:, rows] = 0
    for kind in ("fisher", "taylor"):
        heads, _ = importance(model, [_inputs(3), _inputs(4)], kind=kind)
        assert float(heads[0, 1]) < 1e-12 and int(heads[0].argmin()) == 1
        assert float(heads[0].sort().values[1]) > 1e3 * float(heads[0, 1])
    heads, neurons = importance(model, [_inputs(3)])
    assert plan(heads, neurons, model, HEAD / TOTAL)["heads"] == {0: [1]}


def test_importance_leaves_the_model_as_it_was(tiny_bert):
    model = tiny_bert().train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    importance(model, [_inputs()])
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert not any(m._forward_pre_hooks for m in model.modules())


def test_importance_of_a_shrunk_model_pads_missing_units_with_nan(tiny_bert):
    shrunk = shrink(tiny_bert(), _mixed_plan())
    heads, neurons = importance(shrunk, [_inputs()])
    assert heads.shape == (2, 3) and neurons.shape == (2, 44)
    assert torch.isnan(heads[1, 2]) and torch.isnan(neurons[1, 32:]).all() and not torch.isnan(neurons[0]).any()
    p = plan(heads, neurons, shrunk, 0.2)  # a second round plans on what is left
    assert p["removed_fraction"] >= 0.2


def test_importance_errors(tiny_bert):
    model = tiny_bert()
    with pytest.raises(ValueError, match="'fisher' or 'taylor'"):
        importance(model, [_inputs()], kind="magnitude")
    with pytest.raises(ValueError, match="at least one batch"):
        importance(model, [])
    with pytest.raises(ValueError, match="'labels'"):
        importance(model, [{"input_ids": _inputs()["input_ids"]}])


# --- save / load -------------------------------------------------------------------------------------------


def test_save_and_load_round_trip(tiny_bert, tmp_path):
    from transformers import AutoModelForSequenceClassification, BertForSequenceClassification

    shrunk = shrink(tiny_bert().eval(), _mixed_plan())
    shrunk.save_pretrained(tmp_path)
    loaded = load_shrunk(str(tmp_path), attn_implementation=register_attention()).eval()
    assert type(loaded) is BertForSequenceClassification
    assert loaded.config.kaviz_structured == shrunk.config.kaviz_structured
    batch = _inputs()
    a, b = _forward(shrunk, batch), _forward(loaded, batch)
    torch.testing.assert_close(b.logits, a.logits, atol=1e-6, rtol=0)
    assert [x.shape[1] for x in b.attentions] == [3, 2]
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in shrunk.parameters())
    # transformers 5 has no config.pruned_heads: the plain loader refuses the smaller tensors
    with pytest.raises(RuntimeError, match="mismatch"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path)
    loaded.save_pretrained(tmp_path / "again")  # a loaded model saves and loads again
    assert json.loads((tmp_path / "again" / "config.json").read_text())["architectures"] == [
        "BertForSequenceClassification"
    ]
    again = load_shrunk(str(tmp_path / "again"), BertForSequenceClassification, attn_implementation="eager").eval()
    torch.testing.assert_close(_forward(again, batch).logits, a.logits, atol=1e-6, rtol=0)
