"""All-pairs linear CKA (kaviz.cka_matrix) vs a textbook per-pair loop and the bare matmul floor;
minibatch CKA on many token rows under a memory bound.

    python benchmarks/bench_similarity.py [--n 4096 --layers 13 --width 768] [--quick]

Synthetic activations: model A's layers follow a random residual stream, model B is A with
per-layer perturbations (a stand-in for fine-tuned / pruned). Times are the best of ``--repeats``
runs. Peak memory is the growth of the process's peak RSS during a phase (Linux: the peak is
reset through /proc/self/clear_refs before each phase, and the script re-executes itself with
MALLOC_MMAP_THRESHOLD_=1 MiB so that freed tensors leave RSS at once instead of being reused
unseen; elsewhere the lifetime peak of ``resource.getrusage`` is used, which only shows growth
past earlier peaks); on CUDA it is ``torch.cuda.max_memory_allocated``. The reference computes centred n x n Gram matrices for
every pair (centring by row/column means, not by H K H matmuls, so it is not a strawman).
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from kaviz.measure.cka_matrix import cka_matrix  # noqa: E402
from kaviz.measure.similarity import linear_cka, minibatch_cka

MIB = 2**20


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak memory growth (bytes) of the code run inside the ``with`` block."""

    def __init__(self, device: torch.device):
        self.device, self.peak = device, 0

    @staticmethod
    def _status(key: str) -> int | None:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(key):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
            return self
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
            self.start, self.mode = self._status("VmRSS") or 0, "proc"
        except OSError:
            self.start, self.mode = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "rusage"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.start
        elif self.mode == "proc":
            self.peak = (self._status("VmHWM") or 0) - self.start
        else:
            self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - self.start


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> tuple[float, float, Any]:
    """Best wall time over ``repeats`` runs, the largest peak-memory growth, and the last result."""
    best, peak, out = math.inf, 0, None
    for _ in range(repeats):
        with PeakMemory(device) as mem:
            _sync(device)
            start = time.perf_counter()
            out = fn()
            _sync(device)
            best = min(best, time.perf_counter() - start)
        peak = max(peak, mem.peak)
    return best, peak, out


def synthetic_models(n: int, layers: int, width: int, device: torch.device, seed: int = 0) -> tuple[list, list]:
    """Two lists of ``layers`` float32 activations (n, width): A, and B = A perturbed per layer."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    h = torch.randn(n, width, generator=g)
    reps_a, reps_b = [], []
    for layer in range(layers):
        mix = torch.randn(width, width, generator=g) / math.sqrt(width)
        h = torch.tanh(h + 0.7 * h @ mix) + 0.1 * torch.randn(n, width, generator=g)  # (n, width)
        drift = 0.1 * layer / max(layers - 1, 1)
        b = (
            h
            + drift * h @ torch.randn(width, width, generator=g) / math.sqrt(width)
            + 0.2 * torch.randn(n, width, generator=g)
        )
        reps_a.append(h.to(device))
        reps_b.append(b.to(device))
    return reps_a, reps_b


def reference_pair(x: torch.Tensor, y: torch.Tensor) -> float:
    """Textbook linear CKA: centred n x n Grams of both layers, recomputed for this pair, float64."""
    x, y = x.double(), y.double()
    k, m = x @ x.T, y @ y.T  # (n, n) each
    k = k - k.mean(0, keepdim=True) - k.mean(1, keepdim=True) + k.mean()  # H K H
    m = m - m.mean(0, keepdim=True) - m.mean(1, keepdim=True) + m.mean()  # H L H
    n = x.shape[0]
    hxy, hxx, hyy = (k * m).sum() / (n - 1) ** 2, (k * k).sum() / (n - 1) ** 2, (m * m).sum() / (n - 1) ** 2
    return float(hxy / (hxx * hyy).sqrt())


def bench_all_pairs(args: argparse.Namespace, device: torch.device) -> None:
    n, layers, width = args.n, args.layers, args.width
    reps_a, reps_b = synthetic_models(n, layers, width, device)
    pairs = layers * layers
    print(f"== all-pairs linear CKA: 2 models x {layers} layers, n={n}, width={width}, {pairs} pairs, {device} ==")
    print(f"   threads={torch.get_num_threads()}; inputs float32, {2 * layers * n * width * 4 / MIB:.0f} MiB in all")

    t_kaviz, mem_kaviz, fast = timed(lambda: cka_matrix(reps_a, reps_b), device, args.repeats)
    t32, mem32, fast32 = timed(lambda: cka_matrix(reps_a, reps_b, dtype=torch.float32), device, args.repeats)

    def floor(form: str, dtype: torch.dtype) -> None:
        for r in (*reps_a, *reps_b):
            r = r.to(dtype)
            (r @ r.T) if form == "gram" else (r.T @ r)

    t_gram_floor, _, _ = timed(lambda: floor("gram", torch.float64), device, args.repeats)
    t_feat_floor, _, _ = timed(lambda: floor("feature", torch.float64), device, args.repeats)
    t_gram_floor32, _, _ = timed(lambda: floor("gram", torch.float32), device, args.repeats)

    k = pairs if args.ref_pairs <= 0 else min(args.ref_pairs, pairs)
    subset = [(i, j) for i in range(layers) for j in range(layers)][:: max(1, pairs // k)][:k]
    t_ref_subset, mem_ref, ref = timed(lambda: [reference_pair(reps_a[i], reps_b[j]) for i, j in subset], device, 1)
    t_ref = t_ref_subset * pairs / len(subset)
    err = max(abs(float(fast[i, j]) - v) for (i, j), v in zip(subset, ref))
    err_loop = max(abs(float(fast[i, j]) - linear_cka(reps_a[i], reps_b[j])) for i, j in subset[:3])

    label = (
        "measured" if len(subset) == pairs else f"EXTRAPOLATED from {len(subset)} timed pairs x {pairs}/{len(subset)}"
    )
    print(f"kaviz cka_matrix (float64)          : {t_kaviz:8.2f} s   peak +{mem_kaviz / MIB:7.0f} MiB")
    print(f"kaviz cka_matrix (float32 products) : {t32:8.2f} s   peak +{mem32 / MIB:7.0f} MiB")
    print(
        f"reference per-pair loop (float64)   : {t_ref:8.2f} s   peak +{mem_ref / MIB:7.0f} MiB"
        f"   [{label}; subset took {t_ref_subset:.2f} s]"
    )
    print(f"speed-up kaviz vs reference         : {t_ref / t_kaviz:8.1f} x   (target >= 10x)")
    print(f"matmul floor, {2 * layers} Grams X Xᵀ (n x n), float64 : {t_gram_floor:8.2f} s")
    print(f"matmul floor, {2 * layers} Grams X Xᵀ (n x n), float32 : {t_gram_floor32:8.2f} s")
    print(f"matmul floor, {2 * layers} features XᵀX (d x d), float64: {t_feat_floor:8.2f} s")
    print(f"kaviz / Gram floor (float64)         : {t_kaviz / t_gram_floor:8.2f}   (target <= 2)")
    print(f"kaviz f32 / Gram floor (float32)     : {t32 / t_gram_floor32:8.2f}")
    print(f"kaviz / feature floor (float64)      : {t_kaviz / t_feat_floor:8.2f}")
    print(
        f"max |kaviz - reference| on timed pairs: {err:.2e}; vs linear_cka: {err_loop:.2e}; float32 vs float64: "
        f"{float((fast32 - fast).abs().max()):.2e}"
    )
    print(f"diagonal CKA(A_l, B_l): {', '.join(f'{float(v):.3f}' for v in fast.diagonal())}")


def bench_minibatch(args: argparse.Namespace, device: torch.device) -> None:
    rows, dim, b = args.tokens, args.token_dim, args.batch_size
    print(f"== minibatch CKA: {rows} token rows x {dim} dims, batch_size={b}, {device} ==")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(rows, dim, generator=g)
    y = (0.6 * x @ torch.randn(dim, dim, generator=g) / math.sqrt(dim) + 0.8 * torch.randn(rows, dim, generator=g)).to(
        device
    )
    x = x.to(device)
    bound = 8 * (2 * b * 2 * dim + 2 * b * b) + 4 * MIB  # float64 batch copies + Gram row blocks (+ small vectors)
    t, peak, value = timed(lambda: minibatch_cka(x, y, batch_size=b, seed=0), device, 1)
    t_full, peak_full, full = timed(lambda: linear_cka(x, y), device, 1)
    print(
        f"inputs: 2 x {rows * dim * 4 / MIB:.0f} MiB float32; a full n x n float64 Gram would be {rows * rows * 8 / 2**30:.0f} GiB"
    )
    print(
        f"minibatch_cka : {value:.4f} in {t:6.2f} s, peak +{peak / MIB:6.1f} MiB  (stated bound {bound / MIB:.0f} MiB: "
        f"{'within' if peak <= bound else 'EXCEEDED'})"
    )
    print(
        f"linear_cka (feature form, biased HSIC, full batch): {full:.4f} in {t_full:6.2f} s, peak +{peak_full / MIB:6.1f} MiB"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=4096, help="examples per layer")
    p.add_argument("--layers", type=int, default=13, help="layers per model (embeddings + 12)")
    p.add_argument("--width", type=int, default=768, help="hidden width")
    p.add_argument("--ref-pairs", type=int, default=13, help="pairs of the reference loop to time (<= 0: all)")
    p.add_argument("--tokens", type=int, default=100_000, help="rows for the minibatch benchmark")
    p.add_argument("--token-dim", type=int, default=384, help="width for the minibatch benchmark")
    p.add_argument("--batch-size", type=int, default=1024, help="minibatch size")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per measurement (best is kept)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--quick", action="store_true", help="small sizes, every reference pair timed")
    args = p.parse_args(argv)
    if argv is None and sys.platform.startswith("linux") and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(MIB)  # allocations >= 1 MiB are unmapped when freed
        os.execv(sys.executable, [sys.executable, *sys.argv])
    if args.quick:
        args.n, args.layers, args.width, args.ref_pairs = 512, 4, 64, 0
        args.tokens, args.token_dim, args.batch_size = 5000, 32, 256
    device = torch.device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, python {sys.version.split()[0]}")
    bench_all_pairs(args, device)
    bench_minibatch(args, device)


if __name__ == "__main__":
    main()
