"""What a scheduled retrain records on its MLflow pipeline run, and how the next retrain finds it.

A run counts as the last successful one only once its outputs are pushed to the DVC remote and this
module has tagged it ``loraops.retrain = succeeded`` (the last tag written). So the comparison lives in
the tracking store, where every worker of a team stack sees it, and a run that crashed half-way never
counts. What a version needs to be restored (its DVC hashes) is on the version itself, in the lineage
tags every registration writes (``loraops restore VERSION``).
"""

from __future__ import annotations

from loraops.config import Params
from loraops.core import Layout
from loraops.core.tracking import Tracking, connect
from loraops.pipeline.fingerprint import Fingerprint

STATUS_TAG = "loraops.retrain"
FAILED_AFTER_REGISTRATION_TAG = "loraops.retrain.failed_after_registration"


def _connect(layout: Layout, params: Params) -> tuple[Tracking, str]:
    tracking = connect(layout, params.registry)
    return tracking, tracking.experiment_id(params.registry.experiment)


def last_successful_run(layout: Layout, params: Params) -> dict | None:
    """``{"run_id", "fingerprint", "model_version", "finished"}`` of the newest successful retrain, or None."""
    tracking, experiment_id = _connect(layout, params)
    runs = tracking.retry(tracking.client.search_runs, [experiment_id],
                          filter_string=f"tags.`{STATUS_TAG}` = 'succeeded'",
                          order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        return None
    run = runs[0]
    return {"run_id": run.info.run_id, "fingerprint": Fingerprint.from_tags(run.data.tags),
            "model_version": run.data.tags.get("loraops.model_version"), "finished": run.info.end_time}


def record_success(layout: Layout, params: Params, registered: dict, fingerprint: Fingerprint,
                   remote: dict[str, str], flow_run_id: str | None) -> None:
    """Tag the run with its inputs' fingerprint, its version and the remote; mark it succeeded last."""
    tracking, _ = _connect(layout, params)
    run_id = registered["run_id"]
    tags = {**fingerprint.as_tags(), "dvc.remote": remote.get("remote", ""),
            "loraops.model_version": str(registered["version"])}
    if flow_run_id:
        tags["prefect.flow_run_id"] = flow_run_id
    for key, value in tags.items():
        tracking.retry(tracking.client.set_tag, run_id, key, value)
    tracking.retry(tracking.client.set_tag, run_id, STATUS_TAG, "succeeded")


def record_failure_after_registration(layout: Layout, params: Params, registered: dict, error: str) -> None:
    """A retrain that failed after its version was registered: the version stays (a complete version is
    never deleted, see loraops.registry.cleanup), its run is not a successful retrain, and both say why."""
    tracking, _ = _connect(layout, params)
    name, number = registered["model_name"], str(registered["version"])
    tracking.retry(tracking.client.set_model_version_tag, name, number, FAILED_AFTER_REGISTRATION_TAG, error[:500])
    tracking.retry(tracking.client.set_tag, registered["run_id"], STATUS_TAG, "failed")
