"""The validate step: real Great Expectations suites reject each bad input with a message naming the problem
and its rows, and pass the demo data and CLINC150.

Each validation builds a fresh GX file context under tmp_path (about 0.5 s each on the 2-core box; the whole
file runs in about 40 s, most of it in the two CLINC150 cases).
"""

from __future__ import annotations

import copy
import json
import os
import re
import socket
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers.bad_inputs import BadInput, bad_inputs, fake_token_lengths, good_records
from tests.helpers.projects import CLINC150, REPO
from loraops.config import DataParams, Params, ValidateParams
from loraops.data.demo import generate_demo_dataset
from loraops.data.ingest import ingest
from loraops.validation import Failure, ValidationReport, normalise_text, validate_dataset

CASES = {case.name: case for case in bad_inputs()}


def _validate(tmp_path: Path, records: list[dict], name: str = "run", **kwargs) -> ValidationReport:
    return validate_dataset(records, kwargs.pop("params", ValidateParams()), tmp_path / name, **kwargs)


def _find(report: ValidationReport, check: str, severity: str = "error") -> Failure:
    found = [f for f in report.failures if check in f.check and f.severity == severity]
    assert found, f"no {severity} {check!r} in:\n{report.summary()}"
    return found[0]


_PREVIOUS: dict[str, dict] = {}  # stats of earlier versions, validated once per module


def _previous_stats(records: list[dict], tmp_path: Path) -> dict:
    key = json.dumps(records, sort_keys=True)
    if key not in _PREVIOUS:
        before = _validate(tmp_path, records, "previous")
        assert before.success, before.summary()
        _PREVIOUS[key] = json.loads(json.dumps(before.stats))  # as it comes back from a metrics/profile file
    return copy.deepcopy(_PREVIOUS[key])


def _run_case(case: BadInput, tmp_path: Path) -> tuple[ValidationReport, Failure]:
    previous = None if case.previous_records is None else _previous_stats(case.previous_records, tmp_path)
    report = _validate(tmp_path, case.records, "current", params=ValidateParams(**case.params), previous=previous,
                       token_lengths=fake_token_lengths if case.tokens else None, special_tokens=case.special_tokens)
    return report, _find(report, case.check)


def test_the_clean_base_of_the_corpus_passes_without_any_failure(tmp_path):
    report = _validate(tmp_path, good_records(), token_lengths=fake_token_lengths)
    assert report.success and report.failures == [], report.summary()


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_rejected_naming_the_problem_and_rows(name, tmp_path):
    case = CASES[name]
    report, failure = _run_case(case, tmp_path)
    assert not report.success
    assert re.search(case.message, failure.message), failure.message
    assert [row for row, _ in failure.examples][: len(case.rows)] == case.rows
    summary = report.summary()
    assert "FAILED" in summary and failure.check in summary and failure.message in summary
    for row in case.rows[:3]:
        assert f"row {row}:" in summary


def test_rows_count_and_examples_carry_the_offending_values(tmp_path):
    report, failure = _run_case(CASES["control_characters"], tmp_path)
    assert failure.rows == 1
    assert failure.examples == [(15, "cancel\x07 my order\x00 now")]
    assert r"row 15: cancel\x07 my order\x00 now" in report.summary()  # escaped, visible on a terminal
    _, nulls = _run_case(CASES["null_labels"], tmp_path / "nulls")
    assert nulls.rows == 2 and nulls.examples[0][1].startswith("[label None (NoneType)] ")


def test_tab_and_newline_inside_a_text_are_not_control_character_failures(tmp_path):
    records = good_records()
    records[0]["text"] = "cancel my order\tlamp\nnumber 1000"
    assert _validate(tmp_path, records).success


def test_normalised_duplicate_is_not_an_exact_duplicate(tmp_path):
    report, _ = _run_case(CASES["normalised_duplicates"], tmp_path)
    assert not [f for f in report.failures if "(exact)" in f.check]


def test_leakage_after_normalisation_is_not_exact_leakage(tmp_path):
    report, failure = _run_case(CASES["train_test_leakage_normalised"], tmp_path)
    assert not [f for f in report.failures if "leakage (exact)" in f.check]
    assert [value for _, value in failure.examples] == ["[train] where is my parcel kettle number 1001",
                                                         "[test] Where is my parcel?  KETTLE number 1001"]


def test_exact_duplicate_across_rows_without_a_split_also_counts(tmp_path):
    records = [{**r, "split": None} for r in good_records()]
    records[9]["text"] = records[0]["text"]
    failure = _find(_validate(tmp_path, records), "duplicates within a split (exact)")
    assert "rows 1, 10" in failure.message
    assert failure.examples[0][1].startswith("[(none)] ")


def test_duplicates_and_leakage_below_the_allowed_share_are_warnings_not_errors(tmp_path):
    records = good_records()
    records[4]["text"] = records[1]["text"]
    records[24]["text"] = records[0]["text"]
    report = _validate(tmp_path, records, params=ValidateParams(max_duplicate_share=0.1, max_leakage_share=0.1))
    assert report.success, report.summary()
    assert _find(report, "duplicates within a split (exact)", "warning").rows == 2
    assert _find(report, "train/test leakage (exact)", "warning").rows == 2
    assert "WARNING" in report.summary()


def test_token_check_runs_only_with_a_token_counter(tmp_path):
    case = CASES["over_long_text_tokens"]
    report = _validate(tmp_path, case.records, params=ValidateParams(**case.params))
    assert report.success and report.stats["text_tokens"] is None
    assert "text_tokens" not in (tmp_path / "run" / "suites" / "loraops_rows.json").read_text()


def test_new_label_is_a_warning_when_new_labels_are_allowed(tmp_path):
    case = CASES["unknown_label"]
    previous = _previous_stats(case.previous_records, tmp_path)
    records = case.records + [{"text": f"close my account please {i}", "label": "close_account", "split": "train"}
                              for i in range(5)]
    report = _validate(tmp_path, records, params=ValidateParams(allow_new_labels=True), previous=previous)
    assert report.success, report.summary()
    warning = _find(report, "unknown label vs previous version", "warning")
    assert "'close_account'" in warning.message and warning.rows == 7


def test_label_shift_warns_instead_of_failing_when_shift_action_is_warn(tmp_path):
    case = CASES["label_distribution_shift"]
    previous = _previous_stats(case.previous_records, tmp_path)
    report = _validate(tmp_path, case.records, params=ValidateParams(shift_action="warn"), previous=previous)
    assert report.success, report.summary()
    warning = _find(report, "label distribution shift", "warning")
    assert "total variation distance 0.381" in warning.message
    assert report.stats["shift"]["label_tvd"] == pytest.approx(0.381, abs=1e-3)
    loose = _validate(tmp_path, case.records, "loose", params=ValidateParams(max_label_shift=0.5), previous=previous)
    assert loose.success and not loose.failures, loose.summary()


def test_length_shift_warns_when_shift_action_is_warn(tmp_path):
    case = CASES["text_length_shift"]
    previous = _previous_stats(case.previous_records, tmp_path)
    report = _validate(tmp_path, case.records, params=ValidateParams(shift_action="warn"), previous=previous)
    assert report.success
    assert _find(report, "text length shift", "warning")
    assert report.stats["shift"]["mean_chars_change"] > 0.25


def test_first_version_has_no_shift_or_new_label_checks(tmp_path):
    report = _validate(tmp_path, CASES["label_distribution_shift"].records)
    assert report.success and "shift" not in report.stats
    assert sorted(p.name for p in (tmp_path / "run" / "suites").iterdir()) == [
        "loraops_labels.json", "loraops_rows.json", "loraops_splits.json"]  # no loraops_shift.json


def test_stats_profile_counts_splits_labels_and_lengths(tmp_path):
    records = good_records()
    records.append({"text": "where is my parcel vase number 77", "label": "track_order", "split": "val"})
    report = _validate(tmp_path, records, token_lengths=fake_token_lengths)
    stats = json.loads(json.dumps(report.stats))  # JSON-serialisable
    assert stats["rows"] == 31 and stats["splits"] == {"train": 24, "val": 1, "test": 6, "none": 0}
    assert stats["labels"] == {"cancel_order": 10, "track_order": 11, "request_refund": 10}
    assert stats["train_labels"] == {"cancel_order": 8, "track_order": 8, "request_refund": 8}
    assert stats["labels_by_split"]["val"] == {"track_order": 1}
    lengths = [len(r["text"]) for r in records]
    assert stats["text_chars"]["max"] == max(lengths) and stats["text_chars"]["min"] == min(lengths)
    assert stats["text_chars"]["mean"] == pytest.approx(sum(lengths) / len(lengths), abs=1e-3)
    assert stats["text_tokens"]["max"] == max(fake_token_lengths([r["text"] for r in records]))


def test_to_json_is_a_metrics_file_with_counts_and_every_failure(tmp_path):
    report, _ = _run_case(CASES["null_labels"], tmp_path)
    summary = json.loads(json.dumps(report.to_json()))
    assert summary["success"] is False and summary["errors"] == len(report.errors) >= 1
    assert summary["warnings"] == len(report.warnings)
    assert {"check": "expect_column_values_to_not_be_null(label)", "rows": 2, "severity": "error"}.items() <= \
        summary["failures"][0].items()
    assert summary["stats"]["rows"] == 30 and summary["stats"]["splits"]["train"] == 24
    assert summary["docs_index"] == str(report.docs_index)


def test_data_docs_and_suite_json_are_written_from_params(tmp_path):
    params = ValidateParams(min_rows=25, max_text_chars=321)
    report = _validate(tmp_path, CASES["null_labels"].records, params=params)
    assert report.docs_index is not None and report.docs_index.name == "index.html"
    index = report.docs_index.read_text()
    assert "loraops_rows" in index and "loraops_labels" in index
    pages = list((report.docs_index.parent / "validations" / "loraops_rows").rglob("*.html"))
    assert len(pages) == 1
    page = pages[0].read_text()
    assert "values must never be null" in page and "2 unexpected values found" in page
    suite = json.loads((tmp_path / "run" / "suites" / "loraops_rows.json").read_text())
    kinds = {(e["type"], e["kwargs"].get("column")) for e in suite["expectations"]}
    assert ("expect_column_values_to_not_be_null", "label") in kinds
    assert ("expect_compound_columns_to_be_unique", None) in kinds
    by_check = {e["meta"]["check"]: e["kwargs"] for e in suite["expectations"]}
    assert by_check["row_count"]["min_value"] == 25 and by_check["chars"]["max_value"] == 321
    # Re-validating in the same work_dir starts a fresh context: the docs show this run only.
    _validate(tmp_path, good_records(), params=params)
    assert len(list((report.docs_index.parent / "validations" / "loraops_rows").rglob("*.html"))) == 1


def test_validation_opens_no_network_connection(tmp_path, monkeypatch):
    attempts = []

    def refuse(sock, address):
        attempts.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    report, _ = _run_case(CASES["label_distribution_shift"], tmp_path)
    assert report.docs_index is not None and attempts == []
    assert os.environ["GX_ANALYTICS_ENABLED"] == "false"
    config = yaml.safe_load((tmp_path / "current" / "gx" / "great_expectations.yml").read_text())
    assert config["analytics_enabled"] is False


def test_normalisation_folds_case_whitespace_and_punctuation():
    assert normalise_text("  What's   the STATUS, of my flight?! ") == "whats the status of my flight"
    assert normalise_text("that’s incorrect") == normalise_text("that's incorrect!") == "thats incorrect"
    assert normalise_text("ｆｕｌｌ　width") == "full width"


def test_normalisation_of_ascii_texts_equals_the_unicode_definition():
    # ASCII texts take a translate() path; it must give what NFKC + casefold + the punctuation regex give.
    import random
    import unicodedata

    def reference(text: str) -> str:
        return " ".join(re.sub(r"[^\w\s]|_", "", unicodedata.normalize("NFKC", text).casefold()).split())

    rng = random.Random(0)
    texts = [chr(c) for c in range(128)] + ["".join(chr(rng.randrange(128)) for _ in range(rng.randrange(1, 40)))
                                            for _ in range(3000)]
    assert [normalise_text(t) for t in texts] == [reference(t) for t in texts]


def test_params_yaml_validate_group_matches_the_defaults():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert list(raw).index("validate") == list(raw).index("data") + 1
    assert ValidateParams(**raw["validate"]) == ValidateParams() == Params().validate


@pytest.mark.parametrize("sizes", [(30, 8), (6, 2)], ids=["default", "tiny"])
def test_demo_data_passes(sizes, tmp_path):
    records = generate_demo_dataset(seed=42, train_per_intent=sizes[0], test_per_intent=sizes[1])
    report = _validate(tmp_path, records, token_lengths=fake_token_lengths)
    assert report.success and report.failures == [], report.summary()
    assert report.stats["num_labels"] == 14


@pytest.mark.skipif(not CLINC150.is_file(), reason="CLINC150 not available")
def test_clinc150_one_domain_passes(tmp_path):
    records = ingest(DataParams(source="clinc150", path=str(CLINC150), clinc150_domains=["banking"]), REPO, 0)
    report = _validate(tmp_path, records, token_lengths=fake_token_lengths)
    assert report.success and not report.errors, report.summary()
    assert report.stats["num_labels"] == 15 and report.stats["splits"]["train"] == 1500


@pytest.mark.skipif(not CLINC150.is_file(), reason="CLINC150 not available")
def test_clinc150_all_intents_passes_and_reports_its_known_leaks_as_warnings(tmp_path):
    records = ingest(DataParams(source="clinc150", path=str(CLINC150)), REPO, 0)
    report = _validate(tmp_path, records, token_lengths=fake_token_lengths)
    assert report.success and not report.errors, report.summary()
    assert report.stats["num_labels"] == 150 and report.stats["rows"] == 22500
    # CLINC150 itself holds a few texts in two splits: surfaced, within the allowed share.
    leak = _find(report, "leakage (exact)", "warning")
    assert leak.rows == 10 and any(text == "[train] what is on my to do list" for _, text in leak.examples)
    strict = _validate(tmp_path, records, "strict", params=ValidateParams(max_leakage_share=0.0))
    assert not strict.success and _find(strict, "leakage (exact)").rows == 10


def test_a_split_smaller_than_configured_fails_and_names_the_split(tmp_path):
    records = good_records()
    train = [r for r in records if r["split"] == "train"]
    records = records + [dict(r, split="val", text=r["text"] + " (val copy)") for r in train[:3]]
    report = _validate(tmp_path, records, params=ValidateParams(min_rows_per_split=5, max_leakage_share=1.0))
    failure = _find(report, "split sizes")
    assert "val (3)" in failure.message and "min_rows_per_split=5" in failure.message
    assert failure.rows == 3 and not report.success
    assert _validate(tmp_path, records, "lenient", params=ValidateParams(min_rows_per_split=3,
                                                                          max_leakage_share=1.0)).success


def test_texts_that_contain_their_own_label_are_a_warning_with_the_share(tmp_path):
    records = good_records()
    for record in records[:20]:
        record["text"] = f"{record['label'].replace('_', ' ')}: {record['text']}"
    report = _validate(tmp_path, records)
    assert report.success, report.summary()  # a warning, not an error
    warning = _find(report, "target leakage (label in text)", "warning")
    assert re.search(r"20 rows \(66\.67% of rows\) contain their own label verbatim", warning.message), warning.message
    assert [row for row, _ in warning.examples][:3] == [1, 2, 3]
    few = good_records()
    few[0]["text"] = "cancel order " + few[0]["text"]
    assert not [f for f in _validate(tmp_path, few, "few").failures if "label in text" in f.check]


def test_texts_that_normalise_to_nothing_are_not_duplicates_of_each_other(tmp_path):
    records = good_records()
    for row, emoji in ((1, "\U0001F600"), (4, "\U0001F4E6\U0001F4E6"), (7, "\u2764\ufe0f")):
        records[row - 1]["text"] = emoji
    report = _validate(tmp_path, records)
    assert not [f for f in report.failures if "duplicates" in f.check], report.summary()
    records[9]["text"] = "\U0001F600"  # the same emoji twice in train is still an exact duplicate
    assert [f for f in _validate(tmp_path, records, "exact").failures if "duplicates within a split (exact)" in f.check]


def test_token_counter_counts_as_the_tokenizer_does_across_chunks(tiny_base, monkeypatch):
    # The counter asks the fast tokenizer's backend for lengths, chunk by chunk: the counts must be what the
    # tokenizer itself gives (no special tokens), in order, whatever the chunking.
    from loraops.modeling import load_tokenizer, loading, token_counter

    tokenizer = load_tokenizer(tiny_base)
    assert tokenizer.is_fast  # else this test would only check the fallback path
    texts = [r["text"] for r in good_records()] + ["", " ", "héllo wörld ｆｕｌｌ", "a\nb\tc", "x" * 3000, "😀😀"]
    expected = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    monkeypatch.setattr(loading, "TOKEN_COUNT_CHUNK", 7)
    assert token_counter(tokenizer)(texts) == expected


class _MeetingBackend:
    """A fast tokenizer's backend whose first two ``encode_batch`` calls wait for each other: they only meet
    when two chunks are tokenized at the same time (one after the other, the first waits in vain and fails)."""

    def __init__(self, backend, timeout: float = 20.0):
        import threading

        self.backend, self.lock, self.calls = backend, threading.Lock(), 0
        self.barrier = threading.Barrier(2, timeout=timeout)

    def encode_batch(self, texts, add_special_tokens):
        with self.lock:
            self.calls += 1
            meets = self.calls <= 2
        if meets:
            self.barrier.wait()
        return self.backend.encode_batch(texts, add_special_tokens=add_special_tokens)


def test_token_counter_tokenizes_chunks_at_the_same_time_and_leaves_no_thread_behind(tiny_base, monkeypatch):
    # The backend releases the GIL, so chunks counted in threads use every core; the threads are gone when the
    # call returns (a fork afterwards, a data loader's workers, finds none), and the counts are the tokenizer's.
    import threading
    from types import SimpleNamespace

    from loraops.modeling import load_tokenizer, loading, token_counter

    tokenizer = load_tokenizer(tiny_base)
    texts = [r["text"] for r in good_records()] * 3 + ["", "héllo wörld", "x" * 500]
    expected = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    monkeypatch.setattr(loading, "TOKEN_COUNT_CHUNK", 5)
    meeting = _MeetingBackend(tokenizer.backend_tokenizer)
    threads_before = threading.active_count()
    counts = token_counter(SimpleNamespace(is_fast=True, backend_tokenizer=meeting), threads=2)(texts)
    assert counts == expected
    assert meeting.calls == -(-len(texts) // 5) and not meeting.barrier.broken
    assert threading.active_count() == threads_before


def test_token_counter_with_one_thread_counts_chunk_by_chunk_in_the_callers_thread(tiny_base, monkeypatch):
    import threading
    from types import SimpleNamespace

    from loraops.modeling import load_tokenizer, loading, token_counter

    tokenizer = load_tokenizer(tiny_base)
    seen: set[int] = set()

    class Recording:
        def encode_batch(self, texts, add_special_tokens):
            seen.add(threading.get_ident())
            return tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=add_special_tokens)

    monkeypatch.setattr(loading, "TOKEN_COUNT_CHUNK", 4)
    texts = [r["text"] for r in good_records()]
    counted = token_counter(SimpleNamespace(is_fast=True, backend_tokenizer=Recording()), threads=1)(texts)
    assert counted == [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    assert seen == {threading.get_ident()}


def test_token_counting_overlaps_the_derived_text_columns(tmp_path, monkeypatch):
    # The counter (native code without the GIL, in real use) runs while the Python columns are built: here it
    # waits until the normalised texts have begun, which happens only if the two run at the same time.
    import threading

    from loraops.validation import frames

    normalising = threading.Event()
    normalise = frames.normalise_text

    def flagging_normalise(text):
        normalising.set()
        return normalise(text)

    def waiting_token_lengths(texts):
        assert normalising.wait(timeout=20), "token counting did not run beside the derived columns"
        return fake_token_lengths(texts)

    monkeypatch.setattr(frames, "normalise_text", flagging_normalise)
    records = CASES["over_long_text_tokens"].records
    report = _validate(tmp_path, records, params=ValidateParams(max_text_tokens=12),
                       token_lengths=waiting_token_lengths)
    failure = _find(report, "expect_column_values_to_be_between(text_tokens)")
    assert failure.message == "text longer than validate.max_text_tokens=12 tokens in 1 row: row 14"
    assert report.stats["text_tokens"]["max"] == max(fake_token_lengths([r["text"] for r in records]))


def test_counting_in_threads_gives_the_same_validation_as_counting_in_one(tiny_base, tmp_path, monkeypatch):
    # Over-long texts (in tokens) among ordinary ones, a non-string text and a missing one: every failure,
    # warning and statistic is the same whether chunks are counted one by one or several at once.
    from loraops.modeling import load_tokenizer, loading, token_counter

    tokenizer = load_tokenizer(tiny_base)
    records = good_records()
    records[3] = {**records[3], "text": " ".join(["where is my parcel"] * 20)}
    records[17] = {**records[17], "text": "ｆｕｌｌ width and héllo " * 9}
    records[5] = {**records[5], "text": 12345}
    records[8] = {k: v for k, v in records[8].items() if k != "text"}
    monkeypatch.setattr(loading, "TOKEN_COUNT_CHUNK", 3)
    params = ValidateParams(max_text_tokens=40)
    one = _validate(tmp_path, records, "one", params=params, token_lengths=token_counter(tokenizer, threads=1))
    many = _validate(tmp_path, records, "many", params=params, token_lengths=token_counter(tokenizer, threads=4))
    assert [(f.check, f.message, f.rows, f.examples, f.severity) for f in many.failures] == \
           [(f.check, f.message, f.rows, f.examples, f.severity) for f in one.failures]
    assert many.stats == one.stats and many.expectations == one.expectations
    tokens = _find(one, "expect_column_values_to_be_between(text_tokens)")
    assert tokens.message.startswith("text longer than validate.max_text_tokens=40 tokens in 2 rows: rows 4, 18")
    strings = [r["text"] for r in records if isinstance(r.get("text"), str)]
    own = tokenizer(strings, add_special_tokens=False)["input_ids"]
    assert one.stats["text_tokens"]["max"] == max(len(ids) for ids in own)


def test_token_counting_goes_on_while_great_expectations_checks_the_rows(tmp_path):
    # The counter waits until Great Expectations has stored the rows table's validation: that happens only if
    # the token table is validated after the others, with the counts still coming in meanwhile.
    work = tmp_path / "run"

    def waiting_token_lengths(texts):
        deadline = time.monotonic() + 60
        while not list((work / "gx" / "uncommitted" / "validations" / "loraops_rows").rglob("*.json")):
            assert time.monotonic() < deadline, "the rows were not checked while tokens were being counted"
            time.sleep(0.05)
        return fake_token_lengths(texts)

    records = CASES["over_long_text_tokens"].records
    report = _validate(tmp_path, records, params=ValidateParams(max_text_tokens=12),
                       token_lengths=waiting_token_lengths)
    assert [f.message for f in report.failures] == \
        ["text longer than validate.max_text_tokens=12 tokens in 1 row: row 14"]
    assert [(e["suite"], e["expectation"]) for e in report.expectations][-1] == \
        ("loraops_tokens", "expect_column_values_to_be_between")
    suite = json.loads((work / "suites" / "loraops_tokens.json").read_text())
    assert [(e["kwargs"]["column"], e["kwargs"]["max_value"]) for e in suite["expectations"]] == [("text_tokens", 12)]


def test_the_token_finding_keeps_its_place_among_the_rows_findings(tmp_path):
    # Findings come in suite order: over-long in characters, then in tokens, then duplicates, as when the token
    # check was one of the rows checks, although its table is validated after the labels.
    records = good_records()
    records[2] = {**records[2], "text": "word " * 300}
    records[6] = {**records[6], "text": records[7]["text"]}
    params = ValidateParams(max_text_chars=1000, max_text_tokens=12, max_duplicate_share=0.0)
    report = _validate(tmp_path, records, params=params, token_lengths=fake_token_lengths)
    checks = [f.check for f in report.failures]
    assert checks[:3] == ["expect_column_value_lengths_to_be_between(text)",
                          "expect_column_values_to_be_between(text_tokens)",
                          "duplicates within a split (exact)"], checks
    tokens = report.failures[1]
    assert tokens.rows == 1 and tokens.examples[0][0] == 3 and tokens.examples[0][1].startswith("[300 tokens] word")


def test_token_counter_in_a_child_process_counts_as_the_tokenizer_does(tiny_base, monkeypatch):
    # Many texts are counted in a child interpreter with the same backend (from its JSON): the counts are the
    # tokenizer's own, in order; a child that cannot start leaves the counting to this process.
    import subprocess
    import sys

    from loraops.modeling import load_tokenizer, loading, token_counter

    tokenizer = load_tokenizer(tiny_base)
    texts = [r["text"] for r in good_records()] * 4 + ["", "héllo wörld ｆｕｌｌ", "a\nb\tc", "x" * 3000, "😀😀"]
    expected = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    monkeypatch.setattr(loading, "PROCESS_MIN_TEXTS", 10)
    children = []
    run = subprocess.run

    def recording_run(args, **kwargs):
        done = run(args, **kwargs)
        children.append((args[0], done.returncode, len(done.stdout)))
        return done

    monkeypatch.setattr(subprocess, "run", recording_run)
    assert token_counter(tokenizer, process=True)(texts) == expected
    assert children == [(sys.executable, 0, 8 * len(texts))]  # the child gave them, one 64-bit count per text
    assert token_counter(tokenizer, process=False)(texts) == expected and len(children) == 1
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    with pytest.raises(OSError):
        run(["/nonexistent/python"])
    assert token_counter(tokenizer, process=True)(texts) == expected and len(children) == 1
