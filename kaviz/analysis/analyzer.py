"""Stage lineage: per-layer knowledge tables for the pairs that tell a run's story.

For every done unit with weights, one capture on a fixed probe set, then:

- finetuned vs pretrained: what fine-tuning changed;
- each pruned student vs finetuned: task knowledge kept;
- each pruned student vs pretrained: general knowledge kept;
- every model on its own (reference `schema.SELF`): attention entropy per head, linear-probe score per layer, the
  general-knowledge probe, and Integrated-Gradients agreement with the teacher.

Tables are stored per unit (``knowledge``, ``cka_matrix``, ``attribution``), so a re-run only
computes units that lack them; ``force=True`` recomputes everything.

Only the references' captures are kept between units.  With ``analysis.stream`` (or 'auto' above
``stream_above_gib`` by :mod:`kaviz.measure.memory`), attention maps are streamed to a scratch folder
of the run and each layer's metrics read that layer alone (:mod:`kaviz.analysis.captures`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from kaviz.analysis.captures import (
    UnitCapture,
    capture_unit,
    pair_attention_rows,
    self_attention_rows,
    wants_streaming,
)
from kaviz.analysis.costs import measure_unit, with_reference
from kaviz.analysis.general_probes import GeneralProbes
from kaviz.core import schema
from kaviz.core.config import AnalysisConfig, RunConfig
from kaviz.core.heads import dead_heads
from kaviz.core.schema import KNOWLEDGE_COLUMNS
from kaviz.core.structure import dims
from kaviz.measure.capture import probe_inputs
from kaviz.measure.cka_matrix import cka_matrix
from kaviz.measure.probes import linear_probe
from kaviz.measure.similarity import METRICS
from kaviz.store import Run
from kaviz.train.models import load_model, load_pretrained, load_tokenizer, pick_device

REFERENCES = {"pretrained": [], "finetuned": ["pretrained"], "pruned": ["finetuned", "pretrained"]}
KEPT = {name for refs in REFERENCES.values() for name in refs}  # captures reused by later units
DONE_MARK = "knowledge"  # written last: a unit with this table is analysed
COSTS = "inference"  # what the unit buys at inference (kaviz.analysis.costs)


def pruned_heads(model: nn.Module) -> set[tuple[int, int]]:
    """(layer, head), 0-based, whose query or key weights are all zero: their maps carry no content
    (:func:`kaviz.core.heads.dead_heads`, which knows fused and grouped-query layouts)."""
    return dead_heads(model)


def layer_pairs(n_layers: int, n_ref_layers: int, layer_map: list[int] | None = None) -> list[tuple[int, int]]:
    """Hidden-state index pairs (model, reference): embeddings 0<->0, then layer j <-> map[j-1]."""
    if layer_map is None:
        if n_layers != n_ref_layers:
            raise ValueError(f"models with {n_layers} and {n_ref_layers} layers need a layer_map")
        layer_map = list(range(1, n_layers + 1))
    return [(0, 0)] + [(j + 1, t) for j, t in enumerate(layer_map)]


def _rows(df: pd.DataFrame, **const) -> list[dict]:
    return [{**const, **r} for r in df.to_dict("records")]


@dataclass
class UnitModel:
    unit: str
    stage: str
    model: nn.Module
    layer_map: list[int] | None


def compare(
    cap: UnitCapture,
    ref: UnitCapture,
    pairs: list[tuple[int, int]],
    acfg: AnalysisConfig,
    heads_pruned: set[tuple[int, int]],
    mask: torch.Tensor,
) -> tuple[list[dict], pd.DataFrame]:
    """Knowledge rows of one model against one reference, and the full linear-CKA layer matrix."""
    c, r = cap.captured, ref.captured
    feats, ref_feats = (c.mean, r.mean) if acfg.features == "mean" else (c.cls, r.cls)
    rows: list[dict] = []
    for kind in acfg.cka_kinds:
        fn = METRICS[kind]
        for i, j in pairs:
            rows.append(
                {
                    "layer": i,
                    "ref_layer": j,
                    "head": schema.WHOLE_LAYER,
                    "metric": kind,
                    "value": float(fn(feats[i], ref_feats[j])),
                    "pruned": False,
                }
            )
    mat = cka_matrix(feats, ref_feats, kind="linear")  # (L+1, L_ref+1)
    matrix = pd.DataFrame(
        [
            {"layer": i, "ref_layer": j, "metric": "linear_cka", "value": float(mat[i, j])}
            for i in range(mat.shape[0])
            for j in range(mat.shape[1])
        ]
    )
    rows += pair_attention_rows(cap, ref, pairs, mask, heads_pruned)
    return rows, matrix


class Analyzer:
    """``Analyzer(run).run()`` computes the knowledge tables of every done unit that lacks them."""

    def __init__(
        self,
        run: Run,
        acfg: AnalysisConfig | None = None,
        *,
        progress: bool = True,
        echo: Callable[[str], None] | None = None,
    ):
        self.run_ = run
        self.cfg = RunConfig.from_dict(run.config)
        self.acfg = acfg or self.cfg.analysis
        self.progress = progress
        self.echo = echo or (lambda m: None)
        self.device = pick_device(self.cfg.training.device)
        self._caps: dict[str, UnitCapture] = {}
        self._refs: dict[str, nn.Module | None] = {}
        self._stream: dict[tuple, bool] = {}  # model shape -> stream its captures (analysis.stream)

    def _setup(self) -> None:
        from transformers import AutoTokenizer

        from kaviz.data.tasks import load_task

        tok_dir = self.run_.tokenizer_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(str(tok_dir)) if tok_dir else load_tokenizer(self.cfg.model)
        self.task = load_task(self.cfg.task, seed=self.cfg.seed)
        self.spec = self.task.spec
        self.probe = probe_inputs(
            self.task,
            self.tokenizer,
            self.acfg.probe_size,
            seed=self.acfg.probe_seed,
            max_length=self.cfg.task.max_length,
        )
        self.general = GeneralProbes(
            self.cfg.model, self.acfg, self.tokenizer, self.probe.texts, seed=self.cfg.seed, log=self.run_.log
        )

    def load(self, u: dict) -> nn.Module | None:
        """The unit's model: pre-trained from its source, others from their checkpoint or source."""
        spec, m = self.spec, self.cfg.model
        if u["stage"] == "pretrained":
            return load_pretrained(m, spec.num_labels, spec.is_regression, seed=self.cfg.seed)
        ckpt = self.run_.checkpoint_dir(u["unit"])
        source = str(ckpt) if ckpt is not None else (u.get("info") or {}).get("source")
        if source is None:
            return None
        return load_model(source, m, spec.num_labels, spec.is_regression, self.cfg.seed)

    def _streams(self, model: nn.Module) -> bool:
        """Whether ``model``'s capture streams its maps to disk: decided once per model shape (a
        narrower small-dense student or an imported student of another size is sized on its own)."""
        shape = tuple(sorted(dims(model).items()))
        if shape not in self._stream:
            stream, need = wants_streaming(
                self.acfg, model, self.probe, dtype=self._dtype(), classes=max(1, self.spec.num_labels)
            )
            self._stream[shape] = stream
            if stream and need is not None:
                self.run_.log(
                    f"analyze: streaming attention maps to disk for models of {dict(shape)} (in memory would "
                    f"need ~{need / 2**30:.1f} GiB > analysis.stream_above_gib {self.acfg.stream_above_gib:g})"
                )
        return self._stream[shape]

    def _dtype(self) -> torch.dtype:
        return torch.float16 if self.acfg.float16 else torch.float32

    def _capture(self, unit: str, model: nn.Module) -> UnitCapture:
        if unit not in self._caps:
            folder, stack = None, ExitStack()
            if self._streams(model):
                folder = stack.enter_context(self.run_.scratch(f"capture-{unit}"))
            try:
                self._caps[unit] = capture_unit(
                    model,
                    self.probe,
                    batch_size=self.acfg.batch_size,
                    device=self.device,
                    dtype=self._dtype(),
                    folder=folder,
                    cleanup=stack.close,
                )
            except BaseException:
                stack.close()
                raise
        return self._caps[unit]

    def _drop(self, unit: str) -> None:
        """Forget ``unit``'s capture and remove its streamed maps."""
        cap = self._caps.pop(unit, None)
        if cap is not None:
            cap.cleanup()

    def run(self, force: bool = False) -> list[str]:
        """Analyse the units that need it; returns their ids."""
        units = self.run_.units()
        units = units[units.status == "done"].to_dict("records")
        todo = [u for u in units if force or self._missing(u)]
        if not todo:
            return []
        self._setup()
        by_id = {u["unit"]: u for u in units}
        done = []
        bar = tqdm(todo, desc="analyze", unit="unit", disable=not self.progress, dynamic_ncols=True)
        try:
            for u in bar:
                bar.set_description(f"analyze {u['unit']}")
                if self._analyze_unit(u, by_id, force):
                    done.append(u["unit"])
                if u["unit"] not in KEPT:
                    self._drop(u["unit"])
        finally:
            for unit in list(self._caps):
                self._drop(unit)
        return done

    def _reference(self, name: str, by_id: dict) -> tuple[UnitCapture, nn.Module] | None:
        if name not in self._refs:
            u = by_id.get(name)
            self._refs[name] = self.load(u) if u is not None else None
        model = self._refs[name]
        return None if model is None else (self._capture(name, model), model)

    def _missing(self, u: dict) -> list[str]:
        """The tables of ``u`` this analysis would write that it lacks."""
        names = [DONE_MARK, *([COSTS] if self.acfg.inference else [])]
        return [n for n in names if not self.run_.has_unit_table(u["unit"], n)]

    def _analyze_unit(self, u: dict, by_id: dict, force: bool = False) -> bool:
        model = self.load(u)
        if model is None:
            self.run_.log(f"analyze: skipped {u['unit']} (no checkpoint kept)")
            return False
        missing = [DONE_MARK, COSTS] if force else self._missing(u)
        if self.acfg.inference and COSTS in missing:
            self._costs(u, model, by_id)
        if DONE_MARK in missing:
            self._knowledge(u, model, by_id)
        return True

    def _costs(self, u: dict, model: nn.Module, by_id: dict) -> None:
        """The unit's ``inference`` table, against the dense teacher timed right before it (paired)."""
        info = u.get("info") or {}
        teacher = model if u["stage"] == "finetuned" else None
        if teacher is None:
            ref = self._reference("finetuned", by_id)
            teacher = ref[1] if ref is not None else None
        reference = None
        if teacher is not None and teacher is not model:
            reference = measure_unit(teacher, self.probe, self.acfg, self.device, dense_only=True)
        rows = measure_unit(
            model,
            self.probe,
            self.acfg,
            self.device,
            pattern=info.get("pattern"),
            structured=u["method"] == "structured",
        )
        if teacher is not None:
            rows = with_reference(rows, rows if reference is None else reference)
        self.run_.write_unit_table(u["unit"], COSTS, rows)

    def _knowledge(self, u: dict, model: nn.Module, by_id: dict) -> None:
        cap = self._capture(u["unit"], model)
        mask = self.probe.attention_mask
        heads = pruned_heads(model)
        rows: list[dict] = []
        matrices = []
        info = u.get("info") or {}
        teacher = None
        for ref_name in REFERENCES[u["stage"]]:
            ref = self._reference(ref_name, by_id)
            if ref is None:
                continue
            ref_cap, ref_model = ref
            teacher = ref_model if ref_name == "finetuned" else teacher
            pairs = layer_pairs(
                cap.n_layers, ref_cap.n_layers, info.get("layer_map") if cap.n_layers != ref_cap.n_layers else None
            )
            r, mat = compare(cap, ref_cap, pairs, self.acfg, heads, mask)
            rows += [{**x, "reference": ref_name} for x in r]
            matrices.append(mat.assign(reference=ref_name))
        rows += self._self_rows(model, cap, heads, mask)
        if teacher is not None and self.acfg.attribution_examples > 0:
            rows += self._attribution(u["unit"], teacher, model)
        table = pd.DataFrame(rows)
        for c in KNOWLEDGE_COLUMNS:
            if c not in table.columns:
                table[c] = None
        table["head"] = table["head"].fillna(schema.WHOLE_LAYER).astype("int64")
        table["pruned"] = table["pruned"].fillna(False).astype(bool)
        if matrices:
            self.run_.write_unit_table(u["unit"], "cka_matrix", pd.concat(matrices, ignore_index=True))
        self.run_.write_unit_table(u["unit"], DONE_MARK, table[KNOWLEDGE_COLUMNS])

    def _self_rows(self, model: nn.Module, cap: UnitCapture, heads: set, mask: torch.Tensor) -> list[dict]:
        rows = []
        if cap.has_maps:
            ent = self_attention_rows(cap, mask, heads)
            ent["metric"] = "attention_entropy"
            rows += _rows(ent, reference=schema.SELF)
        feats = cap.captured.mean if self.acfg.features == "mean" else cap.captured.cls
        try:
            probe = linear_probe(
                feats, self.probe.labels, regression=self.spec.is_regression, seed=self.acfg.probe_seed
            )
            probe["metric"] = schema.PROBE + probe["metric"].astype(str)
            rows += _rows(probe[["layer", "metric", "value"]], reference=schema.SELF, head=schema.WHOLE_LAYER)
        except ValueError as e:  # e.g. a single class in a tiny probe set
            self.run_.log(f"analyze: linear probe skipped: {e}")
        return rows + self.general.rows(model)

    def _attribution(self, unit: str, teacher: nn.Module, model: nn.Module) -> list[dict]:
        from kaviz.measure.attribution import attribution_table

        texts = self.probe.texts[: self.acfg.attribution_examples]
        result = attribution_table(teacher, model, self.tokenizer, texts, n_steps=self.acfg.ig_steps)
        self.run_.write_unit_table(unit, "attribution", result.summary)
        return [
            {
                "reference": "finetuned",
                "layer": schema.WHOLE_MODEL,
                "head": schema.WHOLE_LAYER,
                "metric": f"{schema.ATTRIBUTION}{c}",
                "value": float(result.summary[c].mean()),
            }
            for c in ("spearman", "topk_overlap")
        ]


def knowledge_table(run: Run, name: str = "knowledge") -> pd.DataFrame:
    """A per-unit analysis table joined with each unit's stage, method, sparsity, seed and budget."""
    df = run.unit_table(name)
    if df.empty:
        return df
    units = run.units()[schema.UNIT_KEYS]
    out = units.merge(df, on="unit", how="inner")
    return out
