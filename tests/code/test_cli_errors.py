"""Bad input fails at once, in one line, with exit code 2, and leaves no MLflow run or model version."""

import subprocess
import time

import pytest
import yaml

from tests.helpers.projects import loraops_cmd


def run_cli(project, *args):
    started = time.perf_counter()
    result = subprocess.run(loraops_cmd() + list(args), cwd=project, capture_output=True, text=True, timeout=120)
    return result, time.perf_counter() - started


def assert_failed_cleanly(project, result, seconds, *needles):
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0]
    assert seconds < 30  # no model was loaded and no server started
    assert not (project / "mlflow.db").exists() and not (project / "mlartifacts").exists()
    assert not (project / "models").exists() and not (project / "data").exists()


def edit(project, group, **values):
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params.setdefault(group, {}).update(values)
    path.write_text(yaml.safe_dump(params))


def test_misspelled_key_in_params(tiny_project):
    edit(tiny_project, "train", learnin_rate=0.1)
    result, seconds = run_cli(tiny_project, "run")
    assert_failed_cleanly(tiny_project, result, seconds, "params.yaml", "train.learnin_rate", "learning_rate")


def test_misspelled_key_in_command_line_override(tiny_project):
    result, seconds = run_cli(tiny_project, "run", "-S", "eval.batchsize=4")
    assert_failed_cleanly(tiny_project, result, seconds, "eval.batchsize")


def test_missing_data_file(tiny_project):
    params = yaml.safe_load((tiny_project / "params.yaml").read_text())
    params["data"] = {"source": "jsonl", "path": "data/missing.jsonl"}
    (tiny_project / "params.yaml").write_text(yaml.safe_dump(params))
    result, seconds = run_cli(tiny_project, "run")
    assert_failed_cleanly(tiny_project, result, seconds, "data/missing.jsonl", "file not found")


def test_unknown_base_model(tiny_project):
    edit(tiny_project, "model", base="no-such-model")
    result, seconds = run_cli(tiny_project, "run")
    assert_failed_cleanly(tiny_project, result, seconds, "no-such-model", "unknown base model")


@pytest.mark.parametrize("stage", ["train", "base_model"])
def test_stage_command_fails_the_same_way(tiny_project, stage):
    edit(tiny_project, "model", base="no-such-model")
    result, seconds = run_cli(tiny_project, "stage", stage)
    assert_failed_cleanly(tiny_project, result, seconds, "unknown base model")


def test_unknown_stage_name(tiny_project):
    result, seconds = run_cli(tiny_project, "stage", "deploy")
    assert_failed_cleanly(tiny_project, result, seconds, "unknown stage 'deploy'")


def test_check_accepts_a_valid_project(tiny_project):
    result, _ = run_cli(tiny_project, "check")
    assert result.returncode == 0 and "ok" in result.stdout
