"""`loraops run`: the Prefect flow (ephemeral server) runs every stage in DAG order and registers a version."""

import re
import subprocess

import mlflow
import pytest

from conftest import loraops_cmd
from loraops.project import Layout
from loraops.steps import PIPELINE

pytestmark = pytest.mark.integration


def test_loraops_run_completes_the_dag_and_registers(tiny_project):
    result = subprocess.run(loraops_cmd() + ["run", "-S", "train.max_steps=3"], cwd=tiny_project,
                            capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    started = re.findall(r"starting stage (\w+)", output)
    assert started == list(PIPELINE), started
    assert "registered tiny-intent version 1" in result.stdout

    layout = Layout(tiny_project)
    client = mlflow.MlflowClient(tracking_uri=layout.tracking_uri())
    versions = client.search_model_versions("name='tiny-intent'")
    assert len(versions) == 1
    run = client.get_run(versions[0].run_id)
    assert run.data.params["train.max_steps"] == "3"  # the command-line override reached the run
    assert run.info.status == "FINISHED"
