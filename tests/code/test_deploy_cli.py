"""`loraops deploy` and `loraops restore` fail at once, in one line, with exit code 2, on bad input."""

import os
import shutil
import subprocess

from tests.helpers.projects import REPO, loraops_cmd


def run_cli(cwd, *args, **env):
    full = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
    full.update(env)
    return subprocess.run(loraops_cmd() + list(args), cwd=cwd, capture_output=True, text=True, timeout=120, env=full)


def one_line_error(result) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_deploy_needs_a_prefect_server(tiny_project):
    shutil.copy(REPO / "prefect.yaml", tiny_project / "prefect.yaml")
    assert "PREFECT_API_URL is not set" in one_line_error(run_cli(tiny_project, "deploy"))


def test_deploy_names_the_file_and_the_known_deployments(tiny_project):
    shutil.copy(REPO / "prefect.yaml", tiny_project / "prefect.yaml")
    message = one_line_error(run_cli(tiny_project, "deploy", "--name", "nightly",
                                     PREFECT_API_URL="http://127.0.0.1:9/api"))
    assert "prefect.yaml" in message and "'nightly'" in message and "retrain" in message


def test_deploy_without_prefect_yaml(tiny_project):
    message = one_line_error(run_cli(tiny_project, "deploy", PREFECT_API_URL="http://127.0.0.1:9/api"))
    assert "prefect.yaml: not found" in message


def test_restore_without_a_tracking_store_says_where_to_look(tiny_project):
    message = one_line_error(run_cli(tiny_project, "restore", "0123456789abcdef"))
    assert "MLFLOW_TRACKING_URI" in message and "0123456789abcdef" in message
    assert not (tiny_project / "mlflow.db").exists() and not (tiny_project / "dvc.lock").exists()


def test_restore_of_an_unknown_run_fails_cleanly(tiny_project):
    from loraops.config import load_params
    from loraops.pipeline.retrain import last_successful_run
    from loraops.core import Layout

    layout = Layout(tiny_project)
    assert last_successful_run(layout, load_params(layout.params_file)) is None  # an empty store
    result = run_cli(tiny_project, "restore", "0123456789abcdef")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: run 0123456789abcdef"), result.stderr
    assert not (tiny_project / "dvc.lock").exists()
