"""Forgetting: built-in retention sets of general prompts that are not part of any loraops task.

The items (:mod:`loraops.data.general_prompts`, written for loraops: no third-party text) are short
general-knowledge, arithmetic or instruction-following prompts with one or more accepted answers. The
prompts are rendered with the model's chat template and NO task system prompt, so what is measured is
the model's general behaviour, not the task it was tuned for.

Scoring rule: an answer is right when one accepted answer, normalised (lower case, every run of
characters other than letters/digits becomes one space), occurs in the normalised answer as whole words.
"Paris" is found in "The capital of France is Paris." but "4" is not found in "14" or "40". A model
that rambles on is not punished; one that names the wrong thing first and the right thing later is
(rarely) credited, which affects every model alike. Retention = share of items right; a model's
retention drop = base retention - its retention (positive means it forgot).
"""

from __future__ import annotations

import re
from typing import Any

from loraops.data.general_prompts import POOLS, RETENTION_TEST

RETENTION_ITEMS = RETENTION_TEST  # the pool the evaluate stage and the gate score


def normalise_text(text: str) -> str:
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


def is_retained(answer: str, accepted: str) -> bool:
    """The retention scoring rule (module docstring): an accepted answer occurs as whole words."""
    words = f" {normalise_text(answer)} "
    return any(f" {normalise_text(option)} " in words for option in accepted.split("|") if normalise_text(option))


def general_prompt(tokenizer: Any, prompt: str) -> str:
    """A general request as a single user turn in the model's chat template, without the task's system prompt."""
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)


def retention_prompts(tokenizer: Any, pool: str = "test") -> list[str]:
    """Each item of retention ``pool`` (``test``: evaluate and the gate; ``dev``: the search) rendered by
    :func:`general_prompt`."""
    return [general_prompt(tokenizer, prompt) for prompt, _ in POOLS[pool]]


def score_retention(answers: list[str], pool: str = "test") -> tuple[float, list[dict[str, Any]]]:
    """(retention, per-item records) for generated ``answers`` in the order of retention ``pool``."""
    items_of = POOLS[pool]
    if len(answers) != len(items_of):
        raise ValueError(f"{len(answers)} answers for {len(items_of)} retention items ({pool})")
    items = [{"prompt": prompt, "accepted": accepted, "answer": answer, "retained": is_retained(answer, accepted)}
             for (prompt, accepted), answer in zip(items_of, answers)]
    return sum(i["retained"] for i in items) / len(items), items
