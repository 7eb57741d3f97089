"""A search fanned out over a work pool (search.workers_deployment) needs a study every machine reaches: a
SQLite study is refused in one line before anything runs, and a worker refuses a study that is not the
pipeline's. The fan-out itself runs in tests/integration/test_search_deployment.py."""

from __future__ import annotations

import os
import subprocess

import pytest

from loraops.config import load_params
from loraops.core import ConfigError, Layout
from loraops.search import run_shared_worker
from tests.helpers.projects import loraops_cmd

DEPLOYMENT = "loraops-search-worker/search-worker"
SECRET = "PlantedSecret42"


def run_loraops(cwd, *args, **env):
    full = {k: v for k, v in os.environ.items()
            if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "LORAOPS_OPTUNA_STORAGE")}
    full.update(env)
    return subprocess.run(loraops_cmd() + list(args), cwd=cwd, capture_output=True, text=True, timeout=120, env=full)


@pytest.mark.parametrize("storage", [None, "sqlite:///{root}/elsewhere.db"])
def test_run_with_a_workers_deployment_refuses_a_sqlite_study_in_one_line(tiny_project, storage):
    env = {"LORAOPS_OPTUNA_STORAGE": storage.format(root=tiny_project)} if storage else {}
    result = run_loraops(tiny_project, "run", "-S", f"search.workers_deployment={DEPLOYMENT}", **env)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: search.workers_deployment '{DEPLOYMENT}' runs the workers on other machines")
    assert "SQLite" in lines[0] and "LORAOPS_OPTUNA_STORAGE" in lines[0] and "PostgreSQL" in lines[0]
    assert not (tiny_project / "data").exists() and not (tiny_project / "mlflow.db").exists()  # nothing ran


def test_a_workers_deployment_must_be_one_of_the_search_worker_flow(tiny_project):
    with pytest.raises(ConfigError, match=r"search.workers_deployment: 'loraops-retrain/retrain' is not a deployment "
                                          r"of the flow loraops-search-worker"):
        load_params(tiny_project / "params.yaml", ["search.workers_deployment=loraops-retrain/retrain"])
    params = load_params(tiny_project / "params.yaml", [f"search.workers_deployment={DEPLOYMENT}"])
    assert params.search.workers_deployment == DEPLOYMENT


def test_a_pool_worker_refuses_a_local_study_and_a_study_that_is_not_the_pipelines(tiny_project, monkeypatch):
    layout = Layout(tiny_project)
    params = load_params(layout.params_file, [f"search.workers_deployment={DEPLOYMENT}"])
    monkeypatch.delenv("LORAOPS_OPTUNA_STORAGE", raising=False)
    with pytest.raises(ConfigError, match=r"search worker 1: no shared study storage here .*set "
                                          r"LORAOPS_OPTUNA_STORAGE in the work pool's environment"):
        run_shared_worker(params, layout, 1, "loraops-search-0123456789abcdef")
    # A shared storage (nothing listens there: the study's name is checked before any connection).
    monkeypatch.setenv("LORAOPS_OPTUNA_STORAGE", f"postgresql+psycopg2://loraops:{SECRET}@127.0.0.1:9/optuna")
    with pytest.raises(ConfigError) as info:
        run_shared_worker(params, layout, 1, "loraops-search-0123456789abcdef")
    message = str(info.value)
    assert "name study loraops-search-" in message
    assert "the pipeline prepared loraops-search-0123456789abcdef" in message
    assert SECRET not in message
