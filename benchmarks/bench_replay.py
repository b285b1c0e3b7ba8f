"""Layer replay in one-shot pruning: Wanda's and SparseGPT's calibration time with each layer run on
the pruned outputs of the layer below (kaviz.train.layer_replay) against the baseline, one forward
up to every layer in turn (``calibration_stats``), on random MiniLM-shaped encoders (384 wide,
12 heads) of growing depth.

    python benchmarks/bench_replay.py [--threads 1] [--examples 64] [--length 64]

Baseline: the forward-per-layer path, measured in the same run on the same model and batches; the
figure is the ratio baseline / replay (> 1: replay is faster). Both give the same weights (tested in
tests/test_layer_replay.py). Writes ``benchmarks/results/bench_replay-<device>.txt``. Exits 0.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from kaviz.train import oneshot  # noqa: E402
from kaviz.train.layer_replay import LayerReplay  # noqa: E402

DEPTHS = [6, 12, 24]


class _NoReplay(LayerReplay):
    def faithful(self, *a, **kw) -> bool:
        return False


def timed(prune, model, batches) -> float:
    m = copy.deepcopy(model)
    t0 = time.perf_counter()
    prune(m, batches, 0.5)
    return time.perf_counter() - t0


def main() -> None:
    from transformers import BertConfig, BertForSequenceClassification

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--examples", type=int, default=64, help="calibration sequences")
    ap.add_argument("--length", type=int, default=64, help="tokens per sequence")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (a.examples, a.length), generator=g)
    batches = [{"input_ids": b, "attention_mask": torch.ones_like(b)} for b in ids.split(32)]
    lines = [
        f"bench_replay: {a.examples} calibration sequences x {a.length} tokens, batch 32, "
        f"{a.threads} thread(s), cpu; seconds to prune 50%; ratio = forward-per-layer / replay",
        "| depth | method | forward per layer (s) | replay (s) | ratio |",
        "|---|---|---|---|---|",
    ]
    print(lines[0], flush=True)
    for depth in DEPTHS:
        torch.manual_seed(0)
        cfg = BertConfig(hidden_size=384, num_hidden_layers=depth, num_attention_heads=12, intermediate_size=1536)
        model = BertForSequenceClassification(cfg).eval()
        for name, prune in (("wanda", oneshot.prune_wanda), ("sparsegpt", oneshot.prune_sparsegpt)):
            fast = timed(prune, model, batches)
            saved, oneshot.LayerReplay = oneshot.LayerReplay, _NoReplay
            try:
                slow = timed(prune, model, batches)
            finally:
                oneshot.LayerReplay = saved
            lines.append(f"| {depth} | {name} | {slow:.2f} | {fast:.2f} | {slow / fast:.2f}x |")
            print(lines[-1], flush=True)
    out = ROOT / "benchmarks" / "results" / "bench_replay-cpu.txt"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
