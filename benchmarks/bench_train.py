"""Time per training step of fine-tuning, gradual magnitude pruning and knowledge-aware pruning.

    python benchmarks/bench_train.py [--model packaged] [--batch 32] [--seq 64] [--steps 20]
                                     [--device auto] [--precision auto] [--profile]

Every step is the real one: ``kaviz.train.loop.train_loop`` with the same loss functions, optimizer and
mask schedule the methods use (``kaviz.stages.recipe``), on fixed-length batches of random token ids
(no data needed). Baselines measured in the same run:

- fine-tune step: forward + backward + AdamW on cross-entropy;
- teacher forward: the teacher's ``no_grad`` forward with every layer's hidden states and
  attention scores, as the distillation loss asks for it.

The knowledge-aware step does both plus the layer-wise losses and the mask work, so its floor is
(fine-tune step + teacher forward); the printed ratio is knowledge-aware / that floor (target
≤ 1.3). ``--profile`` prints where a knowledge-aware step's time goes (torch.profiler). Always
exits 0: a benchmark, not a test.
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
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

from kaviz.core.config import PACKAGED_MODEL, TINY_MODEL, DistillConfig, ModelConfig  # noqa: E402
from kaviz.train.distill import distill_objective  # noqa: E402
from kaviz.train.loop import autocast, ce_loss, resolve_precision, train_loop  # noqa: E402
from kaviz.train.models import load_pretrained, pick_device  # noqa: E402
from kaviz.train.pruning import CubicPruner, MaskSet  # noqa: E402


def batches(n: int, batch: int, seq: int, vocab: int, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "input_ids": torch.randint(1000 if vocab > 2000 else 5, vocab, (batch, seq), generator=g),
            "attention_mask": torch.ones(batch, seq, dtype=torch.long),
            "labels": torch.randint(0, 2, (batch,), generator=g),
        }
        for _ in range(n)
    ]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_train(model, data, device, make_loss, *, steps, warmup, precision, pruner_for=None, extra=None) -> float:
    """Seconds per step of ``train_loop`` (after ``warmup`` untimed steps on a copy); ``make_loss(model)``
    gives the loss function, ``pruner_for(model)`` the mask schedule, ``extra(model)`` trained loss modules."""
    for m, n in ((copy.deepcopy(model), warmup), (model, steps)):
        pruner = pruner_for(m) if pruner_for else None
        sync(device)
        t0 = time.perf_counter()
        res = train_loop(
            m,
            data,
            steps=n,
            lr=1e-4,
            loss_fn=make_loss(m),
            device=device,
            on_step=pruner.step if pruner else None,
            extra_modules=extra(m) if extra else (),
            progress=False,
            precision=precision,
        )
        sync(device)
        elapsed = time.perf_counter() - t0
    del res
    return elapsed / steps


@torch.no_grad()
def time_teacher(teacher, data, device, *, steps, warmup, precision) -> float:
    teacher.to(device).eval()
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            t0 = time.perf_counter()
        b = {k: v.to(device, non_blocking=True) for k, v in data[i % len(data)].items() if k != "labels"}
        with autocast(precision, device):
            teacher(**b, output_hidden_states=True, output_attentions=True)
    sync(device)
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="packaged", help="'packaged' (all-MiniLM-L6-v2), 'tiny', or a path/hub id")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--mask-every", type=int, default=3, help="a mask update every N steps (100 updates / 300 steps)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--profile", action="store_true", help="print the top ops of a knowledge-aware step")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = pick_device(a.device)
    precision = resolve_precision(a.precision, device)
    name = {"packaged": PACKAGED_MODEL, "tiny": TINY_MODEL}.get(a.model, a.model)
    torch.manual_seed(0)
    pretrained = load_pretrained(ModelConfig(name_or_path=name), num_labels=2)
    teacher = copy.deepcopy(pretrained).to(device).eval()
    data = batches(8, a.batch, a.seq, pretrained.config.vocab_size)
    total = a.steps * a.mask_every * 10  # the schedule's length: masks keep changing while timed

    def pruner_for(m):
        return CubicPruner(MaskSet(m), 0.9, total, total // a.mask_every, 1.0)

    crits: dict[int, torch.nn.Module] = {}

    def ka_loss(m):
        crit, fn = distill_objective(m, teacher, DistillConfig(), device)
        crits[id(m)] = crit
        return fn

    def ka_extra(m):
        return [crits[id(m)]]

    kw = {"steps": a.steps, "warmup": a.warmup, "precision": precision}
    print(
        f"model {name}  batch {a.batch} x {a.seq} tokens  device {device}  precision {precision}  "
        f"threads {torch.get_num_threads()}  timed steps {a.steps} (+{a.warmup} warm-up)",
        flush=True,
    )

    def plain(_m):
        return ce_loss

    ft = time_train(copy.deepcopy(pretrained), data, device, plain, **kw)
    tf = time_teacher(teacher, data, device, **kw)
    gm = time_train(copy.deepcopy(pretrained), data, device, plain, pruner_for=pruner_for, **kw)
    ka = time_train(copy.deepcopy(pretrained), data, device, ka_loss, pruner_for=pruner_for, extra=ka_extra, **kw)
    floor = ft + tf
    rows = [
        ("fine-tune step (baseline)", ft),
        ("teacher forward, all layers' outputs", tf),
        ("gradual-magnitude step", gm),
        ("knowledge-aware step", ka),
    ]
    print(f"\n{'measurement':40s} {'ms/step':>9s} {'x fine-tune':>12s}")
    for label, t in rows:
        print(f"{label:40s} {1000 * t:9.1f} {t / ft:12.2f}")
    print(f"\ngradual-magnitude / fine-tune step:                 {gm / ft:.2f}")
    print(f"knowledge-aware / (fine-tune step + teacher forward): {ka / floor:.2f}  (target <= 1.3)")
    if a.profile:
        from torch.profiler import ProfilerActivity, profile

        m = copy.deepcopy(pretrained)
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=acts) as prof:
            time_train(m, data, device, ka_loss, pruner_for=pruner_for, extra=ka_extra, steps=5, warmup=1,
                       precision=precision)  # fmt: skip
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=20))


if __name__ == "__main__":
    main()
