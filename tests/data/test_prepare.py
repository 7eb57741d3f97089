"""Prepare: stratified, seeded splits and chat-template rendering that training and serving share."""

import pytest

from loraops.config import PrepareParams
from loraops.core import DataError
from loraops.modeling import load_tokenizer
from loraops.prepare import clean_records, prepare, split_records


def unsplit(n_per_label=10, labels=("a", "b", "c")):
    return [{"text": f"{label} item {i}", "label": label, "split": None} for label in labels for i in range(n_per_label)]


def test_unsplit_data_gets_stratified_test_and_val_splits():
    splits = split_records(unsplit(), PrepareParams(val_fraction=0.1, test_fraction=0.2), seed=0)
    assert {len(v) for v in splits.values()} and sum(len(v) for v in splits.values()) == 30
    for name in ("train", "val", "test"):
        assert {r["label"] for r in splits[name]} == {"a", "b", "c"}, name
    assert len(splits["test"]) == 6 and len(splits["val"]) == 3
    texts = [{r["text"] for r in rows} for rows in splits.values()]
    assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])


def test_splits_are_deterministic_per_seed():
    params = PrepareParams()
    assert split_records(unsplit(), params, 3) == split_records(unsplit(), params, 3)
    assert split_records(unsplit(), params, 3) != split_records(unsplit(), params, 4)


def test_given_splits_are_respected_and_val_carved_from_train():
    rows = [dict(r, split="train") for r in unsplit()] + [{"text": "t", "label": "a", "split": "test"}]
    splits = split_records(rows, PrepareParams(), 0)
    assert [r["text"] for r in splits["test"]] == ["t"]
    assert len(splits["train"]) + len(splits["val"]) == 30


def test_mixed_split_and_no_split_is_an_error():
    rows = unsplit()
    rows[0]["split"] = "train"
    with pytest.raises(DataError, match="mixes rows with and without a split"):
        split_records(rows, PrepareParams(), 0)


def test_rendered_rows_use_the_chat_template_and_end_answers_with_eos(tiny_base):
    tokenizer = load_tokenizer(tiny_base)
    splits, labels, summary = prepare(unsplit(), tokenizer, PrepareParams(list_labels_in_prompt=True), 0)
    row = splits["train"][0]
    assert labels == ["a", "b", "c"]
    assert row["prompt"].startswith("<|im_start|>system\n") and row["prompt"].endswith("<|im_start|>assistant\n")
    assert f"Request: {row['text']}" in row["prompt"] and "Intents: a, b, c" in row["prompt"]
    assert row["completion"] == row["label"] + tokenizer.eos_token
    assert summary["train"]["rows"] == len(splits["train"])
    unlisted, _, _ = prepare(unsplit(), tokenizer, PrepareParams(list_labels_in_prompt=False), 0)
    assert "Intents:" not in unlisted["train"][0]["prompt"]


def test_examples_longer_than_max_length_fail_instead_of_being_cut(tiny_base):
    tokenizer = load_tokenizer(tiny_base)
    with pytest.raises(DataError, match="exceed prepare.max_length=16"):
        prepare(unsplit(), tokenizer, PrepareParams(max_length=16), 0)


def test_cleaning_is_off_by_default_and_counted_when_on():
    rows = [{"text": " a ", "label": "x", "split": None}, {"text": "a", "label": "x", "split": None},
            {"text": "b", "label": "y", "split": None}]
    untouched, counts = clean_records([dict(r) for r in rows], PrepareParams())
    assert untouched == rows and counts == {"stripped": 0, "duplicates_dropped": 0}
    cleaned, counts = clean_records([dict(r) for r in rows], PrepareParams(strip_text=True, drop_duplicates=True))
    assert [r["text"] for r in cleaned] == ["a", "b"]
    assert counts == {"stripped": 1, "duplicates_dropped": 1}


def test_texts_that_match_after_normalisation_never_land_in_two_carved_splits():
    from loraops.prepare.splitting import leaked_texts

    rows = unsplit(20)
    # Every third text repeated with other case and punctuation: what validation calls a normalised duplicate.
    rows += [dict(r, text=r["text"].upper() + "!") for r in rows[::3]]
    for seed in range(5):
        splits = split_records([dict(r) for r in rows], PrepareParams(val_fraction=0.1, test_fraction=0.2), seed)
        assert leaked_texts(splits) == 0, seed
        assert sum(len(v) for v in splits.values()) == len(rows)
        for name in ("train", "val", "test"):
            assert {r["label"] for r in splits[name]} == {"a", "b", "c"}, (seed, name)
