"""Whole units across processes: the grid of a run shared by the processes of one launch.

``torchrun --nproc_per_node N -m kaviz.cli run CONFIG --unit-parallel`` starts N processes. Rank 0
creates (or resumes) the run and trains the stage units (pre-trained, fine-tuned teacher) once;
every process then loads the stored teacher and takes whole student units one at a time with
:meth:`kaviz.store.Run.claim_unit` (atomic under the run's lock, so no unit runs twice and a fast
process takes more units) until none is left. Each process writes its own units to the one store
(concurrent writers are safe: atomic files, a locked manifest). Data-parallel training
(:mod:`kaviz.train.parallel`) splits every batch instead; this splits the grid, which is what fills
several CPU cores or a GPU with many small units.

The processes meet at three points over ``torch.distributed`` (gloo): after the run is created,
after the teacher is stored, and when the grid is done. Every unit is seeded on its own, so a unit
computes what a one-process run computes (up to float differences between thread counts).
"""

from __future__ import annotations

import datetime
import os

import torch.distributed as dist
from tqdm.auto import tqdm

from kaviz.stages.context import Context
from kaviz.stages.pipeline import Pipeline
from kaviz.store import Run
from kaviz.train.parallel import world_size

STAGES = ("pretrained", "finetuned")
WAIT = datetime.timedelta(days=7)  # the barrier after the teacher waits as long as it trains


def launch() -> tuple[int, int]:
    """(rank, world size) of this process from torchrun's environment; (0, 1) outside a launch."""
    try:
        rank = int(os.environ.get("RANK", "0"))
    except ValueError:
        rank = 0
    return rank, world_size()


class UnitParallelPipeline(Pipeline):
    """:class:`Pipeline` whose student units are shared out between the processes of a launch."""

    def run(self) -> Run:
        rank, world = launch()
        if world == 1:
            return super().run()
        self.rank = rank
        own_group = not dist.is_initialized()
        if own_group:
            dist.init_process_group("gloo", timeout=WAIT)
        try:
            return self._run(rank, world)
        finally:
            if own_group and dist.is_initialized():
                dist.destroy_process_group()

    def _run(self, rank: int, world: int) -> Run:
        task = self._preflight()
        worker = f"rank {rank} of {world}"
        if rank == 0:
            run = self._create_run()
            run.set_status("running")
            self._log(run, f"run {run.run_id}: {len(self.units)} units, resume={self.resume}, unit-parallel x {world}")
        dist.barrier()
        if rank != 0:
            run = self.store.open_run(self.cfg.name)
            self.progress = False
        try:
            ctx = None
            if rank == 0:
                stages = [u for u in self.units if u["stage"] in STAGES and run.unit_status(u["unit"]) != "done"]
                if stages:
                    ctx = Context(self.cfg, run, self.progress, None, task)
                    for u in stages:
                        self._run_unit(ctx, run, u)
            dist.barrier()  # the teacher is stored
            students = [u for u in self.units if u["stage"] not in STAGES]
            by_id = {u["unit"]: u for u in students}
            todo = [u["unit"] for u in students if run.unit_status(u["unit"]) != "done"]
            bar = tqdm(total=len(todo), desc=f"units ({worker})", unit="unit", disable=not self.progress)
            while True:
                uid = run.claim_unit(todo, worker)
                if uid is None:
                    break
                if ctx is None:
                    ctx = Context(self.cfg, run, self.progress, None, task)
                self._log(run, f"{worker} takes {uid}")
                self._run_unit(ctx, run, by_id[uid], claimed=True)
                bar.update(1)
            bar.close()
        except KeyboardInterrupt:
            run.set_status("interrupted")
            raise
        except Exception:
            run.set_status("failed")
            raise
        dist.barrier()  # every process has finished its last unit
        if rank == 0:
            left = [u["unit"] for u in self.units if run.unit_status(u["unit"]) != "done"]
            run.set_status("failed" if left else "complete")
            self._log(run, f"not done: {', '.join(left)}" if left else "complete")
        return run
