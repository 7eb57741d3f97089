"""Bad data never trains: the Prefect flow stops at ingest (unreadable file) or validate (bad content).

Each case writes a real data file, runs the real flow in-process and checks that nothing after the failing
stage ran: no prepared data, no adapter, no registered model version.
"""

import json

import mlflow
import pytest
import yaml

from loraops.config import load_params
from loraops.data.demo import generate_demo_dataset
from loraops.core import DataError, LoraopsError, ValidationFailed
from loraops.core import Layout, read_json
from loraops.pipeline import run_stage

pytestmark = pytest.mark.integration


def good_rows() -> list[dict]:
    return [{"text": r["text"], "label": r["label"], "split": r["split"]}
            for r in generate_demo_dataset(seed=3, train_per_intent=8, test_per_intent=2)]


def jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def with_rows(change) -> bytes:
    rows = good_rows()
    change(rows)
    return jsonl(rows)


def _set(index, **values):
    def change(rows):
        for i in (index if isinstance(index, list) else [index]):
            rows[i].update(values)
    return change


def _duplicate_rows(rows):
    rows += [dict(r) for r in rows[:10]]


def _leak_exact(rows):
    train = [r for r in rows if r["split"] == "train"]
    rows += [dict(r, split="test") for r in train[:5]]


def _leak_normalised(rows):
    train = [r for r in rows if r["split"] == "train"]
    rows += [dict(r, split="test", text="  " + r["text"].upper() + "!! ") for r in train[:5]]


def _single_class(rows):
    for r in rows:
        r["label"] = "track_order"


CSV_BROKEN_QUOTES = b'text,label,split\n"where is my order,track_order,train\nhello,greet,train\n'

# (case id, file name, file bytes, stage expected to stop the flow, words the error must contain)
CASES = [
    ("empty-file", "d.jsonl", b"", "ingest", ["empty file"]),
    ("header-only", "d.csv", b"text,label,split\n", "ingest", ["no data rows"]),
    ("missing-column", "d.csv", b"body,label,split\nhi,a,train\n", "ingest", ["missing column", "text"]),
    ("malformed-jsonl", "d.jsonl", jsonl(good_rows()[:3]) + b'{"text": "x", "label": \n', "ingest",
     ["d.jsonl:4", "malformed JSON"]),
    ("invalid-utf8", "d.jsonl", jsonl(good_rows()[:3]) + b'{"text": "caf\xe9", "label": "a", "split": "train"}\n',
     "ingest", ["d.jsonl:4", "invalid UTF-8"]),
    ("csv-broken-quoting", "d.csv", CSV_BROKEN_QUOTES, "ingest", ["d.csv"]),
    ("null-labels", "d.jsonl", with_rows(_set([0, 5], label=None)), "validate", ["label"]),
    ("empty-text", "d.jsonl", with_rows(_set(2, text="")), "validate", ["text", "row 3"]),
    ("whitespace-text", "d.jsonl", with_rows(_set(4, text="   \t ")), "validate", ["text", "row 5"]),
    ("control-characters", "d.jsonl", with_rows(_set(1, text="refund\x07 please")), "validate", ["row 2"]),
    ("single-class", "d.jsonl", with_rows(_single_class), "validate", ["label"]),
    ("duplicate-rows", "d.jsonl", with_rows(_duplicate_rows), "validate", ["duplicate"]),
    ("leakage-exact", "d.jsonl", with_rows(_leak_exact), "validate", ["leak"]),
    ("leakage-normalised", "d.jsonl", with_rows(_leak_normalised), "validate", ["leak"]),
    ("over-long-text", "d.jsonl", with_rows(_set(6, text="please help " * 120)), "validate", ["row 7"]),
    ("non-scalar-cell", "d.jsonl", with_rows(_set(3, text=["where", "is", "it"])), "ingest",
     ["d.jsonl:4", "holds a list"]),
    ("labels-normalise-alike", "d.jsonl", with_rows(_set(0, label="Track-Order")), "validate",
     ["normalise alike", "'Track-Order' ~ 'track_order'"]),
    ("multi-line-label", "d.jsonl", with_rows(_set(2, label="track_order\nasap")), "validate",
     ["more than one line", "row 3"]),
    ("special-token-in-text", "d.jsonl", with_rows(_set(4, text="cancel it <|im_end|> now")), "validate",
     ["special-token", "row 5"]),
    ("zero-width-character", "d.jsonl", with_rows(_set(5, text="where is my\u200b parcel")), "validate",
     ["invisible format characters", "row 6"]),
]


def configure(project, name, payload):
    (project / name).write_bytes(payload)
    params = yaml.safe_load((project / "params.yaml").read_text())
    kind = "csv" if name.endswith(".csv") else "jsonl"
    params["data"] = {"source": kind, "path": name, "split_column": "split"}
    (project / "params.yaml").write_text(yaml.safe_dump(params))


def assert_nothing_trained_or_registered(project):
    layout = Layout(project)
    assert not layout.prepared_dir.exists() and not layout.adapter_dir.exists()
    if (project / "mlflow.db").exists():
        client = mlflow.MlflowClient(tracking_uri=layout.tracking_uri())
        assert client.search_registered_models() == []


def run_flow(project):
    from flows.pipeline import pipeline

    return pipeline(root=str(project))


@pytest.mark.parametrize("case, name, payload, stage, needles", CASES, ids=[c[0] for c in CASES])
def test_bad_data_stops_the_flow_before_training(tiny_project, case, name, payload, stage, needles):
    configure(tiny_project, name, payload)
    with pytest.raises(LoraopsError) as info:
        run_flow(tiny_project)
    expected = DataError if stage == "ingest" else ValidationFailed
    assert isinstance(info.value, expected), info.value
    for needle in needles:
        assert needle.lower() in str(info.value).lower(), str(info.value)
    layout = Layout(tiny_project)
    if stage == "validate":
        summary = read_json(layout.validation_summary)
        assert summary["success"] is False and summary["errors"] >= 1
        assert (layout.validation_docs / "index.html").is_file()  # Data Docs even when it fails
    else:
        assert not layout.validation_summary.exists()
    assert_nothing_trained_or_registered(tiny_project)


def passed_version(project) -> Layout:
    """Validate a good first version so the next one is compared with it."""
    configure(project, "v1.jsonl", jsonl(good_rows()))
    layout = Layout(project)
    params = load_params(layout.params_file)
    for name in ("base_model", "ingest", "validate"):
        run_stage(name, params, layout)
    assert layout.validation_profile.is_file()
    return layout


def test_unknown_label_versus_previous_version_stops_the_flow(tiny_project):
    passed_version(tiny_project)
    configure(tiny_project, "v2.jsonl", with_rows(_set([0, 1, 2, 3, 4, 5], label="brand_new_intent")))
    with pytest.raises(ValidationFailed, match="brand_new_intent"):
        run_flow(tiny_project)
    assert_nothing_trained_or_registered(tiny_project)


def test_label_distribution_shift_versus_previous_version_stops_the_flow(tiny_project):
    passed_version(tiny_project)
    rows = good_rows()
    keep = [r for r in rows if r["label"] in ("track_order", "cancel_order") or r["split"] == "test"]
    keep += [dict(r, text=r["text"] + f" (again {i})") for i in range(4) for r in rows
             if r["label"] == "track_order" and r["split"] == "train"]
    configure(tiny_project, "v2.jsonl", jsonl(keep))
    with pytest.raises(ValidationFailed, match="(?i)shift"):
        run_flow(tiny_project)
    assert_nothing_trained_or_registered(tiny_project)
