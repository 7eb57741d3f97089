"""The ``prepare`` stage: split the raw records and render them with the base model's chat template
(:mod:`loraops.data.prompts`).

Prepared rows keep the raw ``text``/``label`` beside the rendered ``prompt`` (everything up to the
assistant's turn) and ``completion`` (the answer plus end-of-turn token), so training can mask the
prompt and evaluation can generate from exactly the prompt training used.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

from loraops.config import PrepareParams
from loraops.core import DataError
from loraops.data import render_row
from loraops.validation import normalise_text


def _text_key(text: Any) -> str:
    """Rows with the same key are the same text for leakage (validation's normalisation, else exact)."""
    return (normalise_text(text) or f"exact:{text}") if isinstance(text, str) else f"exact:{text!r}"


def _stratified_take(rows: list[dict], fraction: float, rng: random.Random) -> tuple[list[dict], list[dict]]:
    """Split off ``fraction`` of each label (at least one item when a label has two or more).

    Rows whose texts are the same after validation's normalisation move together, so a split carved here
    never leaks a text into another split (validation cannot see these splits: they do not exist yet)."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(_text_key(row["text"]), []).append(row)
    by_label: dict[str, list[list[dict]]] = defaultdict(list)
    for group in groups.values():
        by_label[group[0]["label"]].append(group)
    kept, taken = [], []
    for label in sorted(by_label):
        label_groups = by_label[label][:]
        rng.shuffle(label_groups)
        total = sum(len(g) for g in label_groups)
        n = round(total * fraction)
        n = min(max(n, 1 if total > 1 else 0), total - 1)
        count = 0
        for index, group in enumerate(label_groups):
            if count < n and index < len(label_groups) - 1:  # never the label's last group
                taken += group
                count += len(group)
            else:
                kept += group
    return kept, taken


def leaked_texts(splits: dict[str, list[dict]]) -> int:
    """Rows whose text (normalised) occurs in another split too."""
    seen: dict[str, set[str]] = defaultdict(set)
    for name, rows in splits.items():
        for row in rows:
            seen[_text_key(row["text"])].add(name)
    return sum(1 for rows in splits.values() for row in rows if len(seen[_text_key(row["text"])]) > 1)


def clean_records(records: list[dict], params: PrepareParams) -> tuple[list[dict], dict[str, int]]:
    """Opt-in cleaning; returns the rows and counts of what changed, so a summary can report it."""
    counts = {"stripped": 0, "duplicates_dropped": 0}
    out, seen = [], set()
    for row in records:
        if params.strip_text and row["text"] != row["text"].strip():
            row = {**row, "text": row["text"].strip()}
            counts["stripped"] += 1
        key = (row["text"], row["label"], row["split"])
        if params.drop_duplicates and key in seen:
            counts["duplicates_dropped"] += 1
            continue
        seen.add(key)
        out.append(row)
    return out, counts


def split_records(records: list[dict], params: PrepareParams, seed: int) -> dict[str, list[dict]]:
    """Respect splits given by the source; carve missing test/val splits out of train, stratified."""
    rng = random.Random(seed)
    given = {r["split"] for r in records}
    if None in given and len(given) > 1:
        raise DataError("raw data mixes rows with and without a split; give every row a split or none")
    splits = {s: [r for r in records if r["split"] == s] for s in ("train", "val", "test")}
    if given == {None}:
        splits["train"] = list(records)
    if not splits["train"]:
        raise DataError("raw data has no training rows")
    if not splits["test"]:
        splits["train"], splits["test"] = _stratified_take(splits["train"], params.test_fraction, rng)
    if not splits["val"]:
        splits["train"], splits["val"] = _stratified_take(splits["train"], params.val_fraction, rng)
    for name, rows in splits.items():
        if not rows:
            raise DataError(f"split {name!r} is empty after splitting; add data or change prepare fractions")
        rng.shuffle(rows)
    return splits


def prepare(records: list[dict], tokenizer: Any, params: PrepareParams,
            seed: int) -> tuple[dict[str, list[dict]], list[str], dict]:
    """Return rendered splits, the label set and a summary (counts and lengths in tokens)."""
    records, cleaning = clean_records(records, params)
    splits = split_records(records, params, seed)
    labels = sorted({r["label"] for r in splits["train"]})
    rendered = {name: [render_row(r, labels, tokenizer, params) for r in rows] for name, rows in splits.items()}
    # Validation checked the splits the source gave; these are what training and evaluation use.
    summary: dict[str, Any] = {"labels": len(labels), "cleaning": cleaning, "leaked_rows": leaked_texts(splits)}
    for name, rows in rendered.items():
        lengths = [len(tokenizer(r["prompt"] + r["completion"], add_special_tokens=False)["input_ids"]) for r in rows]
        too_long = sum(n > params.max_length for n in lengths)
        if too_long:
            raise DataError(f"split {name!r}: {too_long} example(s) exceed prepare.max_length={params.max_length} "
                            f"tokens (longest {max(lengths)}); raise it rather than cut answers")
        summary[name] = {"rows": len(rows), "max_tokens": max(lengths), "mean_tokens": sum(lengths) / len(lengths)}
    return rendered, labels, summary
