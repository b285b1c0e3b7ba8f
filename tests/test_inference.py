"""Inference measurement: CSR checkpoints against byte arithmetic, CSR linears against the dense
model, timers against a known sleep, the profiler's peak against known allocations, table shape."""

from __future__ import annotations

import json
import struct
import time

import pandas as pd
import pytest
import torch
from torch import nn

from kaviz.core.structure import prunable_linears
from kaviz.measure.inference import (
    COLUMNS,
    CSRLinear,
    disk_sizes,
    load_sparse,
    measure_inference,
    peak_memory,
    save_sparse,
    sparse_linear_model,
    speedup_table,
    time_forward,
)
from kaviz.train.pruning import prune_magnitude

pytestmark = pytest.mark.usefixtures("one_thread")


def _pruned(tiny_bert, sparsity: float = 0.9) -> nn.Module:
    model = tiny_bert().eval()
    prune_magnitude(model, sparsity)
    return model


def _make_batch(b: int, t: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(b)
    ids = torch.randint(5, 100, (b, t), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _header_len(path) -> int:
    with open(path, "rb") as f:
        return struct.unpack("<Q", f.read(8))[0]


def test_csr_roundtrip_is_exact(tiny_bert, tmp_path):
    model = _pruned(tiny_bert)
    for dtype in (None, torch.float16):
        path = save_sparse(model, tmp_path / f"m{dtype}.safetensors", dtype=dtype)
        loaded = load_sparse(path)
        expected = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v)
                    for k, v in model.state_dict().items()}  # fmt: skip
        assert set(loaded) == set(expected)
        for k, v in expected.items():
            assert loaded[k].dtype == v.dtype and torch.equal(loaded[k], v), k
    # the restored state dict loads into a fresh model and gives identical logits
    fresh = tiny_bert(seed=5).eval()
    fresh.load_state_dict(load_sparse(tmp_path / "mNone.safetensors"))
    batch = _make_batch(2)
    with torch.no_grad():
        assert torch.equal(fresh(**batch).logits, model(**batch).logits)


def test_sparse_file_size_matches_arithmetic(tiny_bert, tmp_path):
    model = _pruned(tiny_bert, 0.9)
    sizes = disk_sizes(model, tmp_path)
    assert sizes["sparse"] < sizes["dense"] and sizes["sparse_fp16"] < sizes["dense_fp16"] < sizes["dense"]
    weights = {f"{n}.weight" for n in prunable_linears(model)}
    for suffix, vbytes in (("", 4), ("_fp16", 2)):
        sparse_data = dense_data = 0
        for k, v in model.state_dict().items():
            size = v.element_size() if not v.is_floating_point() else vbytes
            dense_data += v.numel() * size
            if k in weights:  # 90% zeros: CSR always smaller here
                nnz = int((v != 0).sum())
                sparse_data += nnz * size + nnz * 4 + (v.shape[0] + 1) * 4  # values + int32 cols + int32 rowptr
            else:
                sparse_data += v.numel() * size
        for kind, data in (("dense", dense_data), ("sparse", sparse_data)):
            path = tmp_path / f"{kind}{suffix}.safetensors"
            header = _header_len(path)
            assert sizes[f"{kind}{suffix}"] == 8 + header + data == path.stat().st_size
            assert header < 200 * (len(weights) * 3 + len(model.state_dict())) + 4096  # JSON names/offsets only
    meta = json.loads(
        open(tmp_path / "sparse.safetensors", "rb").read()[8 : 8 + _header_len(tmp_path / "sparse.safetensors")]
    )
    assert len(json.loads(meta["__metadata__"]["kaviz_csr"])) == len(weights)


def test_dense_weights_stay_dense_in_sparse_file(tiny_bert, tmp_path):
    model = tiny_bert().eval()  # no zeros: CSR would be larger, so nothing is converted
    sizes = disk_sizes(model, tmp_path)
    assert load_sparse(tmp_path / "sparse.safetensors").keys() == model.state_dict().keys()
    assert abs(sizes["sparse"] - sizes["dense"]) < 512  # same tensors, only the metadata differs


def test_sparse_linear_model_matches_dense(tiny_bert):
    model = _pruned(tiny_bert, 0.7)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sparse = sparse_linear_model(model, min_sparsity=0.5)
    converted = [m for m in sparse.modules() if isinstance(m, CSRLinear)]
    assert len(converted) == len(prunable_linears(model)) == 12
    assert not any(isinstance(m, CSRLinear) for m in model.modules())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # input untouched
    assert len([m for m in sparse_linear_model(model, min_sparsity=0.8).modules() if isinstance(m, CSRLinear)]) == 0
    batch = _make_batch(3, 9)
    batch["attention_mask"][1, 6:] = 0
    with torch.inference_mode():
        dense_out, sparse_out = model(**batch).logits, sparse.eval()(**batch).logits
    torch.testing.assert_close(sparse_out, dense_out, atol=1e-5, rtol=0)
    lin = nn.Linear(8, 5)
    x = torch.randn(2, 3, 8)
    torch.testing.assert_close(CSRLinear(lin)(x), lin(x), atol=1e-6, rtol=0)


class _Sleepy(nn.Module):
    def __init__(self, inner: nn.Module, seconds: float):
        super().__init__()
        self.inner, self.seconds = inner, seconds

    def forward(self, **batch):
        time.sleep(self.seconds)
        return self.inner(**batch)


def test_time_forward_measures_a_known_sleep(tiny_bert):
    model = tiny_bert()
    batch = _make_batch(2)
    fast = time_forward(model, batch, warmup=1, repeats=5)
    assert 0 < fast["p10_s"] <= fast["median_s"] <= fast["p90_s"]
    assert model.training  # eval mode only during timing
    sleep = 0.03
    slow = time_forward(_Sleepy(model, sleep), batch, warmup=1, repeats=5)
    assert slow["min_s"] >= sleep  # time.sleep never sleeps less
    assert slow["median_s"] - fast["median_s"] == pytest.approx(sleep, abs=0.25 * sleep)
    with pytest.raises(ValueError, match="repeats"):
        time_forward(model, batch, repeats=0)


class _Allocates(nn.Module):
    """Live bytes: 4 MB, 6 MB, 2 MB, then 10 MB at the peak, 8 MB out."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.empty(1_000_000)  # 4 MB
        b = torch.empty(500_000)  # 2 MB
        del a
        c = torch.empty(2_000_000)  # 8 MB
        del b
        return c


def test_peak_memory_of_known_allocations():
    peak = peak_memory(_Allocates(), {"x": torch.zeros(1)})
    assert peak == 10_000_000


def test_measure_inference_table(tiny_bert, tmp_path):
    model = _pruned(tiny_bert, 0.9)
    table = measure_inference(model, _make_batch, batch_sizes=(1, 4), repeats=3, warmup=1, tmpdir=tmp_path)
    assert list(table.columns) == COLUMNS
    assert list(zip(table.variant, table.batch_size)) == [("dense", 1), ("dense", 4), ("sparse", 1), ("sparse", 4)]
    params = sum(p.numel() for p in model.parameters())
    nonzero = sum(int((p != 0).sum()) for p in model.parameters())
    assert (table.params == params).all() and (table.nonzero_params == nonzero).all() and nonzero < params
    assert (table.seq_len == 8).all() and (table.median_s > 0).all()
    assert (table.examples_per_s == table.batch_size / table.median_s).all()
    assert (table.p10_s <= table.median_s).all() and (table.median_s <= table.p90_s).all()
    assert (table.peak_bytes > 0).all()
    dense, sparse = table[table.variant == "dense"].iloc[0], table[table.variant == "sparse"].iloc[0]
    assert sparse.disk_bytes < dense.disk_bytes and sparse.model_bytes < dense.model_bytes
    assert dense.disk_bytes == (tmp_path / "dense.safetensors").stat().st_size

    dense_only = measure_inference(tiny_bert(), _make_batch, batch_sizes=(2,), repeats=1, warmup=0,
                                   variants=("dense", "sparse", "semi-structured"))  # fmt: skip
    assert len(dense_only) == 3 and dense_only.median_s.iloc[0] > 0
    assert dense_only.median_s.iloc[1:].isna().all()
    assert "not applicable" in dense_only.note.iloc[1] and "CUDA" in dense_only.note.iloc[2]
    with pytest.raises(ValueError, match="unknown variants"):
        measure_inference(model, _make_batch, variants=("fast",))


def test_speedup_table():
    rows = pd.DataFrame({
        "variant": ["dense", "dense", "sparse", "sparse"], "batch_size": [1, 32, 1, 32], "seq_len": 8,
        "device": "cpu", "median_s": [0.01, 0.2, 0.02, 0.1], "disk_bytes": [1000, 1000, 250, 250],
        "peak_bytes": [100, 3200, 100, 3200],
    })  # fmt: skip
    self_table = speedup_table(rows, rows)
    dense = self_table[self_table.variant == "dense"]
    assert (dense.speedup == 1.0).all() and (dense.size_ratio == 1.0).all() and (dense.memory_ratio == 1.0).all()
    sparse = self_table[self_table.variant == "sparse"].set_index("batch_size")
    assert sparse.speedup[1] == pytest.approx(0.5) and sparse.speedup[32] == pytest.approx(2.0)  # <1 stays <1
    assert (sparse.size_ratio == 0.25).all()
    other = rows.assign(batch_size=[8, 8, 8, 8]).iloc[:1]
    assert speedup_table(other, rows).speedup.isna().all()  # no reference at that batch size
