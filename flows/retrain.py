"""Scheduled retraining: the deployment's flow (see prefect.yaml / ``loraops deploy``).

It fingerprints the data source, params, base model and code and ends at once, training nothing, when they
match the last successful retrain recorded in MLflow. Otherwise it runs the DAG's stages (the same tasks as
the ``loraops-pipeline`` flow), records the outputs in dvc.lock, pushes them to the DVC remote, registers
the version and tags the MLflow run with the fingerprint and dvc.lock hashes. The push comes before the
registration, so a registered version is always restorable. A failure before the registration undoes
dvc.lock and the new DVC cache objects; one after it keeps the (complete) version and tags it, and its run,
as failed. The project's lock is held throughout, so two retrains (or a retrain and a run) never share a
folder.

Retries: the library retries the tracking server; this flow retries only the remote storage. Stages such as
validation fail the same way every time and are not retried.
"""

from __future__ import annotations

import os
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE
from prefect.runtime import flow_run
from prefect.tasks import exponential_backoff

from flows.pipeline import check_search_fan_out, link_data_docs, open_run, search_stage, show_comparison, stage_task
from loraops.config import Params, load_params
from loraops.core import ConfigError, Layout, LoraopsError
from loraops.core.process import project_lock
from loraops.core.tracking import redact_url
from loraops.pipeline import PIPELINE, Fingerprint, dvc, preflight, retrain_fingerprint, run_stage
from loraops.pipeline import retrain as retrain_record

REGISTER_STAGE = "register"
# Seconds before the first retry; then doubled. Tests shorten it through the environment.
BACKOFF_SECONDS = float(os.environ.get("LORAOPS_RETRY_BACKOFF_SECONDS", "10"))


def transient(task, task_run, state) -> bool:
    """Retry network and storage failures; never a loraops error about the input (it would fail again)."""
    error = state.data
    return not isinstance(error, LoraopsError) or isinstance(error, dvc.DvcCommandError)


# Only for the DVC remote: the tracking server's calls are retried by the library already.
REMOTE_RETRIES = {"retries": 3, "retry_delay_seconds": exponential_backoff(backoff_factor=BACKOFF_SECONDS),
           "retry_jitter_factor": 0.2, "retry_condition_fn": transient}


@task(cache_policy=NONE)
def fingerprint_inputs(params: Params, root: str) -> Fingerprint:
    return retrain_fingerprint(params, Layout(Path(root)))


@task(cache_policy=NONE)
def last_success(params: Params, root: str) -> dict | None:
    return retrain_record.last_successful_run(Layout(Path(root)), params)


@task(cache_policy=NONE)
def commit_outputs(root: str, stages: list[str]) -> dict[str, str]:
    dvc.commit(Path(root), stages)
    return dvc.lock_hashes(Path(root))


@task(cache_policy=NONE, **REMOTE_RETRIES)
def push_outputs(root: str) -> dict[str, str]:
    return dvc.push(Path(root))


@task(cache_policy=NONE)
def register_version(params: Params, root: str) -> dict:
    return run_stage(REGISTER_STAGE, params, Layout(Path(root)))


@task(cache_policy=NONE)
def record_lineage(params: Params, root: str, registered: dict, fingerprint: Fingerprint,
                   remote: dict[str, str]) -> None:
    retrain_record.record_success(Layout(Path(root)), params, registered, fingerprint, remote, str(flow_run.id))


def skipped(previous: dict, fingerprint: Fingerprint) -> dict:
    message = (f"Nothing changed since run {previous['run_id']} (model version {previous['model_version']}): "
               f"data, params, base model and code fingerprints match ({fingerprint.combined[:12]}). Skipped; trained nothing.")
    get_run_logger().info(message)
    create_markdown_artifact(key="loraops-retrain", description="loraops retrain: skipped",
                             markdown=f"# loraops retrain: skipped\n\n{message}\n")
    return {"skipped": True, "previous_run_id": previous["run_id"], "fingerprint": fingerprint.combined}


@flow(name="loraops-retrain", log_prints=True)
def retrain(root: str = ".", force: bool = False) -> dict:
    """Retrain when the data, params, base model or code changed since the last successful retrain (or
    ``force``). The project's lock is held throughout: a second retrain (or a run) in the same folder stops at
    once with a message naming the holder."""
    layout = Layout(Path(root).resolve())
    if not dvc.is_dvc_project(layout.root):
        raise ConfigError(f"{layout.root}: not a DVC project (dvc.yaml and .dvc/); retraining pushes to its remote")
    with project_lock(layout.cache_dir, "loraops retrain"):
        return _retrain(layout, force)


def _retrain(layout: Layout, force: bool) -> dict:
    logger = get_run_logger()
    params = load_params(layout.params_file)  # as on disk: dvc.lock must describe what ran
    preflight(params, layout)
    fingerprint = fingerprint_inputs(params, str(layout.root))
    previous = last_success(params, str(layout.root))
    changed = fingerprint.changed_since(previous["fingerprint"] if previous else None)
    if not changed and not force:
        return skipped(previous, fingerprint)
    logger.info("retraining: changed %s", ", ".join(changed) or "nothing (forced)")
    check_search_fan_out(params, layout)
    root_s = str(layout.root)
    snapshot = dvc.Snapshot.take(layout.root)
    registered = None
    try:
        open_run(params, root_s)
        results = {}
        for name in PIPELINE:
            if name == REGISTER_STAGE:
                continue
            try:
                if name == "search":  # its workers as the pipeline runs them (tasks, or a deployment's flow runs)
                    results[name] = search_stage(params, layout)
                    continue
                results[name] = stage_task.with_options(name=name, task_run_name=name)(name, params, root_s)
            finally:
                if name == "validate":
                    link_data_docs(layout)
                if name == "evaluate" and name in results:
                    show_comparison(layout)
        commit_outputs(root_s, [s for s in PIPELINE if s != REGISTER_STAGE])
        remote = push_outputs(root_s)
        registered = register_version(params, root_s)
        hashes = commit_outputs(root_s, [REGISTER_STAGE])
        record_lineage(params, root_s, registered, fingerprint, remote)
    except BaseException as exc:
        if registered is None:
            removed = snapshot.restore()
            logger.error("retrain failed: dvc.lock restored, %d new DVC cache object(s) removed", len(removed))
        else:
            # The version is complete (and may be champion): it stays, and so do the outputs it points at.
            logger.error("retrain failed after registering version %s, which stays registered: %s",
                         registered["version"], redact_url(str(exc)))
            try:
                retrain_record.record_failure_after_registration(layout, params, registered, redact_url(repr(exc)))
            except Exception as record_error:  # the tracking server is down: say so, keep the original error
                logger.error("could not record the failure on version %s (%s)", registered["version"],
                             redact_url(str(record_error)))
        raise
    create_markdown_artifact(
        key="loraops-retrain", description="loraops retrain: new version",
        markdown=(f"# loraops retrain: version {registered['version']}\n\nChanged: {', '.join(changed) or 'forced'}."
                  f"\n\nMLflow run `{registered['run_id']}`; outputs pushed to DVC remote `{remote['remote']}`.\n\n"
                  "| output | md5 |\n|---|---|\n" + "".join(f"| {p} | `{m}` |\n" for p, m in hashes.items())))
    return {"skipped": False, "changed": changed, "registered": registered, "dvc": hashes,
            "fingerprint": fingerprint.combined}
