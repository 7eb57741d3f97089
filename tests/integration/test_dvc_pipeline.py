"""The whole DAG through `dvc repro` in a copy of this repository, on the tiny model and a small dataset."""

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from loraops.pipeline import PIPELINE
from tests.helpers.projects import copy_repo, dvc, write_params

pytestmark = pytest.mark.integration


def ran(output: str) -> list[str]:
    return re.findall(r"Running stage '(\w+)'", output)


def digests(repo: Path) -> dict[str, str]:
    out = {}
    for top in ("data/raw", "data/prepared", "models/adapter", "models/base", "metrics/eval.json"):
        paths = [repo / top] if (repo / top).is_file() else sorted((repo / top).rglob("*"))
        for path in paths:
            if path.is_file() and path.name != ".gitignore":
                out[str(path.relative_to(repo))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_base):
    repo = copy_repo(tmp_path_factory.mktemp("dvc") / "repo")
    write_params(repo, tiny_base)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"], cwd=repo, check=True)
    return repo


def test_repro_runs_every_stage_in_order_and_registers(repo):
    output = dvc(repo, "repro")
    assert ran(output) == list(PIPELINE)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(PIPELINE)
    dataset_out = lock["stages"]["ingest"]["outs"][0]
    assert dataset_out["path"] == "data/raw/dataset.jsonl" and len(dataset_out["md5"]) == 32
    assert (repo / "metrics" / "registration.json").is_file()
    assert (repo / "mlflow.db").is_file()
    # The search ran (tiny settings) and the registered run links to its MLflow parent run.
    import json, mlflow
    choice = json.loads((repo / "models" / "search" / "chosen.json").read_text())
    run_id = json.loads((repo / "metrics" / "registration.json").read_text())["run_id"]
    tags = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}").get_run(run_id).data.tags
    assert choice["source"] == "search" and tags["search.run_id"] == choice["mlflow_run_id"]


def test_second_repro_runs_nothing(repo):
    output = dvc(repo, "repro")
    assert ran(output) == [], output


def test_changing_learning_rate_reruns_only_train_and_later_stages(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["learning_rate"] = 5e-4
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    output = dvc(repo, "repro")
    assert ran(output) == ["train", "evaluate", "register"], output


def test_push_then_pull_restores_data_and_adapter_byte_identical(repo):
    before = digests(repo)
    assert any(k.startswith("models/adapter/") for k in before) and "data/raw/dataset.jsonl" in before
    dvc(repo, "push")
    shutil.rmtree(repo / ".dvc" / "cache")
    for top in ("data/raw", "data/prepared", "models/adapter", "models/base", "metrics/eval.json"):
        target = repo / top
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    dvc(repo, "pull")
    assert digests(repo) == before
    assert ran(dvc(repo, "repro")) == []
