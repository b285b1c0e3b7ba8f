"""Runs the stages of a config and writes each finished unit to a run store.

pretrained -> finetuned teacher -> pruned students (method x sparsity x seed), or, for
``kaviz import``, students pruned by other tools. Every unit is seeded on its own, so a resumed
run computes exactly what an uninterrupted one would; finished units are never redone.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from kaviz.core.config import GRID_KEYS, TINY_MODEL, RunConfig, is_tiny
from kaviz.core.errors import ConfigError
from kaviz.core.registry import CALIBRATION_METHODS
from kaviz.data.lm_probe_data import read_completion_file, read_corpus
from kaviz.data.sts import check_sts_path
from kaviz.data.tasks import load_task
from kaviz.stages.context import Context
from kaviz.stages.grid import grid_extension, parse_imports, plan_units  # noqa: F401  (re-exported)
from kaviz.stages.methods import METHODS, Outcome, finetune
from kaviz.stages.recent import structured_limit
from kaviz.store import Run, RunStore, StoreError
from kaviz.store import manifest as mf
from kaviz.train import parallel
from kaviz.train.families import tiny_family, tiny_family_config
from kaviz.train.loop import resolve_precision
from kaviz.train.models import resolve_source, tiny_bert_config
from kaviz.train.pruning import sparsity_summary, sparsity_table

#: A teacher within this of the best constant answer (score units) has learnt nothing.
TEACHER_MARGIN = 0.01


def check_inputs(cfg: RunConfig, units: list[dict] | None = None, *, load_data: bool = True):
    """Fail before anything is written on what can be checked cheaply: local model paths, the STS
    file, structured targets against the model's shape, and the task's data (read and validated,
    then returned for reuse; skipped with ``load_data=False``, e.g. a hub dataset the app would
    otherwise download before launching).  The one check ``kaviz run`` and the app's New-run form run.

    Raises ModelNotFoundError, TaskError or ConfigError naming the field and the path."""
    units = plan_units(cfg) if units is None else units
    m = cfg.model
    for source in (m.name_or_path, m.finetuned, *[path for _, path, _ in parse_imports(cfg.import_students)]):
        if is_tiny(source):
            tiny_family(source)  # an unknown tiny:<family> is named here
        elif source:
            resolve_source(source)  # a missing local folder or one without config.json raises here
    an = cfg.analysis
    if an.enabled and an.general_probe in ("auto", "sts"):
        check_sts_path(an.sts_path)
    if an.enabled and an.completion_file:
        read_completion_file(an.completion_file)  # refused with the line number before anything trains
    if an.enabled and an.lm_corpus:
        read_corpus(an.lm_corpus)
    _check_structured(cfg, units)
    if not load_data:
        return None
    task = load_task(cfg.task, seed=cfg.seed)
    calibrated = sorted({u["method"] for u in units if u["method"] in CALIBRATION_METHODS})
    n, n_train = cfg.pruning.calibration_examples, len(task.train)
    if calibrated and n > n_train:
        msg = f"{', '.join(calibrated)} would calibrate on {n} examples, but the training set has {n_train}"
        raise ConfigError(problems=[("pruning.calibration_examples", msg)])
    return task


def _check_structured(cfg: RunConfig, units: list[dict]) -> None:
    """Structured units must leave every layer a head and a neuron: their targets are checked
    against the model's shape (its config only) before anything trains."""
    asked = sorted({u["sparsity"] for u in units if u["method"] == "structured"})
    if not asked:
        return
    m = cfg.model
    if m.name_or_path == TINY_MODEL:
        config = tiny_bert_config(2, 2)
    elif is_tiny(m.name_or_path):
        config = tiny_family_config(tiny_family(m.name_or_path), 2, 2)
    else:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(resolve_source(m.name_or_path), revision=m.revision)
    limit = structured_limit(config)
    over = [s for s in asked if s > limit]
    if over:
        msg = (f"structured pruning can remove at most {limit:.1%} of this model's encoder weights (every layer "
               f"keeps one head and one FFN neuron); {over} asked")  # fmt: skip
        raise ConfigError(problems=[("sparsities", msg)])


class Pipeline:
    """``Pipeline(cfg, store).run()`` executes every unit not yet done and returns the run."""

    def __init__(
        self,
        cfg: RunConfig,
        store: RunStore,
        *,
        resume: bool = False,
        progress: bool = True,
        echo: Callable[[str], None] | None = None,
        extend: bool = False,
    ):
        """``extend``: resume a stored run whose grid (``GRID_KEYS``) this config enlarges, adding
        the new units; every other field must equal the stored one."""
        self.cfg, self.store, self.progress = cfg.validate(), store, progress
        self.resume, self.extend = resume or extend, extend
        self.echo = echo or (lambda msg: None)
        self.units = plan_units(cfg)
        self.rank = 0

    def run(self) -> Run:
        acc = parallel.make_accelerator(self.cfg.training.device, self.cfg.training.batch_size)
        self.rank = 0 if acc is None else acc.process_index
        task = self._preflight()
        if self.rank == 0:
            run = self._create_run()
        if acc is not None:  # the others follow once the main process has created (or reset) the run
            acc.wait_for_everyone()
            if self.rank != 0:
                run = parallel.FollowerRun(self.store.open_run(self.cfg.name))
                self.progress = False
        run.set_status("running")
        where = "" if acc is None else f", {acc.num_processes} processes ({acc.distributed_type})"
        self._log(run, f"run {run.run_id}: {len(self.units)} units, resume={self.resume}{where}")
        todo = [u for u in self.units if run.unit_status(u["unit"]) != "done"]
        if acc is not None:
            acc.wait_for_everyone()
        if not todo:
            run.set_status("complete")
            return run
        try:
            ctx = Context(self.cfg, run, self.progress, acc, task)
            bar = tqdm(
                total=len(self.units),
                initial=len(self.units) - len(todo),
                desc="units",
                unit="unit",
                disable=not self.progress,
                dynamic_ncols=True,
            )
            try:
                for u in todo:
                    bar.set_description(u["unit"])
                    self._run_unit(ctx, run, u)
                    bar.update(1)
            finally:
                bar.close()  # an error message then starts on its own line
        except KeyboardInterrupt:
            run.set_status("interrupted")
            self._log(run, "interrupted; continue with --resume")
            raise
        except Exception:
            run.set_status("failed")
            raise
        run.set_status("complete")
        self._log(run, "complete")
        return run

    def _preflight(self):
        return check_inputs(self.cfg, self.units)

    def _create_run(self) -> Run:
        if self.extend and self.store.has_run(self.cfg.name):  # what it cannot extend, said in config terms
            grid_extension(self.store.open_run(self.cfg.name).config, self.cfg)
        extend = GRID_KEYS if self.extend else ()
        return self.store.create_run(self._stored_config(), units=self.units, resume=self.resume, extend=extend)

    def _stored_config(self) -> dict:
        """The config to create or resume with: a run made by an older kaviz, whose stored config
        lacks fields added since, is resumed when those fields hold their defaults here (and
        extended with this config's grid)."""
        mine = self.cfg.to_dict()
        if not self.resume:
            return mine
        try:
            stored = self.store.open_run(self.cfg.name).config
            grid, fixed = mf.split_diff(RunConfig.from_dict(stored).to_dict(), mine, GRID_KEYS)
        except (StoreError, ConfigError):  # no such run yet, or a config this kaviz cannot read: the store reports it
            return mine
        if fixed or (grid and not self.extend):
            return mine
        return {**stored, **{k: mine[k] for k in GRID_KEYS}} if grid else stored

    def _log(self, run: Run, msg: str) -> None:
        run.log(msg)
        self.echo(msg)

    def _run_unit(self, ctx: Context, run: Run, u: dict, claimed: bool = False) -> None:
        """Train (or load), evaluate and store one unit; ``claimed``: already marked running by
        :meth:`Run.claim_unit` (unit-parallel launches)."""
        name = u["unit"]
        if not claimed:
            run.start_unit(name)
        self._log(run, f"start {name}")
        t0 = time.perf_counter()
        try:
            out = self._execute(ctx, u)
            logits, labels = ctx.predict_dev(out.model)
            metrics = ctx.scores(logits, labels)
            ref = ctx.teacher_encoder_params() if u["stage"] == "pruned" else None
            metrics.update(sparsity_summary(out.model, ref))
            tables = {"sparsity": sparsity_table(out.model), "predictions": prediction_table(ctx.spec, logits, labels)}
            if out.result is not None:
                seen = out.result.steps * self.cfg.training.batch_size
                metrics.update(
                    {
                        "train_steps": float(out.result.steps),
                        "examples_seen": float(seen),
                        "budget_epochs": seen / max(1, ctx.n_train),
                        "train_seconds": out.result.seconds,
                        "final_loss": out.result.final_loss,
                    }
                )
                tables["history"] = pd.DataFrame(out.result.history)
                if out.result.epochs:
                    tables["epochs"] = pd.DataFrame(out.result.epochs)
            keep = self.cfg.save_checkpoints or u["stage"] == "finetuned"
            if keep and not out.info.get("source"):
                run.save_checkpoint(name, out.model, write=lambda tmp: parallel.save_pretrained(out.model, tmp))
            rows = [{"metric": k, "value": float(v)} for k, v in metrics.items()]
            if out.result is not None:  # where it was trained, for provenance
                procs = 1 if ctx.accelerator is None else ctx.accelerator.num_processes
                out.info.setdefault("device", parallel.device_label(ctx.device, procs))
                out.info.setdefault("precision", resolve_precision(self.cfg.training.precision, ctx.device))
            run.finish_unit(name, rows, info=out.info, tables=tables)
            if ctx.accelerator is not None:
                parallel.record(run.path, self.rank, name, metrics, out.model)
                ctx.accelerator.wait_for_everyone()
        except Exception as e:
            run.fail_unit(name, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=5)}")
            self._log(run, f"FAILED {name}: {type(e).__name__}: {e}")
            raise
        except KeyboardInterrupt:  # not left "running" by a process that may live on (a notebook)
            run.fail_unit(name, "interrupted")
            raise
        main = ctx.spec.main_metric
        self._log(
            run,
            f"done {name} in {time.perf_counter() - t0:.1f}s: {main}={metrics[main]:.4f}, "
            f"encoder sparsity={metrics['encoder_sparsity']:.4f}",
        )
        if u["stage"] == "finetuned" and not ctx.spec.is_regression:
            self._check_teacher(ctx, run, metrics["score"], labels)

    def _check_teacher(self, ctx: Context, run: Run, score: float, labels: np.ndarray) -> None:
        """Say loudly when the teacher does not beat the best constant answer on dev (within one
        point): every student comparison would then measure nothing."""
        n = ctx.spec.num_labels
        best, cls = -np.inf, None
        for c in range(n):
            logits = np.full((len(labels), n), -1.0)
            logits[:, c] = 1.0
            value = ctx.scores(logits, labels)["score"]
            if value > best:
                best, cls = value, c
        if score <= best + TEACHER_MARGIN:
            self._log(
                run,
                f"WARNING: the fine-tuned teacher scores {score:.4f}, no better than always answering class {cls} "
                f"({best:.4f}): it has learnt nothing yet, so the students cannot be compared with it. "
                "Train it longer or with a higher learning rate (training.epochs, training.learning_rate).",
            )

    def _execute(self, ctx: Context, u: dict) -> Outcome:
        stage, method, sparsity, seed = u["stage"], u["method"], u["sparsity"], u["seed"]
        m = self.cfg.model
        if stage == "pretrained":
            info = {} if is_tiny(m.name_or_path) else {"source": m.name_or_path}
            return Outcome(ctx.pretrained(), None, info)
        if stage == "finetuned":
            if m.finetuned:
                ctx.set_teacher(ctx._load(m.finetuned))
                return Outcome(ctx.teacher(), None, {"source": m.finetuned})
            out = finetune(ctx, seed)
            ctx.set_teacher(out.model)
            return out
        imports = {label: path for label, path, _ in parse_imports(self.cfg.import_students)}
        if method in imports:
            return Outcome(ctx._load(imports[method]), None, {"source": imports[method]})
        budget = u.get("budget")
        if budget is None or budget == self.cfg.main_budget:  # methods written for (ctx, sparsity, seed) keep working
            return METHODS[method](ctx, sparsity, seed)
        return METHODS[method](ctx, sparsity, seed, budget=budget)


def prediction_table(spec, logits: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """One row per dev example, in order: example, label, prediction (class id, or the score for
    regression). What bootstrap intervals over dev examples resample (``kaviz.analysis.evidence``)."""
    logits = np.asarray(logits)
    if spec.is_regression:
        pred = logits.reshape(len(logits), -1)[:, 0].astype("float64")
    else:
        pred = logits.argmax(axis=-1).astype("float64")
    y = np.asarray(labels).reshape(len(labels), -1)[:, 0].astype("float64")
    return pd.DataFrame({"example": np.arange(len(y), dtype="int64"), "label": y, "prediction": pred})


def summary_table(run: Run) -> pd.DataFrame:
    """One row per unit in run order: stage, method, target sparsity, seed, score, measured sparsity, non-zeros."""
    df = run.metrics()
    if df.empty:
        return pd.DataFrame()
    wide = df.pivot_table(index="unit", columns="metric", values="value", aggfunc="first")
    keys = run.units().set_index("unit")[["stage", "method", "sparsity", "seed"]]
    wide = keys.join(wide, how="inner").reset_index(drop=True)
    cols = [
        "stage",
        "method",
        "sparsity",
        "seed",
        "score",
        "encoder_sparsity",
        "nonzero_encoder_params",
        "train_seconds",
    ]
    return wide[[c for c in cols if c in wide.columns]]
