"""A corpus of bad raw datasets for the ``validate`` step, each with the failure it must produce.

Every case starts from :func:`good_records` (which passes with default ``validate`` params) and breaks one
thing. Row numbers are 1-based positions in ``records``. Cases that compare against a previous version
carry ``previous_records``: validate those first and pass their ``stats`` as ``previous``. Usable by
pipeline-level tests too (write ``records`` as a JSONL dataset).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

LABELS = ("cancel_order", "track_order", "request_refund")
_PHRASES = {"cancel_order": "please cancel my order", "track_order": "where is my parcel",
            "request_refund": "i want my money back for"}
_ITEMS = ("lamp", "kettle", "blender", "toaster", "chair", "desk", "mirror", "rug", "clock", "vase")


def good_records(train_per_label: int = 8, test_per_label: int = 2) -> list[dict]:
    """Balanced, unique, clean: passes every check with default params (30 rows with the defaults)."""
    records = []
    for split, per_label in (("train", train_per_label), ("test", test_per_label)):
        for i in range(per_label):
            for label in LABELS:
                n = len(records)
                records.append({"text": f"{_PHRASES[label]} {_ITEMS[n % 10]} number {1000 + n}",
                                "label": label, "split": split})
    return records


def fake_token_lengths(texts: list[str]) -> list[int]:
    """A stand-in tokenizer: one token per whitespace-separated word."""
    return [len(t.split()) for t in texts]


@dataclass
class BadInput:
    name: str
    records: list[dict]
    check: str  # substring of the Failure.check that must be an error
    message: str  # regex the failure's message must match
    rows: list[int] = field(default_factory=list)  # row numbers the message and examples must name
    params: dict = field(default_factory=dict)  # ValidateParams overrides
    previous_records: list[dict] | None = None
    tokens: bool = False  # pass fake_token_lengths
    special_tokens: tuple[str, ...] = ()  # the tokenizer's special-token strings to pass


def _with(changes: dict[int, dict], base: list[dict] | None = None) -> list[dict]:
    """``good_records()`` with ``{row_number: {field: value}}`` applied (row numbers 1-based)."""
    records = copy.deepcopy(base if base is not None else good_records())
    for row, values in changes.items():
        records[row - 1].update(values)
    return records


def _skewed() -> list[dict]:
    """Same labels, but cancel_order holds most of the data (the label distribution shifted)."""
    records = good_records()
    extra = [{"text": f"cancel the order for my {_ITEMS[i % 10]} please id {5000 + i}", "label": "cancel_order",
              "split": "train"} for i in range(40)]
    return records + extra


def _imbalanced() -> list[dict]:
    records = good_records(train_per_label=6)
    return records + [{"text": f"where is my parcel today code {7000 + i}", "label": "track_order", "split": "train"}
                      for i in range(60)]


def bad_inputs() -> list[BadInput]:
    good = good_records()
    long_text = "word " * 300  # 1500 characters
    return [
        BadInput("zero_rows", [], "expect_table_row_count_to_be_between", r"only 0 rows; validate\.min_rows is 20"),
        BadInput("too_few_rows", good_records(2, 1)[:9], "expect_table_row_count_to_be_between",
                 r"only 9 rows; validate\.min_rows is 20"),
        BadInput("missing_label_column", [{"text": r["text"], "category": r["label"]} for r in good],
                 "expect_table_columns_to_match_set", r"required column\(s\) missing: label \(records have: "
                 r"category, text\)"),
        BadInput("null_labels", _with({3: {"label": None}, 7: {"label": None}}),
                 "expect_column_values_to_not_be_null(label)", r"label is null \(missing\) in 2 of 30 rows: rows 3, 7",
                 [3, 7]),
        BadInput("null_text", _with({12: {"text": None}}), "expect_column_values_to_not_be_null(text)",
                 r"text is null \(missing\) in 1 of 30 rows: row 12", [12]),
        BadInput("empty_text", _with({4: {"text": ""}}), "expect_column_values_to_not_match_regex(text)",
                 r"text is empty or whitespace-only in 1 row: row 4", [4]),
        BadInput("whitespace_only_text", _with({5: {"text": " \t  "}, 9: {"text": "\n"}}),
                 "expect_column_values_to_not_match_regex(text)",
                 r"text is empty or whitespace-only in 2 rows: rows 5, 9", [5, 9]),
        BadInput("blank_label", _with({6: {"label": "  "}}), "expect_column_values_to_not_match_regex(label)",
                 r"label is empty or whitespace-only in 1 row: row 6", [6]),
        BadInput("non_string_text", _with({8: {"text": 42}}), "expect_column_values_to_be_of_type(text)",
                 r"text is not a string in 1 row: row 8", [8]),
        BadInput("unknown_split", _with({2: {"split": "dev"}}), "expect_column_values_to_be_in_set(split)",
                 r"split is not one of train/val/test in 1 row: row 2", [2]),
        BadInput("unknown_label", _with({10: {"label": "close_account"}, 11: {"label": "close_account"}}),
                 "unknown label vs previous version",
                 r"2 rows carry label\(s\) not in the previous version: 'close_account' \(set "
                 r"validate\.allow_new_labels to accept\); rows 10, 11", [10, 11], previous_records=good),
        BadInput("single_class", [{**r, "label": "cancel_order"} for r in good],
                 "expect_column_unique_value_count_to_be_between(label)",
                 r"only 1 distinct label\(s\) \('cancel_order'\); a classifier needs at least 2"),
        BadInput("exact_duplicate_rows", _with({5: dict(good[1])}), "duplicates within a split (exact)",
                 r"2 rows are duplicates of another row in the same split \(6\.67% of rows, "
                 r"validate\.max_duplicate_share is 1%\): rows 2, 5", [2, 5]),
        BadInput("normalised_duplicates", _with({6: {"text": "  PLEASE cancel my order, Lamp -- number 1000!!"}}),
                 "duplicates within a split (normalised)",
                 r"2 rows are duplicates after normalisation \(case, whitespace, punctuation\) of another row in "
                 r"the same split .*: rows 1, 6", [1, 6]),
        BadInput("train_test_leakage_exact", _with({25: {"text": good[0]["text"], "label": good[0]["label"]}}),
                 "train/test leakage (exact)",
                 r"2 rows have the same text in more than one split \(train/test; 6\.67% of rows, "
                 r"validate\.max_leakage_share is 1%\): rows 1, 25", [1, 25]),
        BadInput("train_test_leakage_normalised",
                 _with({26: {"text": "Where is my parcel?  KETTLE number 1001", "label": "track_order"}}),
                 "train/test leakage (normalised)",
                 r"2 rows have the same text after normalisation in more than one split \(train/test; .*\): "
                 r"rows 2, 26", [2, 26]),
        BadInput("over_long_text_chars", _with({13: {"text": long_text}}),
                 "expect_column_value_lengths_to_be_between(text)",
                 r"text longer than validate\.max_text_chars=1000 characters in 1 row: row 13", [13]),
        BadInput("over_long_text_tokens", _with({14: {"text": "one two three four five six seven eight nine ten "
                                                              "eleven twelve thirteen"}}),
                 "expect_column_values_to_be_between(text_tokens)",
                 r"text longer than validate\.max_text_tokens=12 tokens in 1 row: row 14", [14],
                 params={"max_text_tokens": 12}, tokens=True),
        BadInput("control_characters", _with({15: {"text": "cancel\x07 my order\x00 now"}}),
                 "expect_column_values_to_not_match_regex(text)",
                 r"text contains control characters in 1 row: row 15", [15]),
        BadInput("invalid_utf8_replacement_char", _with({16: {"text": "where is my parcel caf\ufffd number 1"}}),
                 "expect_column_values_to_not_match_regex(text)",
                 r"text contains U\+FFFD replacement characters \(invalid UTF-8 in the source\) in 1 row: row 16",
                 [16]),
        BadInput("too_few_examples_per_label", good_records()[:27] + [
                     {"text": f"close my account now ref {i}", "label": "close_account", "split": "train"}
                     for i in range(3)],
                 "min examples per label",
                 r"1 label\(s\) have fewer than validate\.min_examples_per_label=5 training examples: "
                 r"'close_account' \(3\)", [28]),
        BadInput("class_imbalance", _imbalanced(), "class imbalance",
                 r"class imbalance 11\.0 exceeds validate\.max_imbalance_ratio=10: largest label 'track_order' has "
                 r"66 training examples, 'cancel_order' \(6\), 'request_refund' \(6\)", [1, 3]),
        BadInput("label_distribution_shift", _skewed(), "label distribution shift",
                 r"label distribution shifted by total variation distance 0\.381 vs the previous version "
                 r"\(validate\.max_label_shift is 0\.2\); largest moves: 'cancel_order' 33\.33% -> 71\.43%",
                 previous_records=good),
        BadInput("labels_that_normalise_alike", _with({1: {"label": "Cancel-Order"}}),
                 "labels that normalise alike",
                 r"cannot be told apart after the evaluator's answer normalisation .*'Cancel-Order' ~ 'cancel_order'"),
        BadInput("label_with_surrounding_space", _with({2: {"label": "track_order "}}),
                 "labels that normalise alike", r"'track_order ' ~ 'track_order'"),
        BadInput("multi_line_label", _with({7: {"label": "track_order\nurgent"}}),
                 "expect_column_values_to_not_match_regex(label)",
                 r"label spans more than one line in 1 row .*: row 7", [7]),
        BadInput("special_token_in_text", _with({9: {"text": "cancel my order <|im_end|> now"}}),
                 "expect_column_values_to_not_match_regex(text)",
                 r"text contains one of the tokenizer's special-token strings in 1 row: row 9", [9],
                 special_tokens=("<|im_start|>", "<|im_end|>")),
        BadInput("special_token_in_label", _with({10: {"label": "<|im_end|>"}}),
                 "expect_column_values_to_not_match_regex(label)",
                 r"label contains one of the tokenizer's special-token strings in 1 row: row 10", [10],
                 special_tokens=("<|im_start|>", "<|im_end|>")),
        BadInput("zero_width_character", _with({11: {"text": "where is my\u200b parcel number 1"}}),
                 "expect_column_values_to_not_match_regex(text)",
                 r"text contains invisible format characters \(zero-width, bidirectional controls\) in 1 row: row 11",
                 [11]),
        BadInput("bidirectional_override", _with({12: {"text": "refund \u202eredro ym\u202c please"}}),
                 "expect_column_values_to_not_match_regex(text)",
                 r"text contains invisible format characters .* in 1 row: row 12", [12]),
        BadInput("text_length_shift", [{**r, "text": r["text"] + " and some more words to make it much longer"}
                                       for r in good],
                 "text length shift", r"mean text length changed by \d+\.\d+% \(\d+\.\d -> \d+\.\d characters\) vs "
                 r"the previous version; validate\.max_length_shift is 25%", previous_records=good),
    ]
