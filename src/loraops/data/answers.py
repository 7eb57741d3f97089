"""Answers and labels: the one normalisation a model's answer is scored in, and the way back to the label.

Evaluation compares normalised answers with normalised labels; serving maps the normalised answer back to
the original label. Both are only sound when no two labels normalise alike, which the ``validate`` stage
checks (:func:`label_collisions`).
"""

from __future__ import annotations

import re

_EDGE_PUNCT = re.compile(r"^[\s\"'`.,:;!?()\[\]]+|[\s\"'`.,:;!?()\[\]]+$")


def normalise_answer(text: str) -> str:
    """First line, lower case, surrounding punctuation dropped, inner spaces/hyphens as '_'."""
    first = text.strip().split("\n", 1)[0] if text.strip() else ""
    return re.sub(r"[\s\-]+", "_", _EDGE_PUNCT.sub("", first.lower()))


def label_collisions(labels: list[str]) -> dict[str, list[str]]:
    """``{normalised form: [labels]}`` for every normalised form two or more distinct labels share."""
    groups: dict[str, list[str]] = {}
    for label in dict.fromkeys(labels):
        groups.setdefault(normalise_answer(label), []).append(label)
    return {form: found for form, found in groups.items() if len(found) > 1}


def label_for_answer(answer: str, labels: list[str]) -> str:
    """The original label whose normalised form the answer has; the normalised answer when it is none."""
    normalised = normalise_answer(answer)
    return {normalise_answer(label): label for label in labels}.get(normalised, normalised)
