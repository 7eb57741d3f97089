"""Turn Great Expectations results into :class:`Failure` s that name the problem, the rows and examples."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from great_expectations.core.expectation_validation_result import ExpectationValidationResult
from great_expectations.expectations.metadata_types import FailureSeverity

from loraops.config import ValidateParams
from loraops.validation.frames import Frames
from loraops.validation.report import MAX_EXAMPLES, Failure
from loraops.validation.suites import REQUIRED_COLUMNS, TABLE_OF, TOLERANT_CHECKS

_VALUE_CHARS = 200


def _value(value: Any) -> str:
    if isinstance(value, str):
        return value[:_VALUE_CHARS]
    return f"{value!r} ({type(value).__name__})"


def _row_list(rows: list[int], total: int) -> str:
    shown = ", ".join(str(r) for r in rows[:MAX_EXAMPLES])
    more = f", ... ({total} in all)" if total > len(rows[:MAX_EXAMPLES]) else ""
    return f"row{'s' if total != 1 else ''} {shown}{more}"


def _n(count: int, noun: str = "row") -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _pct(share: float) -> str:
    return f"{share * 100:.2f}%".replace(".00%", "%")


class _Reader:
    """Reads one expectation result against the frames it was computed on."""

    def __init__(self, result: ExpectationValidationResult, frames: Frames):
        self.result, self.frames = result, frames
        self.config = result.expectation_config
        self.info: dict = result.result or {}
        self.kwargs: dict = dict(self.config.kwargs)
        self.count = int(self.info.get("unexpected_count") or 0)
        # Positions (the tables' default index) of the first offending rows; GX gives at most
        # PARTIAL_UNEXPECTED of them (see gx_run), the count is always complete.
        self.positions = [int(i) for i in self.info.get("partial_unexpected_index_list") or []
                          if isinstance(i, (int, np.integer))]

    def index_values(self, table: pd.DataFrame, column: str) -> list[int]:
        """The offending rows' ``column`` (the table's index column, such as ``row`` or ``first_row``)."""
        return [int(table[column].iat[i]) for i in self.positions if 0 <= i < len(table)]

    @property
    def rows(self) -> list[int]:
        """The 1-based dataset rows of the first offending rows (a result on the rows table)."""
        return self.index_values(self.frames.rows, "row")

    @property
    def name(self) -> str:
        column = self.kwargs.get("column") or ", ".join(self.kwargs.get("column_list") or
                                                        self.kwargs.get("column_set") or [])
        return f"{self.config.type}({column})" if column else self.config.type

    def examples(self, column: str) -> list[tuple[int, str]]:
        frame = self.frames.rows
        source = column if column in frame else "text" if "text" in frame else None
        if source is None:
            return [(r, "") for r in self.rows[:MAX_EXAMPLES]]
        return [(r, _value(frame.at[r - 1, source])) for r in self.rows[:MAX_EXAMPLES]]

    def grouped_examples(self, key: str) -> list[tuple[int, str]]:
        """Examples with the rows of one duplicate/leak group side by side, each prefixed by its split."""
        frame = self.frames.rows
        first: dict = {}
        for row in self.rows:
            first.setdefault(frame.at[row - 1, key], row)
        ordered = sorted(self.rows, key=lambda row: (first[frame.at[row - 1, key]], row))
        return [(row, f"[{frame.at[row - 1, 'split_key']}] {_value(frame.at[row - 1, 'text'])}")
                for row in ordered[:MAX_EXAMPLES]]

    def observed(self) -> Any:
        return self.info.get("observed_value")


def _rows_message(check: str, r: _Reader, params: ValidateParams) -> tuple[str, str, int, list]:
    column = r.kwargs.get("column", "text")
    n, where = r.count, _row_list(r.rows, r.count)
    total = len(r.frames.rows)
    if check == "columns":
        have = ", ".join(r.frames.columns) or "none"
        missing = [c for c in REQUIRED_COLUMNS if c not in r.frames.columns]
        return r.name, f"required column(s) missing: {', '.join(missing)} (records have: {have})", total, []
    if check == "row_count":
        return r.name, f"only {_n(r.observed() or 0)}; validate.min_rows is {params.min_rows}", r.observed() or 0, []
    if check == "label_count":
        labels = list(r.frames.labels["label"])
        found = f" ({', '.join(repr(x) for x in labels[:5])})" if labels else ""
        return (r.name, f"only {r.observed()} distinct label(s){found}; a classifier needs at least "
                f"{params.min_labels} (validate.min_labels)", total, [])
    texts = {
        "null": f"{column} is null (missing) in {n} of {_n(total)}: {where}",
        "type": f"{column} is not a string in {_n(n)}: {where}",
        "blank": f"{column} is empty or whitespace-only in {_n(n)}: {where}",
        "control": f"{column} contains control characters in {_n(n)}: {where}",
        "replacement": f"{column} contains U+FFFD replacement characters (invalid UTF-8 in the source) in "
                       f"{_n(n)}: {where}",
        "chars": f"text longer than validate.max_text_chars={params.max_text_chars} characters in {_n(n)}: {where}",
        "tokens": f"text longer than validate.max_text_tokens={params.max_text_tokens} tokens in {_n(n)}: {where}",
        "split": f"split is not one of train/val/test in {_n(n)}: {where}",
        "format": f"{column} contains invisible format characters (zero-width, bidirectional controls) in "
                  f"{_n(n)}: {where}",
        "special_token": f"{column} contains one of the tokenizer's special-token strings in {_n(n)}: {where}",
        "multiline": f"label spans more than one line in {_n(n)} (the evaluator reads the first line of an "
                     f"answer): {where}",
    }
    if check in texts:
        examples = r.examples("split" if check == "split" else "text")
        if column == "label" or check in ("split", "multiline"):  # the offending value, then the text of its row
            shown = "split" if check == "split" else "label"
            examples = [(row, f"[{shown} {_value(r.frames.rows.at[row - 1, shown])}] {text}") for row, text in examples]
        if check in ("chars", "tokens"):
            measure = "text_chars" if check == "chars" else "text_tokens"
            examples = [(row, f"[{int(r.frames.rows.at[row - 1, measure])} {check}] {text}")
                        for row, text in examples]
        return r.name, texts[check], n, examples
    if check == "new_labels":
        new = sorted({str(v) for v in r.info.get("partial_unexpected_list") or []})
        hint = "" if params.allow_new_labels else " (set validate.allow_new_labels to accept)"
        return ("unknown label vs previous version",
                f"{_n(n)} carry label(s) not in the previous version: {', '.join(map(repr, new))}{hint}; {where}",
                n, [(row, f"[label {r.frames.rows.at[row - 1, 'label']}] {text}") for row, text in r.examples("text")])
    share = float(r.info.get("unexpected_percent") or 0.0) / 100
    if check == "label_in_text":
        return ("target leakage (label in text)",
                f"{_n(n)} ({_pct(share)} of rows) contain their own label verbatim in the text; a model can copy "
                f"the answer (validate.max_label_in_text_share is {_pct(params.max_label_in_text_share)}): {where}",
                n, [(row, f"[label {r.frames.rows.at[row - 1, 'label']}] {text}") for row, text in r.examples("text")])
    if check in ("dup_exact", "dup_normalised"):
        kind = "exact" if check == "dup_exact" else "normalised"
        how = "" if kind == "exact" else " after normalisation (case, whitespace, punctuation)"
        return (f"duplicates within a split ({kind})",
                f"{_n(n)} are duplicates{how} of another row in the same split ({_pct(share)} of rows, "
                f"validate.max_duplicate_share is {_pct(params.max_duplicate_share)}): {where}", n,
                r.grouped_examples("text_exact" if kind == "exact" else "text_normalised"))
    if check in ("leak_exact", "leak_normalised"):
        kind = "exact" if check == "leak_exact" else "normalised"
        pairs = sorted({str(v) for v in r.info.get("partial_unexpected_list") or [] if v})
        how = "the same text" if kind == "exact" else "the same text after normalisation"
        return (f"{', '.join(pairs) or 'split'} leakage ({kind})",
                f"{_n(n)} have {how} in more than one split ({', '.join(pairs)}; {_pct(share)} of rows, "
                f"validate.max_leakage_share is {_pct(params.max_leakage_share)}): {where}", n,
                r.grouped_examples("text_exact" if kind == "exact" else "text_normalised"))
    if check == "length_shift":
        before = float(r.config.meta.get("previous_mean") or 0.0)
        now = float(r.observed() or 0.0)
        change = abs(now - before) / before if before else 0.0
        return ("text length shift",
                f"mean text length changed by {_pct(change)} ({before:.1f} -> {now:.1f} characters) vs the previous "
                f"version; validate.max_length_shift is {_pct(params.max_length_shift)}", total, [])
    return r.name, f"{r.name} failed on {_n(n)}: {where}", n, r.examples("text")


def _labels_message(check: str, r: _Reader, params: ValidateParams) -> tuple[str, str, int, list]:
    labels = r.frames.labels.set_index("first_row")
    firsts = r.index_values(r.frames.labels, "first_row")
    bad = labels.loc[[f for f in firsts if f in labels.index]]
    rows = int(bad["train_count"].sum())
    listing = ", ".join(f"{label!r} ({count})" for label, count in zip(bad["label"], bad["train_count"]))
    more = f" and {r.count - len(bad)} more" if r.count > len(bad) else ""
    examples = [(int(f), f"{label}: {count} training examples")
                for f, label, count in zip(bad.index[:MAX_EXAMPLES], bad["label"], bad["train_count"])]
    if check == "label_collision":
        pairs = ", ".join(f"{label!r} ~ {other}" for label, other in zip(bad["label"], bad["collides_with"]))
        return ("labels that normalise alike",
                f"{r.count} label(s) cannot be told apart after the evaluator's answer normalisation (case, "
                f"surrounding whitespace and punctuation, spaces and hyphens): {pairs}; rename or merge them",
                int(bad["rows"].sum()), [(int(f), f"{label}: same as {other}") for f, label, other in
                                         zip(bad.index[:MAX_EXAMPLES], bad["label"], bad["collides_with"])])
    if check == "few_examples":
        return ("min examples per label",
                f"{r.count} label(s) have fewer than validate.min_examples_per_label={params.min_examples_per_label} "
                f"training examples: {listing}{more}", rows, examples)
    largest = r.frames.labels.sort_values("train_count").iloc[-1]
    ratio = float(bad["imbalance"].max()) if len(bad) else 0.0
    return ("class imbalance",
            f"class imbalance {ratio:.1f} exceeds validate.max_imbalance_ratio={params.max_imbalance_ratio:g}: "
            f"largest label {largest['label']!r} has {int(largest['train_count'])} training examples, "
            f"{listing}{more}", rows, examples)


def _splits_message(r: _Reader, params: ValidateParams) -> tuple[str, str, int, list]:
    splits = r.frames.splits
    small = splits[splits["rows"] < params.min_rows_per_split]
    listing = ", ".join(f"{name} ({count})" for name, count in zip(small["split"], small["rows"]))
    examples = [(int(f), f"{name}: {count} rows") for f, name, count in
                zip(small["first_row"], small["split"], small["rows"])]
    return ("split sizes", f"{len(small)} split(s) have fewer than validate.min_rows_per_split="
            f"{params.min_rows_per_split} rows: {listing}", int(small["rows"].sum()), examples)


def _shift_message(r: _Reader, params: ValidateParams) -> tuple[str, str, int, list]:
    shift = r.frames.shift
    moved = shift.assign(diff=(shift["share"] - shift["previous_share"]).abs()).sort_values("diff", ascending=False)
    top = ", ".join(f"{label!r} {_pct(before)} -> {_pct(now)}" for label, before, now in
                    zip(moved["label"][:3], moved["previous_share"][:3], moved["share"][:3]))
    first = dict(zip(r.frames.labels["label"], r.frames.labels["first_row"]))
    examples = [(int(first[label]), f"{label}: {_pct(before)} -> {_pct(now)} of rows")
                for label, before, now in zip(moved["label"], moved["previous_share"], moved["share"])
                if label in first][:MAX_EXAMPLES]
    return ("label distribution shift",
            f"label distribution shifted by total variation distance {float(r.observed() or 0):.3f} vs the previous "
            f"version (validate.max_label_shift is {params.max_label_shift:g}); largest moves: {top}",
            len(r.frames.rows), examples)


def _exception(info: dict | None) -> str | None:
    """The message of an exception GX caught while computing an expectation (flat or per metric), if any."""
    info = info or {}
    found = [info] + [v for v in info.values() if isinstance(v, dict)]
    for item in found:
        if item.get("raised_exception"):
            return (str(item.get("exception_message") or "error").splitlines() or ["error"])[0]
    return None


def interpret(results: dict, frames: Frames, params: ValidateParams) -> list[Failure]:
    """Failures in suite order (table-level checks first); successes with offending rows become warnings."""
    ordered: list[tuple[tuple[int, int], Failure]] = []
    columns_missing = any(c not in frames.columns for c in REQUIRED_COLUMNS)
    tables = list(dict.fromkeys(TABLE_OF.get(batch, batch) for batch in results))
    for batch, suite_result in results.items():
        position = tables.index(TABLE_OF.get(batch, batch))
        for result in suite_result.results:
            reader = _Reader(result, frames)
            check = reader.config.meta.get("check", reader.config.type)
            key = (position, int(reader.config.meta.get("order", 0)))
            if check == "columns" and not len(frames.rows):
                continue  # no rows at all: the row count says it; there are no columns to speak of
            error = _exception(result.exception_info)
            if error is not None:
                if not columns_missing:  # else the columns check reports it: checks on a missing column cannot run
                    ordered.append((key, Failure(reader.name, f"check could not run: {error}", 0, [])))
                continue
            if result.success and not (check in TOLERANT_CHECKS and reader.count):
                continue
            warn = reader.config.severity == FailureSeverity.WARNING or result.success
            if batch == "loraops_labels":
                name, message, rows, examples = _labels_message(check, reader, params)
            elif batch == "loraops_splits":
                name, message, rows, examples = _splits_message(reader, params)
            elif batch == "loraops_shift":
                name, message, rows, examples = _shift_message(reader, params)
            else:
                name, message, rows, examples = _rows_message(check, reader, params)
            ordered.append((key, Failure(name, message, int(rows), examples, "warning" if warn else "error")))
    return [failure for _, failure in sorted(ordered, key=lambda item: item[0])]
