"""The retrain flow's failure policy: one retry layer (the library retries the tracking server, Prefect only
the DVC remote), and the clean-up rule that is the only way a model version is ever deleted (real MLflow
store, no mocks)."""

import mlflow
from prefect.states import Failed

import flows.retrain as retrain
from flows.pipeline import record_in_dvc_lock, stage_task
from loraops.config import load_params
from loraops.core import ConfigError, Layout, ValidationFailed
from loraops.core.tracking import connect
from loraops.pipeline.dvc import DvcCommandError
from loraops.pipeline.retrain import last_successful_run
from loraops.registry import REGISTRATION_TAG, discard_own, repair

# Remote storage: nothing below retries it, so the flow does. The tracking server is retried by the library
# (registry.retries) and only there, so a Prefect retry would multiply its attempts.
RETRIED = {"push_outputs"}
NOT_RETRIED = {"fingerprint_inputs", "commit_outputs", "last_success", "register_version", "record_lineage"}


def test_prefect_retries_only_the_remote_storage_task_with_backoff():
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


def test_clean_up_deletes_only_unfinished_unaliased_versions_and_never_a_champion(tiny_project):
    layout = Layout(tiny_project)
    params = load_params(layout.params_file)
    assert last_successful_run(layout, params) is None  # creates the experiment in the project's store
    tracking = connect(layout, params.registry)
    client = mlflow.MlflowClient(tracking_uri=layout.tracking_uri())
    experiment = client.get_experiment_by_name(params.registry.experiment).experiment_id
    name = params.registry.model_name
    client.create_registered_model(name)

    def version(complete: bool, alias: str | None = None) -> str:
        run = client.create_run(experiment)
        number = client.create_model_version(name, source=str(tiny_project / "m"), run_id=run.info.run_id,
                                             tags={REGISTRATION_TAG: "complete" if complete else "incomplete"}).version
        if alias:
            client.set_registered_model_alias(name, alias, number)
        return str(number)

    champion = version(complete=True, alias="champion")
    half = version(complete=False)
    half_aliased = version(complete=False, alias="challenger")
    finished = version(complete=True)

    # The failure path of the registration that made each one: only the unfinished, unaliased one goes.
    assert discard_own(tracking, name, half) == f"half-registered version {half} was deleted"
    assert "stays registered" in discard_own(tracking, name, half_aliased)
    assert "stays registered" in discard_own(tracking, name, finished)
    assert "stays registered" in discard_own(tracking, name, champion)
    left = {str(v.version): v for v in client.search_model_versions(f"name='{name}'")}
    assert set(left) == {champion, half_aliased, finished}
    assert str(client.get_registered_model(name).aliases["champion"]) == champion
    assert "alias challenger" in left[half_aliased].tags["loraops.registration.kept"]

    # Another run's leftovers: a young one may still be in progress (left alone), an old one is removed.
    young = version(complete=False)
    assert repair(tracking, name, grace_seconds=3600) == []
    assert repair(tracking, name, grace_seconds=0) == [f"deleted version {young} (registration never finished)",
                                                       f"kept version {half_aliased}: alias challenger points at it"]
    assert {str(v.version) for v in client.search_model_versions(f"name='{name}'")} == \
        {champion, half_aliased, finished}
