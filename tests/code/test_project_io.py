"""Outputs are replaced whole or not at all; serving accepts the input shapes MLflow hands it."""

import pytest

from loraops.core import atomic_dir, atomic_write_text, read_jsonl, write_jsonl
from loraops.registry.serving import request_tasks, request_texts


def test_atomic_dir_replaces_target_only_on_success(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as staging:
        (staging / "a.txt").write_text("first")
    assert (target / "a.txt").read_text() == "first"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as staging:
            (staging / "a.txt").write_text("half-written")
            raise RuntimeError("crash mid-stage")
    assert (target / "a.txt").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folder left behind


def test_atomic_write_text_keeps_old_content_on_failure(tmp_path):
    target = tmp_path / "m.json"
    atomic_write_text(target, "old")

    with pytest.raises(TypeError):
        atomic_write_text(target, 123)  # not text: fails while writing
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_jsonl_round_trip_keeps_unicode(tmp_path):
    rows = [{"text": "café ✓", "label": "a"}, {"text": "b", "label": None}]
    write_jsonl(tmp_path / "r.jsonl", rows)
    assert read_jsonl(tmp_path / "r.jsonl") == rows


@pytest.mark.parametrize("given, expected", [
    ("hi", ["hi"]), (["a", "b"], ["a", "b"]), ({"text": ["a", "b"]}, ["a", "b"]), ({"text": "a"}, ["a"]),
])
def test_request_texts_shapes(given, expected):
    assert request_texts(given) == expected


def test_request_texts_dataframe_and_missing_column():
    import pandas as pd

    assert request_texts(pd.DataFrame({"text": ["x", "y"]})) == ["x", "y"]
    with pytest.raises(ValueError, match="'text' column"):
        request_texts({"prompt": ["x"]})


def test_request_tasks_shapes():
    import pandas as pd

    assert request_tasks({"text": ["a", "b"]}, 2) == [None, None]
    assert request_tasks(["a", "b"], 2) == [None, None]
    assert request_tasks({"text": ["a", "b"], "task": "t"}, 2) == ["t", "t"]
    # MLflow's schema check hands {"text": [a, b], "task": [s, t]} over as one row of lists.
    assert request_tasks(pd.DataFrame({"text": [["a", "b"]], "task": [["s", "t"]]}), 2) == ["s", "t"]
    assert request_tasks(pd.DataFrame([{"text": "a", "task": "s"}, {"text": "b"}]), 2) == ["s", None]
    with pytest.raises(ValueError, match="2 texts but 3 tasks"):
        request_tasks({"text": ["a", "b"], "task": ["s", "t", "u"]}, 2)
    with pytest.raises(ValueError, match="'task' must be a string"):
        request_tasks({"text": ["a"], "task": [3]}, 1)
