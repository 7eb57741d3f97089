"""`loraops run`: the Prefect flow (ephemeral server) runs every stage in DAG order and registers a version."""

import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from tests.helpers.projects import copy_repo, loraops_cmd, write_params
from loraops.core import Layout
from loraops.pipeline import PIPELINE

pytestmark = pytest.mark.integration


def run_loraops(cwd, *args):
    env = dict(os.environ, PREFECT_LOGGING_LEVEL="INFO")  # the stage order is read from the flow's logs
    result = subprocess.run(loraops_cmd() + list(args), cwd=cwd, capture_output=True, text=True, timeout=900,
                            env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return result.stdout, output


def test_loraops_run_completes_the_dag_and_registers(tiny_project):
    stdout, output = run_loraops(tiny_project, "run", "-S", "train.max_steps=3", "-S", "search.n_jobs=2")
    assert re.findall(r"starting stage (\w+)", output) == list(PIPELINE)
    # The search stage ran as two parallel worker tasks on one study.
    assert all(re.search(rf"search-worker-{i}.*Completed", output) for i in (0, 1)), output[-4000:]
    assert "registered tiny-intent version 1" in stdout
    assert "dvc.lock left as it is" in output  # overrides are not recorded as if params.yaml said so

    client = mlflow.MlflowClient(tracking_uri=Layout(tiny_project).tracking_uri())
    versions = client.search_model_versions("name='tiny-intent'")
    assert len(versions) == 1
    run = client.get_run(versions[0].run_id)
    assert run.data.params["train.max_steps"] == "3"  # the command-line override reached the run
    assert run.info.status == "FINISHED"
    # The flow opened the run before the first stage wrote anything; register closed it.
    layout = Layout(tiny_project)
    assert run.info.start_time <= (layout.base_model_dir / "config.json").stat().st_mtime * 1000
    assert run.info.end_time >= layout.summary_metrics.stat().st_mtime * 1000 - 1000
    assert layout.comparison_png.is_file()  # the picture the flow shows as its model-comparison artifact
    # `loraops` ran the stages on mimalloc (loraops.core.allocator), and the memory figures say so.
    if sys.platform.startswith("linux"):
        from loraops.training import TrainRecord

        assert TrainRecord.read(layout.train_metrics).allocator == "mimalloc"
        adapter_run = client.search_runs([run.info.experiment_id], "tags.`loraops.model` = 'adapter'")[0]
        assert adapter_run.data.params["allocator"] == "mimalloc"


def test_dvc_repro_after_loraops_run_has_nothing_to_do(tmp_path, tiny_base):
    repo = copy_repo(tmp_path / "repo")
    write_params(repo, tiny_base)
    run_loraops(repo, "run")
    dvc = subprocess.run([str(Path(sys.executable).with_name("dvc")), "repro"], cwd=repo, capture_output=True,
                         text=True, timeout=600)
    assert dvc.returncode == 0, dvc.stderr
    assert re.findall(r"Running stage '(\w+)'", dvc.stdout) == [], dvc.stdout
