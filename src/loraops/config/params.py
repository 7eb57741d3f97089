"""The one typed configuration of a loraops project, loaded from ``params.yaml``.

Groups follow the pipeline stages so that DVC can track each stage's params on their own
(``dvc.yaml`` lists ``params: [train]`` for the train stage, and so on). Unknown keys are
errors: a misspelled key silently falling back to a default is how experiments go wrong.
"""

from __future__ import annotations

import difflib
import warnings
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from loraops.core.errors import ConfigError
from loraops.core.hashing import sha256_json

BUILTIN_BASE_MODEL = "smollm2-135m-instruct"
# What ``data.path`` names for the demo source: its generator. dvc.yaml's ingest stage depends on
# ``${data.path}`` (DVC cannot interpolate a null), so every source names a file.
DEMO_SOURCE_FILE = "src/loraops/data/demo.py"
TARGET_MODULE_SETS = ("attention", "mlp", "all-linear")
# The Prefect flow (flows/search_worker.py) whose deployments search.workers_deployment may name.
SEARCH_WORKER_FLOW = "loraops-search-worker"


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProjectParams(_Group):
    name: str = "loraops-demo"
    seed: int = 42


class ModelParams(_Group):
    # The built-in name, a local directory (config.json + safetensors) or a Hugging Face hub id.
    base: str = BUILTIN_BASE_MODEL
    revision: str | None = None
    trust_remote_code: bool = False


class DemoDataParams(_Group):
    train_per_intent: int = Field(30, ge=1)
    test_per_intent: int = Field(8, ge=1)


class DataParams(_Group):
    source: Literal["demo", "jsonl", "csv", "parquet", "clinc150"] = "demo"
    # The file the data comes from, relative to the project; for the demo source, its generator.
    path: str | None = DEMO_SOURCE_FILE
    text_column: str = "text"
    label_column: str = "label"
    # Optional column holding 'train'/'val'/'test'; without it prepare splits by fraction.
    split_column: str | None = None
    clinc150_domains: list[str] = Field(default_factory=list)
    demo: DemoDataParams = DemoDataParams()

    @model_validator(mode="after")
    def _path_matches_source(self) -> "DataParams":
        if self.source == "demo" and self.path != DEMO_SOURCE_FILE:
            raise ValueError(f"data.path must be {DEMO_SOURCE_FILE!r} (the demo generator) when data.source is "
                             "'demo': dvc.yaml's ingest stage depends on the file data.path names")
        if self.source != "demo" and (not self.path or self.path == DEMO_SOURCE_FILE):
            raise ValueError(f"data.path is required when data.source is {self.source!r}"
                             + (" (it still names the demo generator)" if self.path else ""))
        if self.clinc150_domains and self.source != "clinc150":
            raise ValueError("data.clinc150_domains only applies to data.source 'clinc150'")
        return self


class ValidateParams(_Group):
    """Thresholds of the ``validate`` stage; the Great Expectations suites are generated from them."""

    min_rows: int = Field(20, ge=0)
    min_labels: int = Field(2, ge=1)
    # Counted in the training pool: rows with split 'train' or no split (prepare splits those).
    min_examples_per_label: int = Field(5, ge=1)
    min_rows_per_split: int = Field(5, ge=1)  # every split the source gives (train/val/test) has this many
    max_imbalance_ratio: float = Field(10.0, ge=1)  # largest / smallest training count per label
    max_text_chars: int = Field(1000, ge=1)
    max_text_tokens: int = Field(128, ge=1)  # measured with the base model's tokenizer
    # Share of rows (0..1) that may be exact or normalised duplicates within their split, and that may
    # share their text with another split (leakage), before validation fails. Any non-zero share below
    # the bound is still reported as a warning (public datasets such as CLINC150 hold a few).
    max_duplicate_share: float = Field(0.01, ge=0, le=1)
    max_leakage_share: float = Field(0.01, ge=0, le=1)
    # Texts that contain their own label verbatim (target leakage): more than this share of rows is a warning.
    max_label_in_text_share: float = Field(0.5, ge=0, le=1)
    allow_new_labels: bool = False  # labels unseen in the previous validated version warn instead of fail
    max_label_shift: float = Field(0.2, ge=0, le=1)  # total variation distance vs the previous version
    max_length_shift: float = Field(0.25, ge=0)  # relative change of the mean text length in characters
    shift_action: Literal["warn", "fail"] = "fail"


class PrepareParams(_Group):
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    # Used only when the raw data carries no test split of its own.
    test_fraction: float = Field(0.2, gt=0, lt=0.5)
    system_prompt: str = "You are a customer-support assistant that labels each request with its intent."
    # Listing the label set in the prompt gives the base model a chance zero-shot but doubles prompt
    # length; on the demo task, off trains 2.5x faster per step and generalised better (55 % vs 31 %).
    list_labels_in_prompt: bool = False
    max_length: int = Field(256, ge=16)
    # Cleaning is opt-in and counted in data/prepared/summary.json: nothing is changed silently.
    strip_text: bool = False
    drop_duplicates: bool = False


class LoraParams(_Group):
    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    # A named set (attention, mlp, all-linear) or an explicit list of module names.
    target_modules: str | list[str] = "all-linear"
    # rsLoRA: scale the update by alpha / sqrt(r) instead of alpha / r, so one learning rate fits every rank.
    use_rslora: bool = False

    @field_validator("target_modules")
    @classmethod
    def _known_set(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, str) and value not in TARGET_MODULE_SETS:
            raise ValueError(f"unknown target module set {value!r}; use one of {TARGET_MODULE_SETS} or a list")
        return value


class RehearsalParams(_Group):
    """Rehearsal against forgetting: the base model's own answers to the built-in rehearsal prompts
    (:mod:`loraops.data.general_prompts`), mixed into the training data (and the full fine-tune's)."""

    share: float = Field(0.0, ge=0, lt=1)  # share of training examples that are rehearsal pairs; 0: off
    max_new_tokens: int = Field(48, ge=1)  # length cap of the base model's greedy answers (the rehearsal stage)
    batch_size: int = Field(32, ge=1)  # prompts per generation batch in the rehearsal stage


class TrainParams(_Group):
    method: Literal["qlora", "lora"] = "qlora"
    # The budget: a number of optimiser steps, or (with max_steps null) a number of passes over the data.
    max_steps: int | None = Field(60, ge=1)
    epochs: float | None = Field(None, gt=0)
    batch_size: int = Field(8, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    # The configuration the search found on the demo (README: Quick start); the search replaces it when on.
    learning_rate: float = Field(2e-3, gt=0)
    warmup_steps: int = Field(4, ge=0)
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    logging_steps: int = Field(5, ge=1)
    # Loss on the validation split every N steps (null: only at the end); early stopping watches it.
    eval_steps: int | None = Field(20, ge=1)
    early_stopping_patience: int | None = Field(3, ge=1)  # evaluations without improvement; null: off
    early_stopping_min_delta: float = Field(0.0, ge=0)
    # Resumable checkpoints every N steps (null: none); a re-run after a crash resumes from the last
    # complete one. At least two are kept so a checkpoint torn by the crash has a complete predecessor.
    save_steps: int | None = Field(20, ge=1)
    save_total_limit: int = Field(2, ge=2)
    gradient_checkpointing: bool = False  # less activation memory for ~30 % more compute
    progress_bar: bool = True
    # Largest |logit| difference allowed between the merged export and adapter-on-base.
    merge_tolerance: float = Field(1e-3, gt=0)
    # With the search on: take the chosen trial's adapter (models/search/trained) instead of training it again
    # when every input that decides the weights matches (README: Training); false always trains.
    reuse_trial: bool = True
    lora: LoraParams = LoraParams(r=8, alpha=8, target_modules="all-linear", use_rslora=True)
    rehearsal: RehearsalParams = RehearsalParams(share=0.5)

    @model_validator(mode="after")
    def _one_budget(self) -> "TrainParams":
        if (self.max_steps is None) == (self.epochs is None):
            raise ValueError("set exactly one of train.max_steps and train.epochs (the other null)")
        if self.early_stopping_patience is not None and self.eval_steps is None:
            raise ValueError("train.early_stopping_patience needs train.eval_steps (or set it null)")
        return self


class BaselineParams(_Group):
    """The full fine-tuning baseline: same data and budget as ``train``, every weight trainable."""

    enabled: bool = True
    # Full fine-tuning wants a far smaller step than LoRA (every weight moves).
    learning_rate: float = Field(1e-4, gt=0)  # demo, 60 steps: 1e-4 -> 51.8 % test accuracy, 5e-5 -> 41.1 %


class SearchParams(_Group):
    """The ``search`` stage: an Optuna study over LoRA rank, target modules, learning rate and rehearsal share.

    ``enabled: false`` skips the study and hands ``train``'s own ``lora``, ``learning_rate`` and rehearsal on.
    Sized for the demo on 2 CPU cores (README: Rank search): 6 trials x 20 steps.
    """

    enabled: bool = True
    n_trials: int = Field(3, ge=1)
    # Training steps of one trial that is never pruned; as many as train.max_steps, so that a trial forgets
    # (and learns) what the adapter trained with its configuration will.
    max_steps: int = Field(60, ge=1)
    # All trials together (finished + running trials' reservations); null means n_trials * max_steps.
    total_steps: int | None = Field(None, ge=1)
    eval_steps: int = Field(20, ge=1)  # val loss reported to the pruner every N steps (the first rung)
    ranks: list[int] = Field(default_factory=lambda: [8, 16], min_length=1)
    # rsLoRA (scaling alpha / sqrt(r), fixed alpha): one learning-rate range fits every rank. Off, alpha is
    # alpha_multiple x r (scaling alpha / r, constant), and the best learning rate shifts with the rank.
    rslora: bool = True
    alpha: int = Field(8, ge=1)  # with rslora: the fixed alpha (r=2: scaling 5.7, r=8: 2.8, r=16: 2)
    alpha_multiple: float = Field(2.0, gt=0)  # without rslora: lora alpha = round(alpha_multiple * r)
    target_modules: list[str] = Field(default_factory=lambda: ["all-linear"], min_length=1)
    learning_rate: tuple[float, float] = (1.5e-3, 3e-3)  # log-uniform [low, high]; low == high fixes it
    dropout: float = Field(0.05, ge=0, lt=1)
    # Shares of rehearsal pairs (train.rehearsal) a trial may mix in; the chosen one goes to train.
    rehearsal_shares: list[float] = Field(default_factory=lambda: [0.3, 0.5], min_length=1)
    sampler: Literal["tpe", "random", "bruteforce"] = "tpe"
    # TPE's random start-up trials; null = max(2, n_trials // 3), so a small budget still gets TPE's picks.
    n_startup_trials: int | None = Field(None, ge=1)
    pruner: Literal["successive_halving", "hyperband", "none"] = "successive_halving"
    reduction_factor: int = Field(2, ge=2)
    # Selection needs a feasible trial (retention-dev drop <= promote.max_retention_drop) that beats the
    # base model on val (lower bound of the paired bootstrap interval of trial - base > 0); false: no floor.
    beat_base: bool = True
    val_items: int | None = Field(48, ge=1)  # val rows a trial uses (loss and accuracy); null = all
    n_jobs: int = Field(1, ge=1)
    storage: str | None = None  # null = SQLite under .loraops/search/; env LORAOPS_OPTUNA_STORAGE overrides
    # A Prefect deployment of the flow loraops-search-worker ("flow/deployment", e.g.
    # loraops-search-worker/search-worker): the Prefect flows start the n_jobs workers as its flow runs on
    # its work pool (other machines) instead of in their own process; null = workers here. Needs a storage
    # every worker reaches (a PostgreSQL URL in LORAOPS_OPTUNA_STORAGE), never the SQLite default.
    workers_deployment: str | None = None
    heartbeat_seconds: int = Field(30, ge=1)  # a RUNNING trial silent for 2x this is failed and re-queued
    seed: int | None = None  # null = project.seed

    @field_validator("rehearsal_shares")
    @classmethod
    def _shares_in_range(cls, value: list[float]) -> list[float]:
        bad = [v for v in value if not 0 <= v < 1]
        if bad:
            raise ValueError(f"rehearsal shares {bad} are not in [0, 1)")
        return value

    def startup_trials(self) -> int:
        return self.n_startup_trials if self.n_startup_trials is not None else max(2, self.n_trials // 3)

    @field_validator("target_modules")
    @classmethod
    def _known_sets(cls, value: list[str]) -> list[str]:
        unknown = [v for v in value if v not in TARGET_MODULE_SETS]
        if unknown:
            raise ValueError(f"unknown target module set(s) {unknown}; use {TARGET_MODULE_SETS}")
        return value

    @field_validator("storage")
    @classmethod
    def _no_secret(cls, value: str | None) -> str | None:
        from urllib.parse import urlsplit

        from loraops.core.tracking import redact_url

        # params.yaml is committed and DVC copies the search group into dvc.lock: no password may live here.
        if value is not None and (urlsplit(value).password is not None
                                  or "***" in redact_url(f"x://h/?{urlsplit(value).query}")):
            raise ValueError(f"{redact_url(value)!r} holds a password; put the URL in the environment variable "
                             "LORAOPS_OPTUNA_STORAGE instead")
        return value

    @field_validator("workers_deployment")
    @classmethod
    def _a_search_worker_deployment(cls, value: str | None) -> str | None:
        # Only the worker flow's deployments: n_jobs runs of any other flow (the retrain) would be a disaster.
        flow, _, name = (value or "").partition("/")
        if value is not None and (flow != SEARCH_WORKER_FLOW or not name.strip() or "/" in name):
            raise ValueError(f"{value!r} is not a deployment of the flow {SEARCH_WORKER_FLOW} "
                             f"('{SEARCH_WORKER_FLOW}/NAME', e.g. {SEARCH_WORKER_FLOW}/search-worker); "
                             "null runs the workers here")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "SearchParams":
        low, high = self.learning_rate
        if not 0 < low <= high:
            raise ValueError(f"learning_rate {list(self.learning_rate)}: need 0 < low <= high")
        if self.total_steps is not None and self.total_steps < self.max_steps:
            raise ValueError(f"total_steps {self.total_steps} < max_steps {self.max_steps}: no trial could run")
        return self


class EvalParams(_Group):
    batch_size: int = Field(16, ge=1)
    max_items: int | None = Field(None, ge=1)
    # Evaluate the base model through the same evaluator, for an honest before/after.
    compare_base: bool = True
    # What is scored, and how honestly. 'label' answers are normalised labels (exact match,
    # macro-F1); 'text' answers are free text (ROUGE-L). Perplexity of the reference answers fits both.
    task: Literal["label", "text"] = "label"
    metrics: list[Literal["accuracy", "macro_f1", "rouge_l", "perplexity"]] | None = None  # None: per task
    headline: Literal["accuracy", "macro_f1", "rouge_l"] | None = None  # None: accuracy | rouge_l per task
    max_new_tokens: int | None = Field(None, ge=1)  # None: longest reference answer + 2 tokens
    compare_full: bool = True  # also score models/full when the baseline stage produced it
    bootstrap_samples: int = Field(1000, ge=100)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    bootstrap_seed: int = 0
    retention: bool = True  # score every model on the built-in retention set (forgetting)
    retention_max_new_tokens: int = Field(24, ge=1)
    cache_base: bool = True  # reuse the base model's scores while base model, test data and eval params match
    # Label tasks: decode constrained to the label set (every answer is one label); the unconstrained
    # accuracy is reported beside it (accuracy_unconstrained).
    constrained: bool = True
    # Label tasks: the base model is asked at its best, with the label set in its prompt and this many
    # worked examples from the train split (one per label in turn) as earlier chat turns.
    base_shots: int = Field(8, ge=0)

    def metric_names(self) -> list[str]:
        defaults = ["accuracy", "macro_f1", "perplexity"] if self.task == "label" else ["rouge_l", "perplexity"]
        return list(dict.fromkeys(self.metrics if self.metrics is not None else defaults))

    def headline_metric(self) -> str:
        return self.headline or ("accuracy" if self.task == "label" else "rouge_l")

    @model_validator(mode="after")
    def _headline_is_scored(self) -> "EvalParams":
        if self.headline_metric() not in self.metric_names():
            raise ValueError(f"eval.headline {self.headline_metric()!r} is not in eval.metrics {self.metric_names()}")
        if self.task == "text" and "macro_f1" in self.metric_names():
            raise ValueError("eval.metrics: macro_f1 needs label answers (eval.task: label)")
        return self


class RegistryParams(_Group):
    experiment: str = "loraops"
    model_name: str = "loraops-demo-intent"
    # Calls to the tracking server are retried this many times, waiting backoff_seconds * 2**attempt.
    retries: int = Field(3, ge=0)
    backoff_seconds: float = Field(1.0, ge=0)


PROMOTION_GATES = ("validation_passed", "beats_base", "recovers_full_gain", "retention", "not_worse_than_champion")


class PromoteParams(_Group):
    """Gates a new version must pass before the ``champion`` alias moves to it (see loraops.registry.gates)."""

    # The lower bound of the interval of (adapter - base) on the headline metric must exceed this.
    min_gain_over_base: float = 0.0
    # (adapter - base) / (full - base): the share of full fine-tuning's gain the adapter recovers.
    min_recovered_share: float = Field(0.8, ge=0)
    max_retention_drop: float = Field(0.05, ge=0)
    # "Worse than the champion beyond noise": the upper bound of the candidate's interval plus this
    # margin is below the champion's score on the same test set.
    champion_margin: float = Field(0.0, ge=0)
    # A gate whose evidence is missing (no full baseline, no retention score, a champion on another
    # test set) fails, unless it is listed here, in which case it is recorded as skipped.
    optional_gates: list[str] = Field(default_factory=list)
    # A promotion holds a lock in the registry; a lock older than this is taken to be from a dead run.
    lock_ttl_seconds: float = Field(120.0, gt=0)
    # ``champion`` moved outside loraops (the MLflow UI's alias editor, a client): the next loraops command
    # that touches the registry runs the gates for that version and records the move; ``revert`` also moves
    # champion back to the version loraops last made champion (see loraops.registry.hand_moves).
    hand_moves: Literal["record", "revert"] = "record"

    @field_validator("optional_gates")
    @classmethod
    def _known_gates(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(PROMOTION_GATES))
        if unknown:
            raise ValueError(f"unknown gate(s) {unknown}; gates are {list(PROMOTION_GATES)}")
        return value


# PEFT's ``add_weighted_adapter`` combinations. ``cat`` stacks the sources' A and B matrices: the exact weighted
# sum of their updates (rank = the sum of the ranks). ``linear``, ``ties``, ``dare_*`` and ``magnitude_prune``
# combine A and B separately (equal ranks only; an approximation with cross terms); ``*svd`` truncates the exact
# sum (or its TIES/DARE pruning) back to ``svd_rank``.
COMBINATIONS = ("cat", "linear", "svd", "ties", "ties_svd", "dare_linear", "dare_ties", "dare_linear_svd",
                "dare_ties_svd", "magnitude_prune", "magnitude_prune_svd")
PRUNING_COMBINATIONS = tuple(c for c in COMBINATIONS if c.startswith(("ties", "dare", "magnitude")))


class ComposeParams(_Group):
    """``loraops compose``: one adapter from registered versions of several models (see loraops.registry.compose)."""

    combination: Literal[COMBINATIONS] = "cat"  # type: ignore[valid-type]
    # One weight per source, in the order the sources are given; null: 1.0 each (every task's update whole).
    weights: list[float] | None = None
    density: float = Field(0.5, gt=0, le=1)  # ties/dare/magnitude_prune: share of each update's values kept
    majority_sign: Literal["total", "frequency"] = "total"  # ties/dare_ties: how the sign of a value is elected
    svd_rank: int | None = Field(None, ge=1)  # *svd: rank of the result; null: the largest source rank
    # The gate on every source task: the composed score may be at most this far below that task's champion.
    max_task_loss: float = Field(0.02, ge=0)


# The stage is called 'validate', which shadows pydantic's deprecated BaseModel.validate (unused here).
warnings.filterwarnings("ignore", message='Field name "validate" in "Params" shadows', category=UserWarning)


class Params(_Group):
    project: ProjectParams = ProjectParams()
    model: ModelParams = ModelParams()
    data: DataParams = DataParams()
    validate: ValidateParams = ValidateParams()
    prepare: PrepareParams = PrepareParams()
    search: SearchParams = SearchParams()
    train: TrainParams = TrainParams()
    baseline: BaselineParams = BaselineParams()
    eval: EvalParams = EvalParams()
    registry: RegistryParams = RegistryParams()
    promote: PromoteParams = PromoteParams()
    compose: ComposeParams = ComposeParams()


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (the syntax of ``dvc exp run -S``); values parse as YAML."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected key.sub=value")
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a group")
            node = child
        node[parts[-1]] = yaml.safe_load(value) if value.strip() else None
    return raw


def _describe(error: dict[str, Any], source: str) -> str:
    location = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        parent = Params
        for part in error["loc"][:-1]:
            field = parent.model_fields.get(str(part)) if isinstance(parent, type) else None
            parent = field.annotation if field else None
        known = list(parent.model_fields) if isinstance(parent, type) and issubclass(parent, BaseModel) else []
        hint = difflib.get_close_matches(str(error["loc"][-1]), known, n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else f" (known keys: {', '.join(known)})"
        return f"{source}: unknown key {location!r}{suggestion}"
    message = error["msg"].removeprefix("Value error, ")
    return f"{source}: {location or 'file'}: {message}"


def parse_params(raw: Any, source: str) -> Params:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of stage groups at the top level")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError("; ".join(_describe(e, source) for e in exc.errors())) from None


def load_params(path: Path, overrides: list[str] | None = None) -> Params:
    """Read, override and validate ``params.yaml``; every problem names the key and the file."""
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc.__class__.__name__}: {exc})") from None
    if overrides:
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of stage groups at the top level")
        raw = apply_overrides(raw, overrides)
    return parse_params(raw, str(path))


def flatten(params: Params) -> dict[str, Any]:
    """``{'train.lora.r': 8, ...}`` for logging as MLflow params; a URL's credentials (``search.storage``)
    are redacted (:func:`loraops.core.tracking.redact_url`)."""
    from loraops.core.tracking import redact_url

    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else key, sub)
        else:
            out[prefix] = redact_url(value) if isinstance(value, str) else value

    walk("", params.model_dump())
    return out


def tracking_params(params: Params, root: Path) -> dict[str, str]:
    """:func:`flatten` as MLflow params: values as they read in params.yaml (``null``, ``true``, ``[1, 2]``),
    never Python's ``None``/``False``; a path that names this machine is shown relative to the project, or as
    ``local:NAME`` when it is outside it, like the base model's id (``base_model.id``); a URL loses its password."""
    import json

    out = {}
    for key, value in flatten(params).items():
        if isinstance(value, str):
            out[key] = portable(value, root)
        else:
            out[key] = json.dumps(value, ensure_ascii=False)
    return out


def portable(value: str, root: Path) -> str:
    """``value`` as MLflow may show it: a path relative to the project (``local:NAME`` outside it), a
    ``sqlite:///`` URL with that path, any other URL without its password."""
    if value.startswith("sqlite:///"):
        return "sqlite:///" + portable(value.removeprefix("sqlite:///"), root)
    if "://" in value:  # a storage URL: never its password
        from loraops.core.tracking import redact_url

        return redact_url(value)
    path = Path(value)
    if not path.is_absolute():
        return value
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return f"local:{path.name}"


def params_digest(params: Params) -> str:
    """sha256 of every param (all groups): the one hash of a configuration, recorded on registered versions
    as ``params.sha256`` and compared by the scheduled retrain."""
    return sha256_json(params.model_dump(mode="json"))
