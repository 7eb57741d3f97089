"""Ingest: every source reads into the same raw form; broken files are reported with where they break."""

import json

import pandas as pd
import pytest

from tests.helpers.projects import CLINC150
from loraops.config import DataParams
from loraops.data.ingest import ingest
from loraops.core import DataError


def test_demo_source_is_deterministic_and_has_splits(tmp_path):
    params = DataParams(source="demo", demo={"train_per_intent": 3, "test_per_intent": 1})
    first, second = ingest(params, tmp_path, seed=1), ingest(params, tmp_path, seed=1)
    assert first == second
    assert {r["split"] for r in first} == {"train", "test"}
    assert len({r["label"] for r in first}) >= 10


def test_jsonl_with_column_mapping(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"q": f"text {i}", "intent": f"l{i % 2}"}) for i in range(4)) + "\n")
    rows = ingest(DataParams(source="jsonl", path="d.jsonl", text_column="q", label_column="intent"), tmp_path, 0)
    assert rows[0] == {"text": "text 0", "label": "l0", "split": None}
    assert len(rows) == 4


def test_csv_and_parquet_give_the_same_records(tmp_path):
    frame = pd.DataFrame({"utterance": ["a b", "c d", ""], "y": ["x", "y", "x"], "part": ["train", "test", "val"]})
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_parquet(tmp_path / "d.parquet")
    common = dict(text_column="utterance", label_column="y", split_column="part")
    from_csv = ingest(DataParams(source="csv", path="d.csv", **common), tmp_path, 0)
    from_parquet = ingest(DataParams(source="parquet", path="d.parquet", **common), tmp_path, 0)
    assert from_csv == from_parquet
    assert from_csv[2] == {"text": "", "label": "x", "split": "val"}  # empty text kept for validation to judge


def test_malformed_jsonl_line_is_reported_with_its_line_number(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok", "label": "a"}\n{"text": "broken", "label": \n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: malformed JSON line"):
        ingest(DataParams(source="jsonl", path="d.jsonl"), tmp_path, 0)


def test_missing_column_names_the_column_and_row(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,category\nhello,a\n")
    with pytest.raises(DataError, match=r"d\.csv:2: missing column\(s\) \['label'\]"):
        ingest(DataParams(source="csv", path="d.csv"), tmp_path, 0)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        ingest(DataParams(source="jsonl", path="absent.jsonl"), tmp_path, 0)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty file"):
        ingest(DataParams(source="csv", path="empty.csv"), tmp_path, 0)


def test_bad_split_value_is_rejected(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"text": "t", "label": "a", "s": "dev"}) + "\n")
    with pytest.raises(DataError, match="split 'dev'"):
        ingest(DataParams(source="jsonl", path="d.jsonl", split_column="s"), tmp_path, 0)


@pytest.mark.skipif(not CLINC150.is_file(), reason="needs ../shared/datasets/clinc150")
def test_clinc150_one_domain_keeps_its_15_intents_and_given_splits():
    params = DataParams(source="clinc150", path=str(CLINC150), clinc150_domains=["banking"])
    rows = ingest(params, CLINC150.parent, 0)
    assert len({r["label"] for r in rows}) == 15
    counts = {s: sum(r["split"] == s for r in rows) for s in ("train", "val", "test")}
    assert counts == {"train": 1500, "val": 300, "test": 450}
    assert "oos" not in {r["label"] for r in rows}


@pytest.mark.skipif(not CLINC150.is_file(), reason="needs ../shared/datasets/clinc150")
def test_clinc150_unknown_domain_is_named():
    with pytest.raises(DataError, match=r"unknown domain\(s\) \['bankng'\]"):
        ingest(DataParams(source="clinc150", path=str(CLINC150), clinc150_domains=["bankng"]), CLINC150.parent, 0)


def test_non_scalar_cells_are_a_one_line_error_naming_the_row_and_column(tmp_path):
    rows = [{"text": "where is my parcel", "label": "track"}, {"text": ["a", "list"], "label": "track"}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"d\.jsonl:2: column 'text' holds a list of 2 item\(s\), not a single value"):
        ingest(DataParams(source="jsonl", path="d.jsonl"), tmp_path, 0)
    (tmp_path / "e.jsonl").write_text(json.dumps({"text": "hi", "label": {"name": "x"}}) + "\n")
    with pytest.raises(DataError, match=r"e\.jsonl:1: column 'label' holds a dict"):
        ingest(DataParams(source="jsonl", path="e.jsonl"), tmp_path, 0)
    frame = pd.DataFrame({"body": ["fine", "also fine"], "tags": [["a"], ["b", "c"]]})
    frame.to_parquet(tmp_path / "d.parquet")
    with pytest.raises(DataError, match=r"d\.parquet:0: column 'tags' holds a ndarray of 1 item\(s\)"):
        ingest(DataParams(source="parquet", path="d.parquet", text_column="body", label_column="tags"), tmp_path, 0)
    # Numbers and numpy scalars are single values: they reach validation, which says they are not strings.
    pd.DataFrame({"text": ["a", "b"], "label": [1, 2]}).to_parquet(tmp_path / "n.parquet")
    assert ingest(DataParams(source="parquet", path="n.parquet"), tmp_path, 0)[1]["label"] == 2
