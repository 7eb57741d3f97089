"""The retrain flow's failure policy: retries only where a second try can succeed, and the registry is
cleaned of what a failed attempt left (real MLflow store, no mocks)."""

import mlflow
from prefect.states import Failed

import flows.retrain as retrain
from flows.pipeline import record_in_dvc_lock, stage_task
from loraops.config import load_params
from loraops.dvc_store import DvcCommandError
from loraops.errors import ConfigError, ValidationFailed
from loraops.retrain_record import discard_registrations, last_successful_run, registered_versions
from loraops.project import Layout

# Tracking server or remote storage: a retry can succeed. Everything else fails the same way again.
RETRIED = {"last_success", "registry_state", "push_outputs", "register_version", "record_lineage"}
NOT_RETRIED = {"fingerprint_inputs", "commit_outputs"}


def test_retries_with_backoff_only_on_tracking_server_and_remote_storage_tasks():
    tasks = {name: getattr(retrain, name) for name in RETRIED | NOT_RETRIED}
    for name in RETRIED:
        assert tasks[name].retries == 3, name
        delays = tasks[name].retry_delay_seconds
        assert len(delays) == 3 and delays[0] < delays[1] < delays[2], (name, delays)  # backoff
    for name in NOT_RETRIED:
        assert tasks[name].retries == 0, name
    # The stages themselves (validation, training...) run without retries.
    assert stage_task.retries == 0 and record_in_dvc_lock.retries == 0


def test_retry_condition_skips_deterministic_errors_but_retries_storage_and_network():
    assert not retrain.transient(None, None, Failed(data=ValidationFailed("bad rows")))
    assert not retrain.transient(None, None, Failed(data=ConfigError("bad key")))
    assert retrain.transient(None, None, Failed(data=DvcCommandError("dvc push: connection reset")))
    assert retrain.transient(None, None, Failed(data=ConnectionError("tracking server down")))


def test_discard_registrations_removes_versions_made_since_and_fails_their_runs(tiny_project):
    layout = Layout(tiny_project)
    params = load_params(layout.params_file)
    assert last_successful_run(layout, params) is None  # creates the experiment in the project's store
    client = mlflow.MlflowClient(tracking_uri=layout.tracking_uri())
    experiment = client.get_experiment_by_name(params.registry.experiment).experiment_id
    name = params.registry.model_name
    client.create_registered_model(name)
    kept_run = client.create_run(experiment)
    client.create_model_version(name, source=str(tiny_project / "kept"), run_id=kept_run.info.run_id)
    client.set_terminated(kept_run.info.run_id)
    known = registered_versions(layout, params)
    since = retrain.retrain_record.now_ms()
    half_run = client.create_run(experiment)  # an attempt that registered, then died before finishing
    client.create_model_version(name, source=str(tiny_project / "half"), run_id=half_run.info.run_id)
    stray_run = client.create_run(experiment)  # an attempt that died before registering

    assert discard_registrations(layout, params, known, since) == ["2"]
    assert registered_versions(layout, params) == ["1"]
    assert client.get_run(half_run.info.run_id).info.status == "FAILED"
    assert client.get_run(stray_run.info.run_id).info.status == "FAILED"
    assert client.get_run(kept_run.info.run_id).info.status == "FINISHED"
