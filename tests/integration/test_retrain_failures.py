"""A failed retrain leaves nothing behind: no new DVC cache objects, dvc.lock as it was, no registered version,
no run marked as a successful retrain. Real flow (in-process Prefect), real DVC, real MLflow store."""

import importlib
import json
import subprocess

import mlflow
import pytest
import yaml

from tests.helpers.projects import copy_repo, write_params
from loraops.config import load_params
from loraops.core import ValidationFailed
from loraops.pipeline.retrain import STATUS_TAG
from loraops.core import Layout

pytestmark = pytest.mark.integration


@pytest.fixture
def retrain_flow(monkeypatch):
    """flows.retrain with a short retry backoff (it is read when the module defines its tasks)."""
    monkeypatch.setenv("LORAOPS_RETRY_BACKOFF_SECONDS", "0.2")
    import flows.retrain

    yield importlib.reload(flows.retrain).retrain
    monkeypatch.delenv("LORAOPS_RETRY_BACKOFF_SECONDS")
    importlib.reload(flows.retrain)


@pytest.fixture
def repo(tmp_path, tiny_base):
    repo = copy_repo(tmp_path / "repo")
    write_params(repo, tiny_base)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"], cwd=repo, check=True)
    return repo


def cache_objects(repo):
    files = repo / ".dvc" / "cache" / "files"
    return sorted(p for p in files.rglob("*") if p.is_file()) if files.is_dir() else []


def assert_nothing_left(repo, lock_before):
    assert cache_objects(repo) == []
    lock = repo / "dvc.lock"
    assert (lock.read_text() if lock.exists() else None) == lock_before
    client = mlflow.MlflowClient(tracking_uri=Layout(repo).tracking_uri())
    assert client.search_model_versions("name = 'tiny-intent'") == []
    assert client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string=f"tags.`{STATUS_TAG}` = 'succeeded'") == []


def task_run_counts(flow_state) -> dict[str, int]:
    """How many times each task of the flow run ran (1 = no retry)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_state.state_details.flow_run_id])))
    return {t.name if "-" not in t.name else t.name.rsplit("-", 1)[0]: t.run_count for t in tasks}


def test_bad_data_fails_at_validate_without_retries_and_leaves_nothing(repo, retrain_flow):
    rows = [{"text": "where is my order", "label": "track_order", "split": "train"}] * 30
    (repo / "bad.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))  # one class, all duplicates
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"].update({"source": "jsonl", "path": "bad.jsonl", "split_column": "split"})
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    state = retrain_flow(root=str(repo), return_state=True)
    assert state.is_failed()
    with pytest.raises(ValidationFailed):
        state.result()
    assert not Layout(repo).adapter_dir.exists()
    assert_nothing_left(repo, None)
    assert task_run_counts(state)["validate"] == 1  # a deterministic failure is not retried


def test_push_failure_after_training_undoes_the_commit_and_registers_nothing(repo, retrain_flow, monkeypatch, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the remote folder should be")
    monkeypatch.setenv("LORAOPS_DVC_REMOTE_URL", str(blocker / "remote"))
    state = retrain_flow(root=str(repo), return_state=True)
    assert state.is_failed()
    assert "dvc push" in str(state.message) or "push" in repr(state.result(raise_on_failure=False))
    layout = Layout(repo)
    assert layout.adapter_dir.is_dir()  # it trained: the failure came after the commit to the DVC cache
    assert_nothing_left(repo, None)
    runs = task_run_counts(state)
    assert runs["push_outputs"] == 4  # the first try and three retries
    assert runs["commit_outputs"] == 1 and runs["train"] == 1
    assert "register_version" not in runs  # nothing is registered before the remote holds the outputs


def test_a_failure_after_promotion_keeps_the_new_champion_and_says_so(repo, retrain_flow, monkeypatch):
    import loraops.pipeline.retrain as retrain_record

    # Gates the tiny model can pass, so the version is champion before the failure comes.
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["promote"].update({"min_gain_over_base": -1.0, "min_recovered_share": 0.0, "max_retention_drop": 1.0})
    (repo / "params.yaml").write_text(yaml.safe_dump(params))

    def tracking_server_gone(*args, **kwargs):
        raise ConnectionError("tracking server went away after the registration")

    monkeypatch.setattr(retrain_record, "record_success", tracking_server_gone)
    state = retrain_flow(root=str(repo), return_state=True)
    assert state.is_failed()
    client = mlflow.MlflowClient(tracking_uri=Layout(repo).tracking_uri())
    (version,) = client.search_model_versions("name = 'tiny-intent'")
    assert version.tags["decision"] == "champion"
    assert str(client.get_registered_model("tiny-intent").aliases["champion"]) == str(version.version)
    assert version.tags["loraops.registration"] == "complete"
    assert "tracking server went away" in version.tags[retrain_record.FAILED_AFTER_REGISTRATION_TAG]
    run = client.get_run(version.run_id)
    assert run.data.tags[STATUS_TAG] == "failed"  # not a successful retrain: the next one runs again
    assert retrain_record.last_successful_run(Layout(repo), load_params(repo / "params.yaml")) is None
