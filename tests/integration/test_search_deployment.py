"""The search fanned out over a work pool: the pipeline's search stage starts search.n_jobs flow runs of the
`search-worker` deployment, two Prefect process workers run them, and every worker shares one Optuna study in
a real PostgreSQL (tests/helpers/team_stack.py: PostgreSQL, a Prefect server and an MLflow server on
127.0.0.1). The budget holds (exactly n_trials counted trials), no trial is run twice, both flow runs
complete (one per worker), the choice is written, and the storage's password is nowhere in what Prefect
stores or prints.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from loraops.config import load_params
from loraops.core import ConfigError, Layout, read_json
from loraops.search import study_name
from tests.helpers.projects import REPO, loraops_cmd, new_project, run_stages
from tests.helpers.team_stack import LocalStack, postgres_bin

pytestmark = pytest.mark.integration

DEPLOYMENT = "loraops-search-worker/search-worker"
# Plain LoRA, 2 steps a trial, 4 val rows: a trial takes seconds. Random sampling over a continuous learning
# rate: two workers drawing the same configuration would mean they shared a sampler seed.
SEARCH = {"n_trials": 4, "n_jobs": 2, "max_steps": 2, "eval_steps": 1, "ranks": [2, 4],
          "target_modules": ["attention"], "learning_rate": [1e-3, 3e-2], "val_items": 4, "pruner": "none",
          "sampler": "random", "heartbeat_seconds": 2, "beat_base": False, "rehearsal_shares": [0.0],
          "workers_deployment": DEPLOYMENT}
PASSWORD = "s3cret-never-shown"  # the test cluster trusts every local login, so any password connects

# The pipeline's search stage (flows.pipeline.search_stage, as `loraops run` and the retrain run it) inside a
# flow run on the stack's server, on a project whose earlier stages ran.
SEARCH_ONLY = """
import json, sys, time
from pathlib import Path
from prefect import flow
from flows.pipeline import check_search_fan_out, search_stage
from loraops.config import load_params
from loraops.core import Layout

@flow(name="search-stage-only")
def search_only(root: str) -> dict:
    layout = Layout(Path(root))
    params = load_params(layout.params_file)
    check_search_fan_out(params, layout)
    return search_stage(params, layout)

started = time.monotonic()
choice = search_only(sys.argv[1])
print("CHOICE", json.dumps({"seconds": time.monotonic() - started, **choice}))
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if postgres_bin() is None:
        pytest.skip("needs PostgreSQL's server binaries (apt-get install postgresql; .ci/run installs them)")
    work = tmp_path_factory.mktemp("stack")
    stack = LocalStack(work / "stack", work / "dvc-remote")
    try:
        yield stack.start()
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_base):
    """A project whose stages before the search ran, with the repository's prefect.yaml, flows/ and infra/k8s/."""
    layout = new_project(tmp_path_factory.mktemp("search-deployment") / "prepared", tiny_base, search=SEARCH)
    shutil.copy(REPO / "prefect.yaml", layout.root / "prefect.yaml")
    shutil.copytree(REPO / "flows", layout.root / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "infra" / "k8s", layout.root / "infra" / "k8s")  # the GPU pool's job template
    run_stages(layout, "base_model", "ingest", "validate", "prepare")
    return layout.root


def project(prepared, tmp_path, seed: int) -> Layout:
    """A copy of the prepared project whose study is its own (the search seed is in the study's name): the
    tests share one storage."""
    root = tmp_path / "project"
    shutil.copytree(prepared, root, ignore=shutil.ignore_patterns(".loraops"))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["search"]["seed"] = seed
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return Layout(root)


def deploy(root, env) -> str:
    deployed = subprocess.run(loraops_cmd() + ["deploy", "--name", "search-worker", "-p", str(root / "params.yaml")],
                              cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    return deployed.stdout


def wait_online(stack, names: set[str], seconds: float = 180) -> None:
    """Until the pool's workers ``names`` have sent their first heartbeat (a flow run created before would go
    to whichever worker polls first)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    deadline = time.monotonic() + seconds
    with temporary_settings({PREFECT_API_URL: stack.api_url}), get_client(sync_client=True) as client:
        while True:
            online = {w.name for w in client.read_workers_for_work_pool("loraops-process")
                      if w.status.value == "ONLINE"}
            if names <= online:
                return
            assert time.monotonic() < deadline, f"workers {names - online} not online:\n{stack.logs()}"
            time.sleep(1)


def search_stage_run(root, env) -> tuple[int, str]:
    result = subprocess.run([sys.executable, "-c", SEARCH_ONLY, str(root)], cwd=root, env=env, capture_output=True,
                            text=True, timeout=600)
    return result.returncode, result.stdout + result.stderr


def test_two_pool_workers_share_one_postgres_study_within_its_budget(tmp_path, prepared, stack):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    layout = project(prepared, tmp_path, seed=1)
    root = layout.root
    storage = stack.postgres.url("optuna", "psycopg2").replace("loraops@", f"loraops:{PASSWORD}@")
    env = stack.env(LORAOPS_OPTUNA_STORAGE=storage, PYTHONPATH=os.environ.get("PYTHONPATH", ""))
    assert f"search.workers_deployment={DEPLOYMENT}" in deploy(root, env)
    # One flow run at a time per worker, as one trainer per machine: the two runs go to the two workers.
    workers = [stack.start_worker(os.environ.get("PYTHONPATH", ""), name=f"search-pool-worker-{i}", limit=1,
                                  LORAOPS_OPTUNA_STORAGE=storage) for i in (0, 1)]
    try:
        wait_online(stack, {"search-pool-worker-0", "search-pool-worker-1"})
        started = time.monotonic()
        returncode, output = search_stage_run(root, env)
    finally:
        for proc, _ in workers:
            stack.end(proc)
    assert returncode == 0, f"{output[-4000:]}\n{stack.logs()}"
    choice = json.loads(output.split("CHOICE ", 1)[1].splitlines()[0])
    print(f"team stack database: {stack.database}; search stage {choice['seconds']:.1f} s in its flow, "
          f"{time.monotonic() - started:.1f} s with the interpreter's start")

    # The budget holds: exactly n_trials finished trials that count, none left running, none run twice.
    params = load_params(layout.params_file)
    study = optuna.load_study(study_name=study_name(params, layout), storage=storage)
    trials = study.get_trials(deepcopy=False)
    counted = [t for t in trials if not t.user_attrs.get("over_budget")]
    assert len(counted) == SEARCH["n_trials"], [(t.number, t.state.name, t.user_attrs) for t in trials]
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in counted), [t.state for t in counted]
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert len({t.number for t in trials}) == len(trials)
    configs = [tuple(sorted(t.params.items())) for t in counted]
    assert len(set(configs)) == len(configs), configs
    assert len({t.user_attrs["mlflow_run_id"] for t in counted}) == len(counted)
    assert {t.user_attrs["worker"] for t in counted} <= {0, 1}
    chosen = read_json(layout.search_choice)
    assert chosen["source"] == "search" and chosen["trial"] in {t.number for t in counted}
    assert chosen["trials"]["complete"] + chosen["trials"]["pruned"] == SEARCH["n_trials"]
    assert chosen["study_name"] == study.study_name and PASSWORD not in layout.search_choice.read_text()
    print("trials per sampler index:", {w: sum(1 for t in counted if t.user_attrs["worker"] == w) for w in (0, 1)},
          "wall seconds per trial:", [round(t.user_attrs["wall_seconds"], 1) for t in counted])

    with temporary_settings({PREFECT_API_URL: stack.api_url}), get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(DEPLOYMENT)
        assert deployment.work_pool_name == "loraops-process"
        runs = [r for r in client.read_flow_runs(deployment_filter=DeploymentFilter(
                    id=DeploymentFilterId(any_=[deployment.id]))) if r.parameters.get("study") == study.study_name]
        assert sorted(r.name for r in runs) == ["search-worker-0", "search-worker-1"]
        assert all(r.state.is_completed() for r in runs), [(r.name, r.state) for r in runs]
        assert all(r.parent_task_run_id is not None for r in runs)  # subflows of the stage's flow run
        assert sorted(r.parameters["worker"] for r in runs) == [0, 1]
        assert {r.parameters["study"] for r in runs} == {study.study_name}
        assert PASSWORD not in json.dumps([r.parameters for r in runs])
        for r in sorted(runs, key=lambda r: r.name):
            print(f"{r.name}: started {(r.start_time - r.created).total_seconds():.1f} s after it was created, "
                  f"ran {r.total_run_time.total_seconds():.1f} s")
    # The pool's workers (not the pipeline's process) picked up every flow run. Which worker took which is the
    # pool's business: two workers may both try to claim one run (the server lets one have it), and a worker
    # that finished its run may take the next, so the split between them is not asserted.
    submitted = [set(re.findall(r"submitting flow run '([0-9a-f-]+)'", log.read_text())) for _, log in workers]
    assert submitted[0] | submitted[1] == {str(r.id) for r in runs}, stack.logs()
    every_log = "\n".join(path.read_text() for path in stack.work.glob("*.log"))
    assert PASSWORD not in output and PASSWORD not in every_log


def test_a_missing_deployment_study_or_storage_is_one_line_without_the_password(tmp_path, prepared, stack,
                                                                                 monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.pipeline import check_search_fan_out
    from loraops.search import run_shared_worker

    layout = project(prepared, tmp_path, seed=2)
    root = layout.root
    storage = stack.postgres.url("optuna", "psycopg2").replace("loraops@", f"loraops:{PASSWORD}@")
    monkeypatch.setenv("LORAOPS_OPTUNA_STORAGE", storage)
    # The pipeline checks before its first stage that the server has the deployment.
    missing = "loraops-search-worker/never-deployed"
    params = load_params(layout.params_file, [f"search.workers_deployment={missing}"])
    with temporary_settings({PREFECT_API_URL: stack.api_url}):
        with pytest.raises(ConfigError, match=rf"search.workers_deployment '{missing}': no such deployment on "
                                              rf"{re.escape(stack.api_url)}; create it with `loraops deploy --name "
                                              "search-worker`"):
            check_search_fan_out(params, layout)
    # A worker whose storage holds no such study (the pipeline never prepared it there) runs nothing.
    with pytest.raises(ConfigError, match=r"search worker 0: postgresql\+psycopg2://loraops:\*\*\*@.* holds no "
                                          r"study loraops-search-") as info:
        run_shared_worker(load_params(layout.params_file, ["search.seed=12345"]), layout, 0)
    assert PASSWORD not in str(info.value)

    # A pool whose one worker's environment names no storage: both flow runs fail, and so does the stage, in
    # one line naming each run and why.
    env = stack.env(LORAOPS_OPTUNA_STORAGE=storage, PYTHONPATH=os.environ.get("PYTHONPATH", ""))
    deploy(root, env)
    proc, _ = stack.start_worker(os.environ.get("PYTHONPATH", ""), name="pool-worker-without-storage",
                                 LORAOPS_OPTUNA_STORAGE="")
    try:
        returncode, output = search_stage_run(root, env)
    finally:
        stack.end(proc)
    assert returncode != 0 and "CHOICE" not in output, output[-4000:]
    line = next((l for l in output.splitlines() if "worker flow run(s) of" in l and "search-worker-0" in l), "")
    assert re.search(rf"search: 2 of 2 worker flow run\(s\) of {DEPLOYMENT} did not complete: "
                     r"search-worker-\d FAILED: .*search worker \d: no shared study storage here", line), output[-4000:]
    assert "search-worker-0 FAILED" in line and "search-worker-1 FAILED" in line
    assert PASSWORD not in output and not layout.search_choice.exists()

    # The Kubernetes variant: the server takes it on the GPU pool, its jobs in the image's /opt/loraops.
    gpu = subprocess.run(loraops_cmd() + ["deploy", "--name", "search-worker-gpu", "-p", str(root / "params.yaml")],
                         cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert gpu.returncode == 0, gpu.stdout + gpu.stderr
    assert "search.workers_deployment=loraops-search-worker/search-worker-gpu" in gpu.stdout
    with temporary_settings({PREFECT_API_URL: stack.api_url}), get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("loraops-search-worker/search-worker-gpu")
        assert deployment.work_pool_name == "loraops-k8s-gpu"
        assert client.read_work_pool("loraops-k8s-gpu").type == "kubernetes"
        (step,) = deployment.pull_steps
        assert step["prefect.deployments.steps.set_working_directory"]["directory"] == "/opt/loraops"
