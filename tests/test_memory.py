"""kaviz.measure.memory against what captures hold (exact byte counts) and against peak resident memory
measured while analysing tiny BERTs in memory and streamed (a child process, glibc told to return
freed blocks so its peak follows live tensors)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kaviz.measure.capture import ProbeInputs, capture
from kaviz.measure.memory import analysis_peak_bytes, capture_bytes, forward_bytes, metric_bytes

L, D, H = 4, 32, 4
BLOCK = 1 << 18  # attention metric blocks of 4 rows at T=128: the captures, not the metrics, dominate
TOLERANCE = 0.25  # the model predicts measured peaks within 25%


def _probe(n: int, t: int, seed: int = 0) -> ProbeInputs:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (n, t), generator=g)
    mask = torch.ones(n, t, dtype=torch.long)
    mask[1::2, t // 2 :] = 0  # every other row half padding; row 0 spans T
    return ProbeInputs(ids * mask, mask, None, torch.zeros(n, dtype=torch.long), ["x"] * n, list(range(n)))


def _nbytes(c) -> int:
    tensors = [*c.cls, *c.mean, *(c.tokens or []), *(c.attentions or []), *(c.scores or []), c.mask, c.logits]
    return sum(t.numel() * t.element_size() for t in tensors)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_capture_bytes_counts_what_a_capture_holds(tiny_bert, one_thread, tmp_path, dtype):
    from kaviz.measure.capture import CaptureSink

    model = tiny_bert(layers=L, hidden=D, heads=H, num_labels=3, seed=0)
    probe = _probe(6, 9)
    probe.attention_mask[:] = 1  # every position real: token states fill n x T rows
    c = capture(model, probe, batch_size=4, dtype=dtype, tokens=True)
    kw = {"dtype": dtype, "classes": 3}
    assert _nbytes(c) == capture_bytes(L, D, H, 6, 9, token_states=True, **kw)
    s = capture(model, probe, batch_size=4, dtype=dtype, sink=CaptureSink(tmp_path / "s", dtype=dtype))
    assert s.attentions is None and _nbytes(s) == capture_bytes(L, D, H, 6, 9, streamed=True, **kw)
    assert capture_bytes(L, D, H, 6, 9, dtype=2) == capture_bytes(L, D, H, 6, 9, dtype=torch.float16)


def test_the_readme_example_and_bad_arguments():
    """The README's worked example: 12 layers x 768 wide x 12 heads, 512 probes x 128 tokens, float32."""
    maps = 12 * 512 * 12 * 128 * 128 * 4
    assert capture_bytes(12, 768, 12, 512, 128) == maps + 2 * 13 * 512 * 768 * 4 + 512 * 2 * 4 + 8 * 512 * 128
    mem = analysis_peak_bytes(12, 768, 12, 512, 128)
    streamed = analysis_peak_bytes(12, 768, 12, 512, 128, streamed=True)
    assert round(mem / 2**30, 1) == 14.1 and round(streamed / 2**30, 2) == 1.07
    assert metric_bytes(12, 512, 128) == 6 * 8 * 21 * 12 * 128 * 128  # 21 rows of 2^22 // (12 * 128^2)
    assert forward_bytes(12, 768, 12, 32, 128) == 4 * (15 * 32 * 12 * 128 * 128 + 13 * 32 * 128 * 768)
    with pytest.raises(ValueError, match="layers must be a positive integer, got 0"):
        capture_bytes(0, 768, 12, 512, 128)
    with pytest.raises(ValueError, match="floating"):
        capture_bytes(12, 768, 12, 512, 128, dtype=torch.int8)
    with pytest.raises(ValueError, match="references"):
        analysis_peak_bytes(12, 768, 12, 512, 128, references=-1)


def _measure(sizes: list[list[int]], folder: str) -> None:
    """Child process: peak RSS above the start of each analysis (three captures, the unit against two
    references, then its own entropy), in memory and streamed; prints JSON."""
    import kaviz.measure.attention as attention
    from kaviz.analysis.analyzer import layer_pairs
    from kaviz.analysis.captures import capture_unit, pair_attention_rows, self_attention_rows
    from tests.helpers import tiny_bert

    torch.set_num_threads(1)
    attention.BLOCK_ELEMENTS = BLOCK
    models = [tiny_bert(layers=L, hidden=D, heads=H, seed=s, max_position_embeddings=256) for s in range(3)]
    for m in models:  # first-call allocations (thread pools, kernels) before any measurement
        capture_unit(m, _probe(4, 16), batch_size=32, device="cpu", dtype=torch.float32)

    def rss(field: str) -> int:
        return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024

    out = []
    for n, t in sizes:
        probe = _probe(n, t)
        for streamed in (False, True):
            Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
            start = rss("VmRSS")
            caps = [
                capture_unit(
                    m,
                    probe,
                    batch_size=32,
                    device="cpu",
                    dtype=torch.float32,
                    folder=Path(folder) / f"{n}-{t}-{k}" if streamed else None,
                )  # fmt: skip
                for k, m in enumerate(models)
            ]
            for ref in caps[1:]:
                pair_attention_rows(caps[0], ref, layer_pairs(L, L), probe.attention_mask, set())
            self_attention_rows(caps[0], probe.attention_mask, set())
            out.append({"n": n, "t": t, "streamed": streamed, "peak": rss("VmHWM") - start})
            del caps
    print(json.dumps(out))


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.access("/proc/self/clear_refs", os.W_OK),
    reason="peak RSS is reset through /proc/self/clear_refs (Linux)",
)
def test_analysis_peak_matches_measured_peaks_and_streaming_is_lower(tmp_path):
    sizes = [[48, 96], [64, 128]]
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    code = f"from tests.test_memory import _measure; _measure({sizes!r}, {str(tmp_path)!r})"
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    peaks = {(r["n"], r["t"], r["streamed"]): r["peak"] for r in json.loads(done.stdout.strip().splitlines()[-1])}
    report = []
    for (n, t, streamed), peak in peaks.items():
        want = analysis_peak_bytes(L, D, H, n, t, streamed=streamed, batch_size=32, block_elements=BLOCK)
        report.append(f"n={n} T={t} streamed={streamed}: measured {peak / 2**20:.1f} MiB, model {want / 2**20:.1f} MiB")
        assert abs(peak - want) <= TOLERANCE * want, "\n".join(report)
    for n, t in sizes:
        assert peaks[n, t, True] < peaks[n, t, False], "\n".join(report)
    print("\n".join(report))
