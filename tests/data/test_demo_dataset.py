"""Tests for the built-in demo intent-classification dataset (loraops.data.demo)."""

from __future__ import annotations

import random
import re
import string
from collections import Counter

import pytest

from loraops.data import demo
from loraops.data.demo import INTENTS, TEMPLATES, generate_demo_dataset


def _norm(text: str) -> str:
    # Independent of the module's own normalisation on purpose.
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


def _template_regex(template: str) -> re.Pattern[str]:
    """Regex over normalised text: the template's literal parts in order, slots as wildcards."""
    literals = [_norm(lit) for lit, _, _, _ in string.Formatter().parse(template)]
    parts = [r"\b" + re.escape(lit) + r"\b" for lit in literals if lit]
    return re.compile(".*".join(parts))


@pytest.fixture(scope="module")
def data() -> list[dict]:
    return generate_demo_dataset()


@pytest.fixture(scope="module")
def records() -> list:
    return demo._generate(0, 40, 10)


def test_same_seed_gives_identical_output(data):
    assert generate_demo_dataset(seed=0) == data
    assert generate_demo_dataset(seed=7, train_per_intent=5, test_per_intent=2) == generate_demo_dataset(
        seed=7, train_per_intent=5, test_per_intent=2)


def test_different_seeds_give_different_output(data):
    other = generate_demo_dataset(seed=1)
    assert other != data
    # Not just a reordering: the texts themselves change.
    assert {r["text"] for r in other} != {r["text"] for r in data}


def test_global_random_state_untouched():
    random.seed(1234)
    state = random.getstate()
    generate_demo_dataset(seed=3, train_per_intent=5, test_per_intent=2)
    assert random.getstate() == state


def test_public_output_matches_internal_records(data, records):
    assert data == [{"text": r.text, "label": r.label, "split": r.split} for r in records]


def test_record_schema_and_split_order(data):
    assert all(set(r) == {"text", "label", "split"} for r in data)
    assert all(r["label"] in INTENTS for r in data)
    splits = [r["split"] for r in data]
    assert set(splits) == {"train", "test"}
    assert splits == sorted(splits, key=lambda s: s != "train")  # all train before all test
    assert len(data) == len(INTENTS) * (40 + 10)


def test_splits_are_shuffled(data):
    train_labels = [r["label"] for r in data if r["split"] == "train"]
    # Generated intent by intent; a shuffled split must not stay grouped by label.
    changes = sum(a != b for a, b in zip(train_labels, train_labels[1:]))
    assert changes > len(train_labels) // 2


@pytest.mark.parametrize("n_train,n_test", [(40, 10), (3, 7), (1, 0)])
def test_counts_per_intent_per_split(n_train, n_test):
    out = generate_demo_dataset(seed=5, train_per_intent=n_train, test_per_intent=n_test)
    counts = Counter((r["label"], r["split"]) for r in out)
    for intent in INTENTS:
        assert counts[(intent, "train")] == n_train
        assert counts[(intent, "test")] == n_test
    assert len(out) == len(INTENTS) * (n_train + n_test)


def test_intents_are_many_unique_and_snake_case(data):
    assert len(INTENTS) >= 12
    assert len(set(INTENTS)) == len(INTENTS)
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)*", i) for i in INTENTS)
    assert tuple(TEMPLATES) == INTENTS
    in_train = {r["label"] for r in data if r["split"] == "train"}
    in_test = {r["label"] for r in data if r["split"] == "test"}
    assert len(in_train & in_test) >= 10


def test_no_exact_duplicates_within_split(data):
    for split in ("train", "test"):
        texts = [r["text"] for r in data if r["split"] == split]
        assert len(texts) == len(set(texts)), split


def test_no_normalised_overlap_between_splits():
    for seed in range(3):
        out = generate_demo_dataset(seed=seed)
        train = {_norm(r["text"]) for r in out if r["split"] == "train"}
        test = {_norm(r["text"]) for r in out if r["split"] == "test"}
        assert not train & test


def test_template_partition_is_explicit_and_disjoint():
    all_templates = []
    for intent, tmpl in TEMPLATES.items():
        assert len(tmpl.train_templates) >= 4, intent
        assert len(tmpl.test_templates) >= 2, intent
        assert not set(tmpl.train_templates) & set(tmpl.test_templates), intent
        norm_train = {_norm(t) for t in tmpl.train_templates}
        assert not norm_train & {_norm(t) for t in tmpl.test_templates}, intent
        all_templates += tmpl.train_templates + tmpl.test_templates
    assert len(all_templates) == len(set(all_templates))
    assert all(t.isascii() for t in all_templates)


def test_every_record_comes_from_a_template_of_its_split(records):
    for r in records:
        tmpl = TEMPLATES[r.label]
        pool = tmpl.train_templates if r.split == "train" else tmpl.test_templates
        assert r.template in pool, r


def test_template_metadata_is_truthful(records):
    # Without typos, the text must contain its template's literal wording in order;
    # this is what makes the split-provenance check above meaningful.
    clean = [r for r in records if r.text == r.clean_text]
    assert clean
    for r in clean:
        assert _template_regex(r.template).search(_norm(r.text)), (r.template, r.text)
    for r in records:
        assert _template_regex(r.template).search(_norm(r.clean_text)), (r.template, r.clean_text)


def test_test_phrasings_never_match_train_templates(records):
    for r in records:
        tmpl = TEMPLATES[r.label]
        other = tmpl.train_templates if r.split == "test" else tmpl.test_templates
        for t in other:
            assert not _template_regex(t).search(_norm(r.clean_text)), (t, r.clean_text)


@pytest.mark.parametrize("seed", range(5))
def test_every_template_is_used_at_default_size(seed):
    used = {(r.label, r.template) for r in demo._generate(seed, 40, 10)}
    for intent, tmpl in TEMPLATES.items():
        for t in tmpl.train_templates + tmpl.test_templates:
            assert (intent, t) in used, (intent, t)


def test_typo_word_is_deterministic_and_always_changes_the_word():
    for word in ("refund", "password", "address", "aaaa", "cancel", "xy"):
        for seed in range(20):
            a = demo._typo_word(word, random.Random(seed))
            b = demo._typo_word(word, random.Random(seed))
            assert a == b
            assert a != word
            assert abs(len(a) - len(word)) <= 1


def test_inject_typos_leaves_identifiers_alone():
    text = "Where is my order #A12345? code SAVE20"
    for seed in range(30):
        out = demo._inject_typos(text, random.Random(seed))
        assert out != text
        assert "#A12345" in out


def test_reasonable_share_of_records_have_typos(records):
    typo = [r for r in records if r.text != r.clean_text]
    assert 0.10 <= len(typo) / len(records) <= 0.60
    # A typo'd text is not what its template renders without typos.
    assert sum(not _template_regex(r.template).search(_norm(r.text)) for r in typo) > len(typo) // 2


def test_texts_are_ascii_nonempty_and_short(data):
    for r in data:
        text = r["text"]
        assert text.strip(), r
        assert len(text) <= 300, r
        assert all(32 <= ord(c) < 127 for c in text), r


def test_surface_variety(data):
    texts = [r["text"] for r in data]
    assert any(re.search(r"#[A-Z]\d{5}", t) for t in texts)
    assert any("$" in t for t in texts)
    assert any(t == t.lower() and t != t.upper() for t in texts)
    assert any(t.endswith("??") or t.endswith("!!") for t in texts)
    assert len({_norm(t).split()[0] for t in texts}) > 30


def test_unreachable_count_raises_value_error(monkeypatch):
    # Without greetings/sign-offs these templates can only ever yield two distinct texts.
    monkeypatch.setattr(demo, "_PREFIXES", ("",))
    monkeypatch.setattr(demo, "_SUFFIXES", ("",))
    tiny = {"greet": demo.IntentTemplates(("ok", "yes"), ("no",))}
    assert len(demo._generate(0, 2, 1, templates=tiny)) == 3
    with pytest.raises(ValueError, match="could not generate 3 unique train texts"):
        demo._generate(0, 3, 1, templates=tiny)


@pytest.mark.parametrize("kwargs", [{"train_per_intent": -1}, {"test_per_intent": -2},
                                    {"train_per_intent": 1.5}])
def test_invalid_counts_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        generate_demo_dataset(**kwargs)
