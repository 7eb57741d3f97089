"""The expectation suites, generated from ``validate`` params (and the previous version's profile).

Every expectation carries ``meta.check``, the id :mod:`loraops.validation.results` turns into a message,
and ``notes`` that say in words what it guards against (shown in the Data Docs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.expectations.metadata_types import FailureSeverity

from loraops.config import ValidateParams
from loraops.validation.frames import SPLITS, Frames

REQUIRED_COLUMNS = ("text", "label")
# C0 controls other than tab/newline/carriage return, DEL and the C1 controls.
CONTROL_REGEX = r"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]"
REPLACEMENT_REGEX = r"\uFFFD"
# Invisible format characters: soft hyphen, zero-width space/joiners/marks, bidirectional embeddings,
# overrides and isolates, word joiner and invisible operators, the byte-order mark.
FORMAT_REGEX = r"[\u00AD\u061C\u180E\u200B-\u200F\u202A-\u202E\u2060-\u2064\u2066-\u206F\uFEFF]"
LINE_BREAK_REGEX = r"[\n\r\u2028\u2029\x85]"
BLANK_REGEX = r"^\s*$"
# Checks whose bound is a share of rows: any offending row below the bound is still reported, as a warning.
TOLERANT_CHECKS = ("dup_exact", "dup_normalised", "leak_exact", "leak_normalised")


ROWS_TABLE = "loraops_rows"
TOKENS_TABLE = "loraops_tokens"  # the rows' token counts: a check of the rows, in a table of its own
TABLE_OF = {TOKENS_TABLE: ROWS_TABLE}  # whose checks a table's are, for the order of the findings


@dataclass
class Batch:
    name: str  # the data asset, suite, validation definition and checkpoint are all called this
    frame: pd.DataFrame | Callable[[], pd.DataFrame]  # a callable gives it when its validation begins
    expectations: list[gxe.Expectation]

    def data(self) -> pd.DataFrame:
        return self.frame() if callable(self.frame) else self.frame


def _meta(check: str, notes: str, **extra) -> dict:
    return {"meta": {"check": check, **extra}, "notes": notes}


def _severity(warn: bool) -> FailureSeverity:
    return FailureSeverity.WARNING if warn else FailureSeverity.CRITICAL


def special_token_regex(tokens: list[str] | tuple[str, ...]) -> str | None:
    """A regex matching any of the tokenizer's special-token strings (None when there are none)."""
    usable = sorted({t for t in tokens if t and t.strip() and len(t) > 1}, key=len, reverse=True)
    return "|".join(re.escape(t) for t in usable) or None


def rows_expectations(params: ValidateParams, frames: Frames, previous: dict | None,
                      special_tokens: tuple[str, ...] = ()) -> list[gxe.Expectation]:
    dup_mostly = 1.0 - params.max_duplicate_share
    leak_mostly = 1.0 - params.max_leakage_share
    out: list[gxe.Expectation] = [
        gxe.ExpectTableColumnsToMatchSet(column_set=list(REQUIRED_COLUMNS), exact_match=False,
                                         **_meta("columns", "Every record has a text and a label.")),
        gxe.ExpectTableRowCountToBeBetween(min_value=params.min_rows,
                                           **_meta("row_count", "validate.min_rows: enough rows to train on.")),
    ]
    for column in REQUIRED_COLUMNS:
        out += [
            gxe.ExpectColumnValuesToNotBeNull(column=column, **_meta("null", f"No record lacks its {column}.")),
            gxe.ExpectColumnValuesToBeOfType(column=column, type_="str",
                                             **_meta("type", f"The {column} is a string.")),
            gxe.ExpectColumnValuesToNotMatchRegex(column=column, regex=BLANK_REGEX,
                                                  **_meta("blank", f"The {column} is not empty after stripping.")),
            gxe.ExpectColumnValuesToNotMatchRegex(
                column=column, regex=CONTROL_REGEX,
                **_meta("control", f"The {column} holds no control characters (tab and newline are allowed).")),
            gxe.ExpectColumnValuesToNotMatchRegex(
                column=column, regex=REPLACEMENT_REGEX,
                **_meta("replacement", f"The {column} holds no U+FFFD, the mark of invalid UTF-8 in the source.")),
            gxe.ExpectColumnValuesToNotMatchRegex(
                column=column, regex=FORMAT_REGEX,
                **_meta("format", f"The {column} holds no invisible format characters (zero-width characters, "
                        "bidirectional controls): they make texts that look alike differ, or hide text.")),
        ]
        special = special_token_regex(special_tokens)
        if special is not None:
            out.append(gxe.ExpectColumnValuesToNotMatchRegex(
                column=column, regex=special,
                **_meta("special_token", f"The {column} holds none of the tokenizer's special-token strings "
                        "(they would end or restructure the chat turn).")))
    out.append(gxe.ExpectColumnValuesToNotMatchRegex(
        column="label", regex=LINE_BREAK_REGEX,
        **_meta("multiline", "A label is one line: the evaluator reads only the first line of an answer.")))
    out += [
        gxe.ExpectColumnValueLengthsToBeBetween(column="text", max_value=params.max_text_chars,
                                                **_meta("chars", "validate.max_text_chars, in characters.")),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS),
                                        **_meta("split", "A split, when given, is train, val or test.")),
        gxe.ExpectColumnUniqueValueCountToBeBetween(column="label", min_value=params.min_labels,
                                                    **_meta("label_count", "validate.min_labels distinct labels.")),
    ]
    if frames.has_tokens:
        out.append(gxe.ExpectColumnValuesToBeBetween(
            column="text_tokens", max_value=params.max_text_tokens,
            **_meta("tokens", "validate.max_text_tokens, counted with the base model's tokenizer.")))
    known = sorted((previous or {}).get("labels") or {})
    if known:
        out.append(gxe.ExpectColumnValuesToBeInSet(
            column="label", value_set=known, severity=_severity(params.allow_new_labels),
            **_meta("new_labels", "Labels of the previous validated version only, unless "
                    "validate.allow_new_labels (then a new label is a warning).")))
    out += [
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=["split_key", "text_exact"], ignore_row_if="any_value_is_missing", mostly=dup_mostly,
            **_meta("dup_exact", "Exact duplicate texts within a split; validate.max_duplicate_share of rows "
                    "at most (any duplicate is a warning).")),
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=["split_key", "text_normalised"], ignore_row_if="any_value_is_missing",
            mostly=dup_mostly,
            **_meta("dup_normalised", "Duplicates within a split after normalisation (case-folded, punctuation "
                    "removed, whitespace collapsed); validate.max_duplicate_share at most.")),
        gxe.ExpectColumnValuesToBeNull(
            column="leak_exact", mostly=leak_mostly,
            **_meta("leak_exact", "Leakage: no text occurs in two of train/val/test (column names the splits); "
                    "validate.max_leakage_share at most.")),
        gxe.ExpectColumnValuesToBeNull(
            column="leak_normalised", mostly=leak_mostly,
            **_meta("leak_normalised", "Leakage after normalisation: no normalised text occurs in two splits; "
                    "validate.max_leakage_share at most.")),
    ]
    if "label_in_text" in frames.rows:
        out.append(gxe.ExpectColumnValuesToBeNull(
            column="label_in_text", mostly=1.0 - params.max_label_in_text_share, severity=FailureSeverity.WARNING,
            **_meta("label_in_text", "Target leakage: texts that contain their own label verbatim; more than "
                    "validate.max_label_in_text_share of rows is a warning.")))
    mean_before = ((previous or {}).get("text_chars") or {}).get("mean")
    if mean_before:
        out.append(gxe.ExpectColumnMeanToBeBetween(
            column="text_chars", min_value=mean_before * (1 - params.max_length_shift),
            max_value=mean_before * (1 + params.max_length_shift), severity=_severity(params.shift_action == "warn"),
            **_meta("length_shift", "Mean text length within validate.max_length_shift of the previous version's.",
                    previous_mean=mean_before)))
    return out


def labels_expectations(params: ValidateParams) -> list[gxe.Expectation]:
    return [
        gxe.ExpectColumnValuesToBeNull(
            column="collides_with",
            **_meta("label_collision", "No two labels normalise alike (case, surrounding whitespace and punctuation, "
                    "spaces and hyphens): the evaluator and serving could not tell them apart.")),
        gxe.ExpectColumnValuesToBeBetween(
            column="train_count", min_value=params.min_examples_per_label,
            **_meta("few_examples", "validate.min_examples_per_label training examples for every label.")),
        gxe.ExpectColumnValuesToBeBetween(
            column="imbalance", max_value=params.max_imbalance_ratio,
            **_meta("imbalance", "validate.max_imbalance_ratio: the largest label's training count divided by "
                    "this label's.")),
    ]


def shift_expectations(params: ValidateParams) -> list[gxe.Expectation]:
    return [gxe.ExpectColumnSumToBeBetween(
        column="tvd_term", max_value=params.max_label_shift, severity=_severity(params.shift_action == "warn"),
        **_meta("label_shift", "Label distribution shift: total variation distance to the previous version "
                "(sum of |share - previous_share| / 2) at most validate.max_label_shift."))]


def splits_expectations(params: ValidateParams) -> list[gxe.Expectation]:
    return [gxe.ExpectColumnValuesToBeBetween(
        column="rows", min_value=params.min_rows_per_split,
        **_meta("split_size", "validate.min_rows_per_split rows in every split the source gives."))]


def build_batches(params: ValidateParams, frames: Frames, previous: dict | None,
                  special_tokens: tuple[str, ...] = ()) -> list[Batch]:
    """The tables with their suites, in the order they are validated. The token check is a table of its own,
    validated last: its counts may still be coming while the others are checked (see ``check``). Its ``order``
    is its place among the rows checks, so reports list it where it always was."""
    rows = rows_expectations(params, frames, previous, special_tokens)
    for order, expectation in enumerate(rows):
        expectation.meta["order"] = order  # GX may return results in another order; reports keep this one
    batches = [Batch(ROWS_TABLE, frames.rows, [e for e in rows if e.meta["check"] != "tokens"]),
               Batch("loraops_labels", frames.labels, labels_expectations(params))]
    if len(frames.splits):
        batches.append(Batch("loraops_splits", frames.splits, splits_expectations(params)))
    if frames.shift is not None:
        batches.append(Batch("loraops_shift", frames.shift, shift_expectations(params)))
    for batch in batches[1:]:
        for order, expectation in enumerate(batch.expectations):
            expectation.meta["order"] = order
    tokens = [e for e in rows if e.meta["check"] == "tokens"]
    if tokens:
        batches.append(Batch(TOKENS_TABLE, frames.tokens, tokens))
    return batches
