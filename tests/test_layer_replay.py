"""One-shot pruning runs each encoder layer on the pruned outputs of the layer below
(kaviz.train.layer_replay), as the official SparseGPT/Wanda code does, instead of one forward up to
every layer: per model family the replay gives the weights of the reference (one full forward per
layer, ``calibration_stats``), calls the first layer a fixed number of times whatever the depth,
and steps aside where a model works between its layers (DeBERTa-v2's convolution)."""

from __future__ import annotations

import copy

import pytest
import torch

from kaviz.core.structure import encoder_layers
from kaviz.train import oneshot
from kaviz.train.families import TINY_FAMILIES, tiny_family_config
from kaviz.train.layer_replay import LayerReplay

TEXTS = ["a film of rare grace", "dull", "the plot holds, the acting does not", "fine"]


def _model(family: str, tok, layers: int = 3, **extra):
    from transformers import AutoModelForSequenceClassification

    cfg = tiny_family_config(family, len(tok), 2, tok)
    d = {k: v for k, v in cfg.to_dict().items() if k != "layer_types"}  # per-layer lists follow the depth
    d |= {k: layers for k in ("num_hidden_layers", "n_layer", "n_layers") if k in d} | extra
    cfg = type(cfg)(**d)
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(cfg, attn_implementation="eager").eval()


def _batches(tok):
    enc = tok(TEXTS, padding=True, return_tensors="pt")  # padded: the masks must reach every layer
    return [dict(enc), dict(tok(TEXTS[:2], padding=True, return_tensors="pt"))]


class _NoReplay(LayerReplay):
    def faithful(self, *a, **kw) -> bool:
        return False


@pytest.mark.parametrize("family", list(TINY_FAMILIES))
def test_replayed_pruning_equals_a_forward_per_layer(family, tok, monkeypatch, one_thread):
    model = _model(family, tok)
    batches = _batches(tok)
    assert LayerReplay(model, batches).faithful(), family
    for prune in (oneshot.prune_wanda, oneshot.prune_sparsegpt):
        fast, slow = copy.deepcopy(model), copy.deepcopy(model)
        used_fast, used_slow = {}, {}
        prune(fast, batches, 0.5, stats=used_fast)
        with monkeypatch.context() as m:
            m.setattr(oneshot, "LayerReplay", _NoReplay)  # the reference: calibration_stats per layer
            prune(slow, batches, 0.5, stats=used_slow)
        assert set(used_fast) == set(used_slow)
        for name, got in used_fast.items():  # float32 noise of a different kernel order, relative to the scale
            want = used_slow[name]
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))
        for (name, a), b in zip(fast.named_parameters(), slow.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=f"{family} {prune.__name__} {name}")


def test_the_first_layer_runs_a_fixed_number_of_times_whatever_the_depth(tok, one_thread):
    """Per batch: once recorded, once for its statistics, once for its pruned outputs (and once more
    for the first batch's faithfulness check); a forward per layer would run it once per layer."""
    batches = _batches(tok)
    for layers in (2, 6):
        model = _model("bert", tok, layers=layers)
        calls = []
        encoder_layers(model)[0].register_forward_pre_hook(lambda *a, seen=calls: seen.append(1))
        oneshot.prune_wanda(model, batches, 0.5)
        assert len(calls) == 3 * len(batches) + 1, layers


def test_a_model_that_works_between_its_layers_falls_back_to_full_forwards(tok, one_thread):
    """DeBERTa-v2 with its convolution after layer 0: the replay is not faithful, the pruning says
    so and gives the reference's weights."""
    model = _model("deberta-v2", tok, conv_kernel_size=3)
    batches = _batches(tok)
    assert not LayerReplay(model, batches).faithful()
    said, ref = [], copy.deepcopy(model)
    oneshot.prune_wanda(model, batches, 0.5, progress=said.append)
    assert any("do not replay" in s for s in said)
    for layer in range(3):  # the reference: the statistics of layer l with layers < l pruned
        stats = oneshot.calibration_stats(ref, batches, layer, "norm")
        for name, lin in oneshot._linears_by_layer(ref)[layer].items():
            with torch.no_grad():
                w = oneshot.oriented(lin)
                w.masked_fill_(~oneshot.wanda_mask(w, stats[name].sqrt(), 0.5, None), 0.0)
    for a, b in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b)
