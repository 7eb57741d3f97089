"""``metrics/summary.json``: the run at a glance, the one DVC metrics file.

Ten short keys, in the order ``dvc exp show`` lists them (it keeps the leftmost metric columns and folds
the rest, then the params, into "…" when the terminal is narrow): the decision, the adapter's headline score,
the base model's and the full fine-tune's, the adapter's interval, how much it forgot (retention drop), the
share of the full fine-tune's gain it recovers, the gates it failed, and what the adapter's training cost.
Ten is what fits: ``dvc metrics show`` sorts the keys and gives each column its widest cell plus four
spaces, so with the path column every further key costs nine characters or more of the 120 a terminal
has. ``metrics/train.json`` and ``metrics/baseline.json`` (which share a schema) stay as plain outputs with
both trainings' full costs. Every score is the headline metric (``eval.headline``: accuracy for label
tasks); ``metrics/eval.json`` has the rest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loraops.core import atomic_write_text
from loraops.evaluation import EvaluationSummary
from loraops.training import TrainRecord

# What each key means, for the README and the test that dvc exp show keeps them readable.
KEYS = {
    "decision": "the promotion decision (champion / challenger)",
    "adapter": "the adapter's headline score on the test split",
    "base": "the base model's headline score",
    "full": "the full fine-tune's headline score",
    "ci_lo": "lower bound of the adapter's interval",
    "ci_hi": "upper bound of the adapter's interval",
    "forget": "the adapter's retention drop (base minus adapter on the retention set)",
    "recov": "share of the full fine-tune's gain the adapter recovers: (adapter - base) / (full - base)",
    "failed": "how many promotion gates failed",
    "lora_s": "adapter training time, seconds",
}


def summary(evaluation: EvaluationSummary, decision: str, gates: dict[str, str], train: TrainRecord) -> dict[str, Any]:
    """The headline numbers, rounded for reading; a value that does not exist is left out, never faked."""
    metric = evaluation.headline

    def score(model: str) -> float | None:
        scores = evaluation.model(model)
        value = None if scores is None else scores.score(metric)
        return None if value is None else round(value, 3)

    adapter = evaluation.model("adapter")
    low, high = adapter.interval(metric) if adapter is not None else (None, None)
    out: dict[str, Any] = {
        "decision": decision.split(" ")[0], "adapter": score("adapter"), "base": score("base"),
        "full": score("full"), "ci_lo": None if low is None else round(low, 3),
        "ci_hi": None if high is None else round(high, 3),
        "forget": None if adapter is None or adapter.retention_drop is None else round(adapter.retention_drop, 3),
        "recov": None if evaluation.recovered_share is None else round(evaluation.recovered_share, 2),
        "failed": sum(1 for status in gates.values() if status == "fail"),
        "lora_s": round(train.train_seconds),
    }
    assert list(out) == list(KEYS)
    return {k: v for k, v in out.items() if v is not None}


def write_summary(target: Path, values: dict[str, Any]) -> None:
    """In :data:`KEYS` order (not sorted: ``dvc exp show`` keeps the first columns)."""
    atomic_write_text(target, json.dumps(values, indent=2) + "\n")
