"""The team stack's MLflow is closed: the basic-auth app (as infra/compose.yaml runs it) refuses anonymous
calls, and loraops works with the credentials from the environment (MLFLOW_TRACKING_USERNAME/PASSWORD)."""

import base64
import json
import urllib.error
import urllib.request

import pytest
from typer.testing import CliRunner

from loraops.cli import app
from tests.helpers.registry import MlflowServer

pytestmark = pytest.mark.integration


def get(url: str, auth: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_mlflow_basic_auth_refuses_anonymous_calls_and_loraops_logs_in(tiny_project, tmp_path, monkeypatch):
    admin = ("loraops-admin", "a-long-test-password")
    server = MlflowServer(tmp_path / "mlflow", basic_auth=admin)
    (tmp_path / "mlflow").mkdir()
    server.start()
    try:
        search = f"{server.uri}/api/2.0/mlflow/registered-models/search"
        assert get(search) == 401
        assert get(search, ("loraops-admin", "wrong")) == 401
        assert get(search, admin) == 200
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
        runner = CliRunner()
        monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
        refused = runner.invoke(app, ["models", "--json", "-p", str(tiny_project / "params.yaml")])
        assert refused.exit_code == 2 and "Traceback" not in refused.output, refused.output
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", admin[0])
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin[1])
        allowed = runner.invoke(app, ["models", "--json", "-p", str(tiny_project / "params.yaml")])
        assert allowed.exit_code == 0 and json.loads(allowed.stdout) == [], allowed.output
    finally:
        server.stop()
