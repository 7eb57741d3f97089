"""The registry tests' shared, session-wide setup: one trained tiny adapter and one real MLflow server."""

from __future__ import annotations

import pytest

from loraops.core import Layout
from tests.helpers.projects import copy_repo, run_stages, write_params
from tests.helpers.registry import UPSTREAM, MlflowServer


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory, tiny_base) -> Layout:
    """A copy of the repository (git + DVC) whose stages up to ``train`` ran on the tiny model; the
    tests write their own ``metrics/eval.json`` before registering."""
    root = copy_repo(tmp_path_factory.mktemp("registry") / "project")
    write_params(root, tiny_base)
    layout = Layout(root)
    run_stages(layout, *UPSTREAM)
    return layout


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """One server for the session (each test uses its own registered model name); a test may kill and
    restart it, on the same database, artifacts and port."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    yield server
    server.stop()
