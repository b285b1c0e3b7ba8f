"""The general-knowledge probe of a run's units: which one applies, and its knowledge-table rows.

- encoders: the pre-trained masked-LM head on each unit's encoder (``general_mlm_loss``, Gordon et
  al. 2020) when the pre-trained model has one, else STS-B-style Spearman of sentence embeddings
  (``general_sts_spearman``);
- decoders (structure rows with ``causal=True``): the pre-trained causal-LM head on each unit's
  body: ``general_lm_loss`` on ``analysis.lm_corpus`` or the probe texts and, with
  ``analysis.completion_file``, ``general_completion_exact`` / ``general_completion_logprob``.

``analysis.general_probe`` picks: ``auto`` (the above), ``mlm``, ``lm``, ``sts`` or ``none``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from kaviz.core import schema
from kaviz.core.config import AnalysisConfig, ModelConfig, is_tiny
from kaviz.core.structure import structure_of
from kaviz.data.base import TaskError
from kaviz.data.lm_probe_data import read_completion_file, read_corpus
from kaviz.measure.lm_probes import LMHead
from kaviz.measure.probes import MLMHead, general_knowledge, has_mlm_head, sts_pairs
from kaviz.train.models import load_causal_lm


def _row(name: str, value: float) -> dict:
    return {
        "reference": schema.SELF,
        "layer": schema.WHOLE_MODEL,
        "head": schema.WHOLE_LAYER,
        "metric": f"{schema.GENERAL}{name}",
        "value": float(value),
    }


class GeneralProbes:
    """Built once per analysis; :meth:`rows` gives one unit's general-probe rows (the model is only read).

    ``texts`` are the probe texts (MLM probe; LM probe without a corpus); ``log`` takes one line for
    the run log when a unit is skipped (a small-dense student narrower than the pre-trained head).
    """

    def __init__(
        self,
        model_cfg: ModelConfig,
        acfg: AnalysisConfig,
        tokenizer: Any,
        texts: Sequence[str],
        *,
        seed: int = 0,
        log: Callable[[str], None] = lambda m: None,
    ):
        self.model_cfg, self.acfg, self.tokenizer = model_cfg, acfg, tokenizer
        self.texts, self.seed, self.log = list(texts), seed, log
        self.mlm_head, self.sts = self._encoder_probe()
        self._lm: LMHead | None | bool = False  # built on the first decoder unit (False: not looked for yet)
        self.completions = read_completion_file(acfg.completion_file) if acfg.completion_file else None
        self.lm_texts = read_corpus(acfg.lm_corpus) if acfg.lm_corpus else None

    def _encoder_probe(self) -> tuple[MLMHead | None, tuple | None]:
        """(the pre-trained MLM head, None) for 'mlm', or 'auto' when the pre-trained model has a
        masked-LM head; (None, STS pairs and gold) for 'sts' or 'auto' without one."""
        mode, name = self.acfg.general_probe, self.model_cfg.name_or_path
        if mode in ("none", "lm"):
            return None, None
        has_head = not is_tiny(name) and has_mlm_head(name)
        if mode == "mlm" and not has_head:
            raise TaskError(
                f"analysis.general_probe 'mlm' needs a pre-trained model with a masked-LM head; {name!r} has none "
                "(its config names no *ForMaskedLM/*ForPreTraining architecture): use 'sts' or 'auto'"
            )
        if has_head and mode in ("mlm", "auto"):
            return MLMHead(name), None
        return None, sts_pairs(self.acfg.sts_path, 128, seed=self.acfg.probe_seed)

    def _lm_head(self, model: nn.Module) -> LMHead | None:
        """The pre-trained causal-LM head for a decoder ('auto' or 'lm'), loaded once; None for
        encoders. A tiny decoder (``tiny:<family>``) gets a random head of its family."""
        if self._lm is not False:
            return self._lm  # type: ignore[return-value]
        self._lm = None
        mode, causal = self.acfg.general_probe, structure_of(model).causal
        if mode == "lm" and not causal:
            raise TaskError(f"analysis.general_probe 'lm' is for decoders; {model.config.model_type!r} is an encoder")
        if causal and mode in ("auto", "lm"):
            self._lm = LMHead(load_causal_lm(self.model_cfg, self.tokenizer, seed=self.seed))
        return self._lm

    def rows(self, model: nn.Module) -> list[dict]:
        lm = self._lm_head(model)
        if lm is not None:
            return self._decoder_rows(lm, model)
        if self.mlm_head is not None:
            value = self.mlm_head.loss(model, self.tokenizer, self.texts, seed=self.acfg.probe_seed)
            if value is None:
                self.log("analyze: MLM probe skipped for a model narrower than the pre-trained head")
                return []
            return [_row("mlm_loss", value)]
        if self.sts is not None:
            g = general_knowledge(model, self.tokenizer, sts_pairs=self.sts[0], sts_gold=self.sts[1])
            return [_row(g["probe"], g["value"])]
        return []

    def _decoder_rows(self, lm: LMHead, model: nn.Module) -> list[dict]:
        """``general_lm_loss`` (nats per token, lower is better) and, with a completion file,
        ``general_completion_exact`` and ``general_completion_logprob``."""
        got = lm.loss(model, self.tokenizer, self.lm_texts or self.texts)
        if got is None:
            self.log("analyze: LM probe skipped for a model narrower than the pre-trained head")
            return []
        rows = [_row("lm_loss", got["nll"])]
        if self.completions:
            table = lm.completion(model, self.tokenizer, self.completions)
            rows += [
                _row("completion_exact", table["exact"].mean()),
                _row("completion_logprob", table["answer_logprob"].mean()),
            ]
        return rows
