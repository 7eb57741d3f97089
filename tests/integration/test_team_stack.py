"""Scheduled retraining on a team stack of real local processes (tests/team_stack.py): PostgreSQL (or SQLite,
said why), a Prefect server, an MLflow server and a process worker, all on 127.0.0.1 with free ports.

`loraops deploy` creates the deployment from prefect.yaml; a first trigger trains, pushes to the DVC remote
and registers version 1; a clean clone restores the data and adapter from the remote by the hashes recorded in
MLflow; a second trigger with unchanged inputs is skipped and trains nothing; two triggers at once never
overlap (the deployment's concurrency limit). The skipped run's time is measured by bench/bench_skip.py.
"""

from __future__ import annotations

import hashlib
import subprocess
import time

import mlflow
import pytest

from loraops.core import Layout
from loraops.registry import version_lineage
from tests.helpers.projects import loraops_cmd
from tests.helpers.registry import tracking_for
from tests.helpers.team_stack import LocalStack, committed_project, trigger

pytestmark = pytest.mark.integration

DEPLOYMENT = "loraops-retrain/retrain"


def flow_run_text(client, run, expect: str) -> tuple[str, str]:
    """(the run's logs, its artifacts' descriptions and markdown); waits a little for ``expect`` in the logs,
    which the flow's process sends in batches and may still be sending when its state is final."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + 20
    while True:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
        if any(expect in l.message for l in logs) or time.monotonic() > deadline:
            break
        time.sleep(1)
    artifacts = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
    return ("\n".join(l.message for l in logs),
            "\n".join(f"{a.key}: {a.description}\n{a.data}" for a in artifacts))


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def stack(tmp_path):
    stack = LocalStack(tmp_path / "stack", tmp_path / "dvc-remote")
    try:
        yield stack.start()
    finally:
        stack.stop()


def test_scheduled_retrain_trains_once_then_skips_and_restores(tmp_path, tiny_base, stack):
    import os

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    repo = committed_project(tmp_path / "repo", tiny_base)
    deployed = subprocess.run(loraops_cmd() + ["deploy", "-p", str(repo / "params.yaml")], cwd=repo, env=stack.env(),
                              capture_output=True, text=True, timeout=300)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    stack.start_worker(pythonpath=os.environ.get("PYTHONPATH", ""))
    print(f"team stack database: {stack.database}")
    started = time.monotonic()

    with temporary_settings({PREFECT_API_URL: stack.api_url}), get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(DEPLOYMENT)
        assert deployment.global_concurrency_limit.limit == 1
        assert deployment.concurrency_options.collision_strategy.value == "ENQUEUE"
        assert deployment.work_pool_name == "loraops-process"
        assert client.read_work_pool("loraops-process").type == "process"
        assert [s.schedule.cron for s in deployment.schedules] == ["0 3 * * *"]
        # The Kubernetes variant: the server accepts the GPU job template as the pool's base job template.
        gpu = subprocess.run(loraops_cmd() + ["deploy", "--name", "retrain-gpu", "-p", str(repo / "params.yaml")], cwd=repo,
                             env=stack.env(), capture_output=True, text=True, timeout=300)
        assert gpu.returncode == 0, gpu.stdout + gpu.stderr
        k8s = client.read_work_pool("loraops-k8s-gpu")
        assert k8s.type == "kubernetes"
        container = k8s.base_job_template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
        assert "nvidia.com/gpu" in container["resources"]["limits"]
        gpu_deployment = client.read_deployment_by_name("loraops-retrain/retrain-gpu")
        assert gpu_deployment.pull_steps[0]["prefect.deployments.steps.set_working_directory"]["directory"] == "/opt/loraops"
        assert not any(s.active for s in gpu_deployment.schedules)

        (first,) = trigger(client, deployment.id)
        assert first.state.is_completed(), f"{first.state}\n{stack.logs()}"
        print(f"first retrain: {first.total_run_time.total_seconds():.1f} s run, "
              f"{time.monotonic() - started:.1f} s since the worker started")

        mlflow_client = mlflow.MlflowClient(tracking_uri=stack.tracking_uri)
        (version,) = mlflow_client.search_model_versions("name = 'tiny-intent'")
        run = mlflow_client.get_run(version.run_id)
        assert run.data.tags["loraops.retrain"] == "succeeded"
        assert run.data.tags["prefect.flow_run_id"] == str(first.id)
        lineage = version_lineage(tracking_for(Layout(tmp_path), stack.tracking_uri), version)  # lineage.json
        adapter_md5 = lineage["dvc.adapter.md5"]  # a folder: the .dir listing object
        dataset_md5 = lineage["dvc.dataset.md5"]
        assert version.tags["dataset.md5"] == dataset_md5
        # The remote holds the dataset and the adapter (DVC 3 layout: files/md5/ab/cdef...).
        for md5 in (adapter_md5, dataset_md5):
            assert (stack.remote / "files" / "md5" / md5[:2] / md5[2:]).is_file(), md5
        runs_before = mlflow_client.search_runs([run.info.experiment_id])

        # A clean clone gets the exact adapter and dataset back by the hashes recorded on the version, by
        # the run id as by the version number.
        clone = committed_project(tmp_path / "clone", tiny_base)
        restored = subprocess.run(loraops_cmd() + ["restore", run.info.run_id, "-p", str(clone / "params.yaml")],
                                  cwd=clone, env=stack.env(), capture_output=True, text=True, timeout=300)
        assert restored.returncode == 0, restored.stdout + restored.stderr
        for name in ("models/adapter/adapter_model.safetensors", "data/raw/dataset.jsonl"):
            assert sha256(clone / name) == sha256(repo / name), name

        # Unchanged inputs: the second trigger is skipped, trains nothing, registers nothing.
        (second,) = trigger(client, deployment.id)
        assert second.state.is_completed(), f"{second.state}\n{stack.logs()}"
        logs, artifacts = flow_run_text(client, second, "Nothing changed since run")
        assert "Nothing changed since run" in logs and "trained nothing" in logs, logs
        assert "loraops-retrain: loraops retrain: skipped" in artifacts, artifacts
        assert "starting stage" not in logs
        assert len(mlflow_client.search_model_versions("name = 'tiny-intent'")) == 1
        assert len(mlflow_client.search_runs([run.info.experiment_id])) == len(runs_before)
        print(f"skipped run took {second.total_run_time.total_seconds():.1f} s in its flow run")

        # Two triggers at once: the deployment's concurrency limit runs them one after the other.
        a, b = trigger(client, deployment.id, count=2)
        assert a.state.is_completed() and b.state.is_completed(), f"{a.state} {b.state}\n{stack.logs()}"
        (earlier, later) = sorted((a, b), key=lambda r: r.start_time)
        assert earlier.end_time <= later.start_time, (earlier.start_time, earlier.end_time, later.start_time)
        waited = [s.name for r in (a, b) for s in client.read_flow_run_states(r.id)]
        assert "AwaitingConcurrencySlot" in waited, waited
