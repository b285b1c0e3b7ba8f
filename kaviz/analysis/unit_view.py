"""Look inside one unit's model: load it from its checkpoint, attention maps and token attributions
for a single sentence.  For interactive views (the app caches what these return); models are
never modified.

Only checkpoints kept in the run are loaded, never a hub download: a run copied without
checkpoints (e.g. a shipped demo run) gives None, and callers explain that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from kaviz.store import Run

PAIR_SEP = " [SEP] "  # how probe texts show sentence pairs (kaviz.measure.capture.ProbeInputs.texts)


class AttentionMaps(NamedTuple):
    """``tokens``: the T tokens of the sentence; ``maps``: one (H, T, T) probability array per layer."""

    tokens: list[str]
    maps: list[np.ndarray]


def load_unit_model(run: Run, unit: str) -> nn.Module | None:
    """The unit's classifier from its checkpoint in ``run`` (kaviz's attention), in eval mode, or
    from its compact weights (a shipped run, :mod:`kaviz.train.compact`), or None when it has neither."""
    from transformers import AutoConfig

    from kaviz.core.config import ModelConfig
    from kaviz.train.models import load_model

    ckpt = run.checkpoint_dir(unit)
    if ckpt is None:
        compact = run.compact_dir(unit)
        if compact is not None:
            from kaviz.train.compact import load_compact

            return load_compact(compact)
        return _pretrained_offline(run) if unit == "pretrained" else None
    cfg = AutoConfig.from_pretrained(str(ckpt))
    return load_model(str(ckpt), ModelConfig(), cfg.num_labels, cfg.problem_type == "regression").eval()


def _pretrained_offline(run: Run) -> nn.Module | None:
    """The pre-trained stage rebuilt as the run built it (the configured model, a head initialised
    under the run's seed), when that needs no download: the packaged model, the tiny model or a
    local folder; else None."""
    from kaviz.core.config import PACKAGED_MODEL, RunConfig, is_tiny
    from kaviz.train.models import load_pretrained

    cfg = RunConfig.from_dict(run.config)
    source = cfg.model.name_or_path
    if source != PACKAGED_MODEL and not is_tiny(source) and not Path(source).expanduser().is_dir():
        return None
    heads = [_head_of(run, u) for u in run.units()["unit"] if u != "pretrained"]
    num_labels, regression = next((h for h in heads if h is not None), (2, False))
    return load_pretrained(cfg.model, num_labels, regression, seed=cfg.seed).eval()


def _head_of(run: Run, unit: str) -> tuple[int, bool] | None:
    """(num_labels, regression) from a unit's stored model config, without loading weights."""
    from transformers import AutoConfig

    folder = run.checkpoint_dir(unit) or run.compact_dir(unit)
    if folder is None:
        return None
    cfg = AutoConfig.from_pretrained(str(folder))
    return cfg.num_labels, cfg.problem_type == "regression"


def store_compact(source: Run, dest: Run, units: list[str]) -> list[dict]:
    """Store ``units``' checkpoints from ``source`` in ``dest`` as compact weights, each as its difference
    from the run's pre-trained model (``model.name_or_path``); one summary dict per unit."""
    from functools import partial

    from kaviz.core.config import ModelConfig
    from kaviz.train.compact import read_meta, save_compact
    from kaviz.train.models import load_model

    base_source = source.manifest["config"]["model"]["name_or_path"]
    out = []
    for unit in units:
        model = load_unit_model(source, unit)
        if model is None:
            raise FileNotFoundError(f"unit {unit!r} of run {source.run_id!r} has no checkpoint to store compactly")
        regression = model.config.problem_type == "regression"
        base = load_model(base_source, ModelConfig(name_or_path=base_source), model.config.num_labels, regression)
        folder = dest.save_compact(unit, partial(save_compact, model, base, base_source=base_source))
        kinds = sorted({t["kind"] for t in read_meta(folder)["tensors"].values()})
        size = sum(f.stat().st_size for f in folder.iterdir())
        out.append({"unit": unit, "bytes": size, "kinds": kinds})
    return out


def load_run_tokenizer(run: Run) -> Any | None:
    """The tokenizer saved with ``run``, or None when it has none."""
    from transformers import AutoTokenizer

    folder = run.tokenizer_dir()
    return AutoTokenizer.from_pretrained(str(folder)) if folder is not None else None


def as_input(text: str) -> str | tuple[str, str]:
    """A shown text back to what the tokenizer takes: ``"a [SEP] b"`` -> ``("a", "b")``."""
    a, sep, b = text.partition(PAIR_SEP)
    return (a, b) if sep else text


def attention_maps(model: nn.Module, tokenizer: Any, text: str, *, max_length: int = 128) -> AttentionMaps:
    """Attention probabilities of ``model`` on one sentence (or ``"a [SEP] b"`` pair), via kaviz.measure.capture."""
    from kaviz.measure.capture import ProbeInputs, capture

    if not text.strip():
        raise ValueError("text is empty; give a sentence to look at")
    x = as_input(text)
    enc = tokenizer(*((x,) if isinstance(x, str) else x), truncation=True, max_length=max_length, return_tensors="pt")
    probe = ProbeInputs(
        input_ids=enc["input_ids"],  # (1, T)
        attention_mask=enc["attention_mask"],  # (1, T)
        token_type_ids=enc.get("token_type_ids"),
        labels=torch.zeros(1, dtype=torch.int64),
        texts=[text],
        indices=[0],
    )
    cap = capture(model, probe, batch_size=1, tokens=False)
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"][0].tolist())
    return AttentionMaps(tokens, [a[0].numpy() for a in cap.attentions])  # L x (H, T, T)


def token_attributions(teacher: nn.Module, student: nn.Module, tokenizer: Any, text: str, *, n_steps: int = 16):
    """Integrated-gradients attributions of ``teacher`` and ``student`` for one text, for the
    teacher's predicted class: :class:`kaviz.measure.attribution.AttributionTable` (tokens, summary)."""
    from kaviz.measure.attribution import attribution_table

    if not text.strip():
        raise ValueError("text is empty; give a sentence to explain")
    return attribution_table(teacher, student, tokenizer, [as_input(text)], n_steps=n_steps)
