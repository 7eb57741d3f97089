"""Nothing runs on stale or mixed inputs: `dvc repro` re-runs ingest when the user's data file changes, and
`loraops run -p other.yaml` runs every stage with other.yaml."""

import csv
import subprocess

import pytest
import yaml

from loraops.core import read_json, read_jsonl
from tests.helpers.bad_inputs import good_records
from tests.helpers.projects import copy_repo, dvc, loraops_cmd, write_params

pytestmark = pytest.mark.integration


def write_csv(path, records):
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["body", "queue", "split"])
        writer.writeheader()
        writer.writerows({"body": r["text"], "queue": r["label"], "split": r["split"]} for r in records)


def test_editing_the_data_file_reruns_ingest_under_dvc_repro(tmp_path, tiny_base):
    repo = copy_repo(tmp_path / "repo")
    write_params(repo, tiny_base, data={"source": "csv", "path": "data/tickets.csv", "text_column": "body",
                                        "label_column": "queue", "split_column": "split"})
    (repo / "data").mkdir(exist_ok=True)
    records = good_records()
    write_csv(repo / "data" / "tickets.csv", records)
    assert "Running stage 'ingest'" in dvc(repo, "repro", "ingest")
    assert "Running stage 'ingest'" not in dvc(repo, "repro", "ingest")  # nothing changed: nothing runs
    edited = [dict(r, text=r["text"] + " (edited)") if i == 0 else r for i, r in enumerate(records)]
    write_csv(repo / "data" / "tickets.csv", edited)
    assert "data/tickets.csv" in dvc(repo, "status", "ingest")
    assert "Running stage 'ingest'" in dvc(repo, "repro", "ingest")
    assert read_jsonl(repo / "data" / "raw" / "dataset.jsonl")[0]["text"].endswith("(edited)")


def test_run_with_another_params_file_uses_that_file_for_every_stage(tiny_project):
    # params.yaml beside it names a data file that does not exist: reading it would fail at once.
    broken = yaml.safe_load((tiny_project / "params.yaml").read_text())
    other = yaml.safe_load(yaml.safe_dump(broken))
    broken["data"] = {"source": "jsonl", "path": "missing.jsonl"}
    (tiny_project / "params.yaml").write_text(yaml.safe_dump(broken))
    # other.yaml is valid, and its own validate threshold stops the flow at validate, after base_model and ingest.
    other["validate"]["min_rows"] = 100000
    (tiny_project / "other.yaml").write_text(yaml.safe_dump(other))
    result = subprocess.run([*loraops_cmd(), "run", "-p", "other.yaml"], cwd=tiny_project, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Data validation FAILED" in result.stderr and "missing.jsonl" not in result.stderr, result.stderr[-3000:]
    summary = read_json(tiny_project / "metrics" / "validation.json")
    assert any("validate.min_rows is 100000" in f["message"] for f in summary["failures"]), summary
    assert (tiny_project / "data" / "raw" / "dataset.jsonl").is_file()  # ingest ran with other.yaml's demo data
