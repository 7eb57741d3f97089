"""What a retrain records on its MLflow pipeline run, and how the next retrain finds it.

A run counts as the last successful one only once its outputs are pushed to the DVC remote and this
module has tagged it ``loraops.retrain = succeeded`` (the last tag written). So the comparison lives in
the tracking store, where every worker of a team stack sees it, and a run that crashed half-way never
counts. The run also carries dvc.lock (artifact ``lineage/dvc.lock``) and the md5 of each output as
``dvc.out.<path>`` tags: with them, ``loraops restore RUN_ID`` pulls that exact version from the remote.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from loraops.config import Params
from loraops.fingerprint import Fingerprint
from loraops.project import Layout

STATUS_TAG = "loraops.retrain"
LOCK_ARTIFACT = "lineage/dvc.lock"


def _client(layout: Layout, params: Params):
    import mlflow

    from loraops.registry import connect

    experiment_id = connect(layout, params.registry.experiment)
    return mlflow.MlflowClient(tracking_uri=layout.tracking_uri()), experiment_id


def last_successful_run(layout: Layout, params: Params) -> dict[str, Any] | None:
    """``{"run_id", "fingerprint", "version"...}`` of the newest run this task retrained successfully."""
    client, experiment_id = _client(layout, params)
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{STATUS_TAG}` = 'succeeded'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        return None
    run = runs[0]
    return {"run_id": run.info.run_id, "fingerprint": Fingerprint.from_tags(run.data.tags),
            "model_version": run.data.tags.get("loraops.model_version"),
            "finished": run.info.end_time}


def pipeline_runs(layout: Layout, params: Params) -> list[str]:
    """Ids of every pipeline run (one per registration attempt) in the task's experiment."""
    client, experiment_id = _client(layout, params)
    return [r.info.run_id for r in client.search_runs([experiment_id], filter_string="tags.`loraops.pipeline` = 'true'",
                                                      max_results=1000)]


def record_success(layout: Layout, params: Params, registered: dict, fingerprint: Fingerprint,
                   dvc_hashes: dict[str, str], remote: dict[str, str], flow_run_id: str | None) -> None:
    """Tag the run with its inputs' fingerprint and its outputs' DVC hashes; mark it succeeded last."""
    client, _ = _client(layout, params)
    run_id = registered["run_id"]
    tags = {**fingerprint.as_tags(), **{f"dvc.out.{path}": md5 for path, md5 in dvc_hashes.items()},
            "dvc.remote": remote.get("remote", ""), "loraops.model_version": str(registered["version"])}
    if flow_run_id:
        tags["prefect.flow_run_id"] = flow_run_id
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    lock = layout.root / "dvc.lock"
    if lock.is_file():
        client.log_artifact(run_id, str(lock), artifact_path=str(Path(LOCK_ARTIFACT).parent))
    client.set_tag(run_id, STATUS_TAG, "succeeded")


def registered_versions(layout: Layout, params: Params) -> list[str]:
    client, _ = _client(layout, params)
    return [str(v.version) for v in client.search_model_versions(f"name = '{params.registry.model_name}'")]


def discard_registrations(layout: Layout, params: Params, known_versions: list[str], since_ms: int) -> list[str]:
    """Undo what a failed attempt left in the registry: versions not in ``known_versions`` (taken before the
    retrain started) are deleted, and their runs and any pipeline run started since ``since_ms`` and still
    RUNNING are marked FAILED. Returns the deleted versions.

    The deployment's concurrency limit of one means no other retrain of the same task registers meanwhile.
    """
    client, experiment_id = _client(layout, params)
    deleted = []
    name = params.registry.model_name
    for version in client.search_model_versions(f"name = '{name}'"):
        if str(version.version) not in known_versions:
            client.delete_model_version(name, version.version)
            if version.run_id:
                client.set_terminated(version.run_id, status="FAILED")
            deleted.append(str(version.version))
    for run in client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'"):
        if run.info.start_time >= since_ms:
            client.set_terminated(run.info.run_id, status="FAILED")
    return deleted


def now_ms() -> int:
    return int(time.time() * 1000)


def download_lock(layout: Layout, run_id: str) -> Path:
    """Write the dvc.lock recorded with ``run_id`` over the project's dvc.lock; returns its path."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=LOCK_ARTIFACT, dst_path=tmp,
                                                    tracking_uri=layout.tracking_uri())
        target = layout.root / "dvc.lock"
        target.write_text(Path(local).read_text())
    return target
