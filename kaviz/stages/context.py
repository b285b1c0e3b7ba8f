"""What every unit of a run gets, built once per process: the config, the task's encoded data, the
tokenizer, the pre-trained model and the fine-tuned teacher (as fresh copies), the device, and dev
evaluation. Methods (:mod:`kaviz.stages.methods`) take it as ``ctx``."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from kaviz.core.config import RunConfig
from kaviz.core.errors import ConfigError
from kaviz.data.tasks import compute_metrics, encode, load_task, make_collator
from kaviz.store import Run, unit_id
from kaviz.train.loop import make_loader, predict
from kaviz.train.models import (
    encoder_params,
    load_model,
    load_pretrained,
    load_tokenizer,
    pick_device,
)


class Context:
    """What every unit needs, built once per process: data, tokenizer, models, device."""

    def __init__(self, cfg: RunConfig, run: Run, progress: bool = True, accelerator=None, task=None):
        self.cfg, self.run, self.progress, self.accelerator = cfg, run, progress, accelerator
        if cfg.training.num_threads:
            torch.set_num_threads(cfg.training.num_threads)
        self.device = accelerator.device if accelerator is not None else pick_device(cfg.training.device)
        self.tokenizer = load_tokenizer(cfg.model)
        if run.tokenizer_dir() is None:
            run.save_tokenizer(self.tokenizer)
        self.task = task if task is not None else load_task(cfg.task, seed=cfg.seed)
        self.spec = self.task.spec
        self.encoded = encode(self.task, self.tokenizer, cfg.task.max_length)
        self.collator = make_collator(self.tokenizer)
        self.n_train = len(self.encoded["train"])
        self.train_lengths = (
            [len(x) for x in self.encoded["train"]["input_ids"]] if cfg.training.group_by_length else None
        )
        self._pretrained: nn.Module | None = None
        self._teacher: nn.Module | None = None
        self._teacher_params: int | None = None

    # models: cached originals, callers get copies they may change
    def pretrained(self) -> nn.Module:
        if self._pretrained is None:
            self._pretrained = load_pretrained(
                self.cfg.model, self.spec.num_labels, self.spec.is_regression, self.cfg.seed
            )
        return copy.deepcopy(self._pretrained)

    def set_teacher(self, model: nn.Module) -> None:
        self._teacher = model.eval()

    def teacher(self) -> nn.Module:
        if self._teacher is None:
            ckpt = self.run.checkpoint_dir(unit_id("finetuned"))
            source = str(ckpt) if ckpt is not None else self.cfg.model.finetuned
            if source is None:
                raise RuntimeError(
                    "the fine-tuned teacher is needed but neither its checkpoint nor model.finetuned exists"
                )
            self._teacher = self._load(source).eval()
        return self._teacher

    def teacher_copy(self) -> nn.Module:
        return copy.deepcopy(self.teacher())

    def teacher_encoder_params(self) -> int:
        if self._teacher_params is None:
            self._teacher_params = encoder_params(self.teacher())
        return self._teacher_params

    def _load(self, source: str) -> nn.Module:
        return load_model(source, self.cfg.model, self.spec.num_labels, self.spec.is_regression, self.cfg.seed)

    def train_loader(self, seed: int):
        return make_loader(
            self.encoded["train"],
            self.collator,
            self.cfg.training.batch_size,
            shuffle=True,
            seed=seed,
            device=self.device,
            lengths=self.train_lengths,
        )

    def calibration(self, seed: int, n: int | None = None, batch_size: int = 32) -> tuple[list[dict], list[int]]:
        """The one-shot methods' calibration set: ``n`` (default ``pruning.calibration_examples``)
        training examples drawn without replacement with ``seed``, as padded batches on the run's
        device (labels kept, for importance scores), and their indices in the training split (a
        unit records them). Raises ConfigError when the training set is smaller than ``n``."""
        n = self.cfg.pruning.calibration_examples if n is None else n
        if n > self.n_train:
            raise ConfigError(
                problems=[("pruning.calibration_examples", f"{n} asked, but the training set has {self.n_train}")]
            )
        g = torch.Generator().manual_seed(seed)
        idx = sorted(torch.randperm(self.n_train, generator=g)[:n].tolist())
        loader = make_loader(self.encoded["train"].select(idx), self.collator, batch_size, shuffle=False)
        batches = [{k: v.to(self.device) for k, v in b.items()} for b in loader]
        return batches, idx

    def predict_dev(self, model: nn.Module) -> tuple[np.ndarray, np.ndarray]:
        """Logits ``(n_dev, num_labels)`` and labels ``(n_dev,)`` on the dev split, in order."""
        loader = make_loader(
            self.encoded["dev"], self.collator, self.cfg.training.eval_batch_size, shuffle=False, device=self.device
        )
        return predict(model, loader, self.device)

    def scores(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        scores = compute_metrics(self.spec, logits, labels)
        return {**scores, "score": scores[self.spec.main_metric]}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return self.scores(*self.predict_dev(model))
