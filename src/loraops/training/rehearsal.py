"""Mixing rehearsal pairs into training data: one rule for the adapter, the full fine-tune and search trials.

The rehearsal rows (the base model's own answers to the built-in rehearsal prompts, ``prompt``/``completion``
rows like prepared ones) are drawn in a seeded order and repeated as needed so that they make up ``share`` of
the mixed set: ``n = round(share / (1 - share) * len(train_rows))``. The task rows are kept whole and in order;
the mixed set is shuffled with the same seed, so the same inputs always give the same data.
"""

from __future__ import annotations

import random

from loraops.core import ConfigError, Layout, read_jsonl


def load_rehearsal_rows(layout: Layout) -> list[dict]:
    """The rehearsal pairs the ``rehearsal`` stage wrote (``data/rehearsal/answers.jsonl``); ``[]`` before it ran,
    which :func:`mix_rehearsal` turns into a clear error when a share needs them."""
    return read_jsonl(layout.rehearsal_answers) if layout.rehearsal_answers.is_file() else []


def rehearsal_count(train_rows: int, share: float) -> int:
    """How many rehearsal rows make up ``share`` of a set with ``train_rows`` task rows."""
    if not 0 <= share < 1:
        raise ConfigError(f"train.rehearsal.share {share}: must be in [0, 1)")
    return round(share / (1 - share) * train_rows)


def mix_rehearsal(train_rows: list[dict], rehearsal_rows: list[dict], share: float, seed: int) -> list[dict]:
    """``train_rows`` plus rehearsal rows making up ``share`` of the result, shuffled by ``seed``."""
    count = rehearsal_count(len(train_rows), share)
    if count == 0:
        return list(train_rows)
    if not rehearsal_rows:
        raise ConfigError(f"train.rehearsal.share is {share} but there are no rehearsal answers; run the "
                          "rehearsal stage first")
    rng = random.Random(seed)
    order = list(range(len(rehearsal_rows)))
    drawn: list[dict] = []
    while len(drawn) < count:
        rng.shuffle(order)
        drawn += [rehearsal_rows[i] for i in order[:count - len(drawn)]]
    mixed = list(train_rows) + drawn
    rng.shuffle(mixed)
    return mixed
