"""The evaluation summary (``metrics/eval.json``): what the gates, lineage tags and ``loraops models`` read."""

from __future__ import annotations

from typing import Literal

from loraops.core.records import Record

Headline = Literal["accuracy", "macro_f1", "rouge_l"]


class Interval(Record):
    mean: float
    low: float
    high: float


class ModelScores(Record):
    """One model's scores on the test split; ``<headline>_low`` / ``_high`` are its bootstrap interval."""

    items: int
    seconds: float | None = None
    items_per_second: float | None = None
    accuracy: float | None = None
    accuracy_low: float | None = None
    accuracy_high: float | None = None
    accuracy_unconstrained: float | None = None  # label tasks decoded constrained: the free answers' accuracy
    macro_f1: float | None = None
    macro_f1_low: float | None = None
    macro_f1_high: float | None = None
    rouge_l: float | None = None
    rouge_l_low: float | None = None
    rouge_l_high: float | None = None
    perplexity: float | None = None
    answer_nll_per_token: float | None = None
    retention: float | None = None  # share of the retention set answered right
    retention_low: float | None = None  # bootstrap interval of retention over the retention items
    retention_high: float | None = None
    retention_drop: float | None = None  # base retention minus this model's (positive: forgotten)
    retention_drop_low: float | None = None  # paired bootstrap interval of the drop (same retention items)
    retention_drop_high: float | None = None
    cached: bool | None = None  # the base model's scores came from the evaluation cache

    def score(self, metric: str) -> float | None:
        return getattr(self, metric)

    def interval(self, metric: str) -> tuple[float | None, float | None]:
        return getattr(self, f"{metric}_low"), getattr(self, f"{metric}_high")


class BasePrompting(Record):
    """How the base model was asked on a label task: at its best, not with the trained models' prompt."""

    labels_listed: bool
    shots: int  # worked examples from the train split, as earlier chat turns
    constrained: bool  # answers decoded within the label set


class EvaluationSummary(Record):
    """Base, adapter and (when it exists) the full fine-tune, scored by the one evaluator on one test set."""

    headline: Headline
    test_items: int
    test_set_sha256: str
    confidence: float
    bootstrap_samples: int
    models: dict[str, ModelScores]  # "base", "adapter", "full"; "tfidf" (label tasks: reported, never gated on)
    differences: dict[str, Interval] = {}  # "adapter_minus_base", "adapter_minus_full": paired bootstrap
    recovered_share: float | None = None  # (adapter - base) / (full - base), when the full beat the base
    gain_over_base: float | None = None  # adapter - base on the headline metric
    constrained: bool = False  # label answers decoded within the label set (every model)
    base_prompting: BasePrompting | None = None  # label tasks: how the base model was asked

    def model(self, name: str) -> ModelScores | None:
        return self.models.get(name)
