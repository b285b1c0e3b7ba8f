"""Configs known to learn, shared by the CLI (``kaviz demo``) and the app's New-run form.

Each preset is a whole :class:`~kaviz.core.config.RunConfig`: the form shows its values and the
user edits from there, so a run started from a preset in the app is the run the CLI would start.

- ``tiny``: ``kaviz demo --tiny``: a small random BERT on the built-in task's plain grammar (the
  adjective decides), about a minute on 2 cores; learning rates of 1e-3 make a random model learn
  it in 100 steps (teacher 100% against a constant answer of 50%); the MiniLM rate of 5e-5, or
  the full grammar, leave it at the constant answer.
- ``minilm``: ``kaviz demo``: the packaged all-MiniLM-L6-v2 on the built-in task, ≤10 min.
- ``paper-mrpc``: the paper's protocol on MRPC (``benchmarks/configs/paper-mrpc.yaml`` without
  its local paths): 12 student epochs, batch 32, length 128, constant 3e-5; hours on a CPU.
"""

from __future__ import annotations

from typing import NamedTuple

from kaviz.core.config import PACKAGED_MODEL, TINY_MODEL, RunConfig


class Preset(NamedTuple):
    label: str
    note: str
    config: RunConfig


def demo_config(tiny: bool = False, name: str | None = None) -> RunConfig:
    """The embedded demo: the built-in sentiment task with all five methods.

    ``tiny``: a small random BERT, seconds per unit (≤60 s in all on 2 cores). Otherwise the
    packaged all-MiniLM-L6-v2 (≤10 min on 2 cores).
    """
    if tiny:
        data = {
            "name": name or "demo-tiny",
            "model": {"name_or_path": TINY_MODEL},
            # the plain grammar: a random model cannot learn the full one (negation, contrast, unseen
            # adjectives) in seconds; on 'full' this teacher stays at the constant answer (50.7 vs 50.0)
            "task": {
                "name": "demo",
                "demo_train_size": 800,
                "demo_dev_size": 300,
                "max_length": 40,
                "demo_grammar": "plain",
            },
            "training": {"max_steps": 100, "batch_size": 32, "learning_rate": 1e-3},
            "pruning": {"max_steps": 100, "learning_rate": 1e-3, "mask_updates": 20},
            "sparsities": [0.5, 0.8, 0.95],
            "analysis": {"probe_size": 64, "attribution_examples": 4, "ig_steps": 8},
        }
    else:
        data = {
            "name": name or "demo",
            "model": {"name_or_path": PACKAGED_MODEL},
            "task": {"name": "demo", "demo_train_size": 2000, "demo_dev_size": 400, "max_length": 40},
            # no weight decay: the embedding rows of words the demo never uses stay exactly pre-trained,
            # so its weights ship compactly as a difference from the packaged model (kaviz.train.compact)
            "training": {"max_steps": 150, "batch_size": 32, "learning_rate": 5e-5, "weight_decay": 0.0},
            "pruning": {"max_steps": 60, "learning_rate": 1e-4, "mask_updates": 30, "ramp_end": 0.8},
            "sparsities": [0.5, 0.7, 0.9],
            "analysis": {"probe_size": 96, "attribution_examples": 4, "ig_steps": 8},
        }
    return RunConfig.from_dict(data)


def paper_mrpc(name: str = "paper-mrpc") -> RunConfig:
    """The paper's MRPC protocol (../shared/PAPER.md); GLUE MRPC from the hub unless a path is given."""
    return RunConfig.from_dict(
        {
            "name": name,
            "model": {"name_or_path": PACKAGED_MODEL},
            "task": {"name": "mrpc", "max_length": 128},
            "training": {
                "epochs": 10,
                "plateau_delta": 0.5,
                "batch_size": 32,
                "learning_rate": 5e-5,
                "warmup_ratio": 0.06,
                "precision": "fp32",
            },
            "pruning": {"epochs": 12, "learning_rate": 3e-5, "mask_updates": 100, "ramp_end": 1.0},
            "sparsities": [0.8, 0.9, 0.95],
            "methods": ["knowledge-aware", "gradual-magnitude", "small-dense"],
            "seed": 42,
            "analysis": {"probe_size": 256, "attribution_examples": 8, "ig_steps": 8, "cka_kinds": ["linear_cka"]},
        }
    )


def presets() -> dict[str, Preset]:
    """The New-run form's presets, by key, in the order offered."""
    return {
        "tiny": Preset("Tiny demo", "random 4-layer BERT, built-in task: about a minute", demo_config(tiny=True)),
        "minilm": Preset("MiniLM demo", "packaged all-MiniLM-L6-v2, built-in task: ≤10 min", demo_config()),
        "paper-mrpc": Preset(
            "Paper protocol on MRPC", "12 student epochs as in the paper: hours on a CPU", paper_mrpc()
        ),
    }
