"""Run a model's encoder layers one at a time on given inputs: what layer-by-layer one-shot pruning
needs to cost one pass through each layer rather than a forward up to every layer in turn.

The official SparseGPT and Wanda code (github.com/IST-DASLab/sparsegpt ``opt.py``,
github.com/locuslab/wanda ``lib/prune.py``) catch the inputs of the first layer, then run each layer
on its own and feed its outputs to the next; their per-family code knows each layer's arguments.
:class:`LayerReplay` learns them instead: one forward per calibration batch records every encoder
layer's call (its hidden-state input and every other argument: attention masks, position
embeddings, ...; transformers' cache objects are dropped so that a replay cannot grow them), and
:meth:`LayerReplay.run` calls layer ``l`` on any hidden states with layer ``l``'s recorded arguments.

A model that does work *between* its layers (DeBERTa-v2 convolves after its first layer) would feed
the next layer the wrong input. :meth:`LayerReplay.faithful` checks on the model as recorded that
replaying each layer on its recorded input of the first batch gives the next layer's recorded input;
callers run full forwards where it does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from kaviz.core.structure import encoder_layers
from kaviz.train.models import eval_mode


class _Stop(Exception):
    """Raised after the last encoder layer: the head need not run."""


@dataclass
class _Call:
    args: tuple  # the arguments after the hidden states (positional calls)
    kwargs: dict
    positional: bool  # the hidden states came first among args (else as kwargs["hidden_states"])
    hidden: torch.Tensor | None = field(default=None)  # kept for layer 0, and for the first batch


def _uncached(x: object) -> object:
    return None if type(x).__name__.endswith("Cache") else x  # DynamicCache, EncoderDecoderCache, ...


class LayerReplay:
    """Every encoder layer's call on every batch, recorded in one forward per batch of ``model``
    as it is now (``batches``: dicts for ``model(**batch)``, already on the model's device). Keeps
    the hidden-state inputs of layer 0 (all batches) and of every layer for the first batch only."""

    def __init__(self, model: nn.Module, batches: Sequence[dict[str, torch.Tensor]]):
        self.layers = list(encoder_layers(model))
        self.calls: list[list[_Call]] = [[] for _ in self.layers]

        def pre(i: int):
            def hook(mod: nn.Module, args: tuple, kwargs: dict) -> None:
                kw = {k: _uncached(v) for k, v in kwargs.items()}
                if "use_cache" in kw:
                    kw["use_cache"] = False
                if args:
                    call = _Call(tuple(_uncached(a) for a in args[1:]), kw, True, args[0])
                else:
                    call = _Call((), kw, False, kw.pop("hidden_states"))
                if i and self.calls[i]:  # past the first batch only layer 0's inputs are needed
                    call.hidden = None
                self.calls[i].append(call)

            return hook

        def stop(mod: nn.Module, args: tuple, out: object) -> None:
            raise _Stop

        handles = [layer.register_forward_pre_hook(pre(i), with_kwargs=True) for i, layer in enumerate(self.layers)]
        handles.append(self.layers[-1].register_forward_hook(stop))
        try:
            with torch.no_grad(), eval_mode(model):
                for batch in batches:
                    try:
                        model(**batch)
                    except _Stop:
                        pass
        finally:
            for h in handles:
                h.remove()

    def first_inputs(self) -> list[torch.Tensor]:
        """The hidden states entering layer 0, one tensor per batch."""
        return [c.hidden for c in self.calls[0]]  # type: ignore[misc]

    def run(self, layer: int, batch: int, hidden: torch.Tensor) -> torch.Tensor:
        """Layer ``layer``'s output on ``hidden`` with its recorded arguments of batch ``batch``."""
        c = self.calls[layer][batch]
        with torch.no_grad():
            if c.positional:
                out = self.layers[layer](hidden, *c.args, **c.kwargs)
            else:
                out = self.layers[layer](*c.args, hidden_states=hidden, **c.kwargs)
        return out[0] if isinstance(out, (tuple, list)) else out

    def faithful(self, rtol: float = 1e-4, atol: float = 1e-5) -> bool:
        """Whether replaying each layer on its recorded input of the first batch gives the next
        layer's recorded input (on the model as recorded: check before changing any weight)."""
        try:
            for layer in range(len(self.layers) - 1):
                got = self.run(layer, 0, self.calls[layer][0].hidden)  # type: ignore[arg-type]
                want = self.calls[layer + 1][0].hidden
                if not isinstance(got, torch.Tensor) or got.shape != want.shape:
                    return False
                if not torch.allclose(got, want, rtol=rtol, atol=atol):
                    return False
        except Exception:  # a layer that cannot run on its own: full forwards will do
            return False
        for calls in self.calls[1:]:
            calls[0].hidden = None
        return True
