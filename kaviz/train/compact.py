"""Compact unit weights: a checkpoint stored as its difference from the pre-trained model it started from.

A shipped run needs its teacher's and a few students' weights for the Attention and Attribution
pages to draw maps on first open, but a float32 MiniLM checkpoint is 90 MB.  Fine-tuning and pruning
start from a pre-trained model that kaviz can load offline (the packaged all-MiniLM-L6-v2), so each
tensor is stored as the smallest of these encodings against that base's tensor of the same name:

- ``base``: bit-identical to the base tensor: nothing stored;
- ``rows``: only some rows differ (the embedding rows of words the task never shows stay pre-trained
  when training uses no weight decay): those rows' indices and their difference from the base as
  int8, one float32 scale per row;
- ``delta8``: the whole difference as int8, one scale per row (a fine-tuned dense matrix);
- ``sparse``: a pruned matrix: a packed bit mask of its non-zeros and their difference from the
  base as int8, one scale per row;
- ``sparse16`` / ``dense16``: the same without a base, values in float16, used where int8 would be
  less exact than float16 (below) or the base has no tensor of that shape;
- ``exact``: vectors (biases, LayerNorm) and tensors the base lacks, in their own dtype.

Exactness: an int8 encoding is used only where its largest error on the tensor is no larger than
the largest error of storing the tensor in float16, so compact weights are at least as exact as a
float16 copy in the max norm, tensor by tensor; pruned zeros stay exactly zero.  Nothing is ever
unpickled: the values are one safetensors file, the layout one JSON file beside the model's config.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

FORMAT = 1
META = "compact.json"
WEIGHTS = "compact.safetensors"
BASED = frozenset({"base", "rows", "delta8", "sparse"})  # the kinds decoded against the base's tensor
SPARSE_BELOW = 0.75  # a matrix with fewer than this fraction of non-zeros is a candidate for ``sparse``


class CompactError(ValueError):
    """A compact folder that cannot be written or read back (wrong base, damaged files)."""


def _fp16_error(w: torch.Tensor) -> float:
    return float((w.to(torch.float16).to(w.dtype) - w).abs().max()) if w.numel() else 0.0


def _quantize_rows(d: torch.Tensor, keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 codes and one float32 scale per row for a 2-D difference ``d`` (only at ``keep``, if given)."""
    d = d.to(torch.float64)
    peak = (d.abs() if keep is None else d.abs() * keep).amax(dim=1)
    scale = torch.where(peak > 0, peak / 127.0, torch.ones_like(peak))
    q = torch.round(d / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale.to(torch.float32)


def _dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.to(torch.float64) * scale.to(torch.float64)[:, None]


def encode_tensor(w: torch.Tensor, base: torch.Tensor | None) -> tuple[str, dict[str, torch.Tensor]]:
    """The encoding kind and the stored arrays of one tensor (see the module docstring)."""
    w = w.detach().cpu().contiguous()
    if base is not None and (base.shape != w.shape or base.dtype != w.dtype):
        base = None
    if base is not None and torch.equal(w, base):
        return "base", {}
    if w.ndim != 2 or not w.dtype.is_floating_point:
        return "exact", {"w": w}
    base = None if base is None else base.detach().cpu().contiguous()
    bound = _fp16_error(w)
    nonzero = w != 0
    candidates: list[tuple[int, str, dict[str, torch.Tensor]]] = []
    if base is not None:
        d = w.to(torch.float64) - base.to(torch.float64)
        changed = (w != base).any(dim=1).nonzero().flatten()
        if 0 < len(changed) < w.shape[0]:
            q, scale = _quantize_rows(d[changed])
            if float((_dequantize(q, scale) - d[changed]).abs().max()) <= bound:
                arrays = {"rows": changed.to(torch.int32), "q": q, "scale": scale}
                candidates.append((_nbytes(arrays), "rows", arrays))
        q, scale = _quantize_rows(d)
        if float((_dequantize(q, scale) - d).abs().max()) <= bound:
            arrays = {"q": q, "scale": scale}
            candidates.append((_nbytes(arrays), "delta8", arrays))
        if nonzero.float().mean() < SPARSE_BELOW:
            q, scale = _quantize_rows(d, nonzero)
            err = ((_dequantize(q, scale) - d) * nonzero).abs().max()
            if float(err) <= bound:
                arrays = {"mask": _pack(nonzero), "q": q[nonzero], "scale": scale}
                candidates.append((_nbytes(arrays), "sparse", arrays))
    if nonzero.float().mean() < SPARSE_BELOW:
        arrays = {"mask": _pack(nonzero), "values": w[nonzero].to(torch.float16)}
        candidates.append((_nbytes(arrays), "sparse16", arrays))
    candidates.append((2 * w.numel(), "dense16", {"values": w.to(torch.float16)}))
    _, kind, arrays = min(candidates, key=lambda c: c[0])
    return kind, arrays


def decode_tensor(
    kind: str, arrays: dict[str, torch.Tensor], base: torch.Tensor | None, shape: list[int], dtype: torch.dtype
) -> torch.Tensor:
    """The tensor back from :func:`encode_tensor`'s output (``base``: the base's tensor, where used)."""
    if kind == "exact":
        return arrays["w"]
    if kind == "dense16":
        return arrays["values"].to(dtype)
    if kind == "sparse16":
        out = torch.zeros(shape, dtype=dtype)
        out[_unpack(arrays["mask"], shape)] = arrays["values"].to(dtype)
        return out
    if base is None:
        raise CompactError(f"a {kind!r} tensor needs the base model's tensor of shape {shape}")
    b = base.detach().cpu().to(torch.float64)
    if kind == "base":
        return base.detach().cpu().clone()
    if kind == "delta8":
        return (b + _dequantize(arrays["q"], arrays["scale"])).to(dtype)
    if kind == "rows":
        rows = arrays["rows"].long()
        b[rows] += _dequantize(arrays["q"], arrays["scale"])
        return b.to(dtype)
    if kind == "sparse":
        mask = _unpack(arrays["mask"], shape)
        out = torch.zeros(shape, dtype=torch.float64)
        row_of = mask.nonzero()[:, 0]
        out[mask] = b[mask] + arrays["q"].to(torch.float64) * arrays["scale"].to(torch.float64)[row_of]
        return out.to(dtype)
    raise CompactError(f"unknown compact tensor kind {kind!r}")


def _pack(mask: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.packbits(mask.numpy().reshape(-1)))


def _unpack(packed: torch.Tensor, shape: list[int]) -> torch.Tensor:
    n = int(np.prod(shape))
    return torch.from_numpy(np.unpackbits(packed.numpy(), count=n).astype(bool)).reshape(shape)


def _fingerprint(base_state: dict[str, torch.Tensor], tensors: dict[str, dict[str, Any]]) -> str:
    """SHA-256 of the base tensors the layout is decoded against, in name order."""
    h = hashlib.sha256()
    for name in sorted(n for n, t in tensors.items() if t["kind"] in BASED):
        b = base_state.get(name)
        if b is None:
            return "missing:" + name
        h.update(name.encode())
        h.update(b.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _nbytes(arrays: dict[str, torch.Tensor]) -> int:
    return sum(a.numel() * a.element_size() for a in arrays.values())


# ----- whole models -------------------------------------------------------------------------------


def save_compact(model: nn.Module, base: nn.Module, folder: str | Path, base_source: str) -> dict[str, Any]:
    """Write ``model`` into ``folder`` as its difference from ``base`` (loaded from ``base_source``,
    which :func:`load_compact` loads again); returns the layout (also written to ``compact.json``)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    base_state = base.state_dict()
    stored: dict[str, torch.Tensor] = {}
    tensors: dict[str, dict[str, Any]] = {}
    for name, w in model.state_dict().items():
        kind, arrays = encode_tensor(w, base_state.get(name))
        tensors[name] = {"kind": kind, "shape": list(w.shape), "dtype": str(w.dtype).removeprefix("torch.")}
        stored.update({f"{name}::{k}": v.contiguous() for k, v in arrays.items()})
    model.config.save_pretrained(folder)
    save_file(stored, str(folder / WEIGHTS), metadata={"format": str(FORMAT)})
    meta = {"format": FORMAT, "base": base_source, "base_sha256": _fingerprint(base_state, tensors), "tensors": tensors}
    (folder / META).write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return meta


def read_meta(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / META
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CompactError(f"cannot read {path}: {e}") from e
    if meta.get("format") != FORMAT or not isinstance(meta.get("tensors"), dict) or not meta.get("base"):
        raise CompactError(f"{path} is not a kaviz compact layout (format {FORMAT})")
    return meta


def load_compact(folder: str | Path) -> nn.Module:
    """The model stored by :func:`save_compact`: its base loaded again (offline for the packaged
    model), every tensor decoded onto it, in eval mode."""
    from safetensors.torch import load_file
    from transformers import AutoConfig

    from kaviz.core.config import ModelConfig
    from kaviz.train.models import load_model

    folder = Path(folder)
    meta = read_meta(folder)
    cfg = AutoConfig.from_pretrained(str(folder))
    regression = cfg.problem_type == "regression"
    model = load_model(meta["base"], ModelConfig(name_or_path=meta["base"]), cfg.num_labels, regression)
    stored = load_file(str(folder / WEIGHTS))
    base_state = model.state_dict()
    if _fingerprint(base_state, meta["tensors"]) != meta.get("base_sha256"):
        raise CompactError(
            f"{folder} was stored against a different {meta['base']!r} than the one loaded here "
            "(its tensors differ): these weights cannot be rebuilt from it"
        )
    state = {}
    for name, info in meta["tensors"].items():
        arrays = {k.split("::", 1)[1]: v for k, v in stored.items() if k.split("::", 1)[0] == name}
        dtype = getattr(torch, info["dtype"])
        state[name] = decode_tensor(info["kind"], arrays, base_state.get(name), info["shape"], dtype)
    missing = sorted(set(base_state) - set(state))
    if missing:
        raise CompactError(f"{folder} lacks {len(missing)} of the model's tensors, e.g. {missing[0]}")
    model.load_state_dict(state, strict=True)
    return model.eval()


def layout_table(meta: dict[str, Any]):
    """One row per tensor kind: how many tensors and how many weights each encoding holds."""
    import pandas as pd

    rows = [{"kind": t["kind"], "weights": int(np.prod(t["shape"]))} for t in meta["tensors"].values()]
    df = pd.DataFrame(rows, columns=["kind", "weights"])
    return df.groupby("kind", as_index=False).agg(tensors=("weights", "size"), weights=("weights", "sum"))
