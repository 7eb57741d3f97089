"""Shared by the registry tests: one trained tiny adapter per session, hand-made eval.json files in the
evaluation contract's schema, and real ``mlflow server`` processes on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import copy_repo, write_params
from loraops.config import load_params
from loraops.project import Layout, write_json
from loraops.steps import run_stage

UPSTREAM = ("base_model", "ingest", "validate", "prepare", "search", "train")


# Test modules import these fixtures, so pytest holds one definition per module; this cache makes the
# work (training, starting a server) happen once per session all the same.
_SHARED: dict = {}


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory, tiny_base) -> Layout:
    """A copy of the repository (git + DVC) whose stages up to ``train`` ran on the tiny model; the
    tests write their own ``metrics/eval.json`` before registering."""
    if "trained" not in _SHARED:
        root = copy_repo(tmp_path_factory.mktemp("registry") / "project")
        write_params(root, tiny_base)
        layout = Layout(root)
        params = load_params(layout.params_file)
        for name in UPSTREAM:
            run_stage(name, params, layout)
        _SHARED["trained"] = layout
    return _SHARED["trained"]


def evaluation(adapter: float = 0.80, base: float = 0.30, full: float | None = 0.85, half_width: float = 0.08,
               retention_drop: float | None = 0.01, sha: str = "test-set-1", diff_low: float | None = None) -> dict:
    """An eval.json as the evaluation stage (issue 6) writes it; ``None`` leaves a piece of evidence out."""
    def scores(acc: float, drop: float | None) -> dict:
        out = {"accuracy": acc, "accuracy_low": acc - half_width, "accuracy_high": acc + half_width,
               "macro_f1": acc - 0.02, "items": 100, "seconds": 1.0, "retention": 0.5 - (drop or 0)}
        if drop is not None:
            out["retention_drop"] = drop
        return out

    models = {"adapter": scores(adapter, retention_drop), "base": scores(base, 0.0)}
    differences = {"adapter_minus_base": {"mean": adapter - base,
                                          "low": adapter - base - 0.1 if diff_low is None else diff_low,
                                          "high": adapter - base + 0.1}}
    if full is not None:
        models["full"] = scores(full, 0.02)
        differences["adapter_minus_full"] = {"mean": adapter - full, "low": adapter - full - 0.1,
                                             "high": adapter - full + 0.1}
    share = (adapter - base) / (full - base) if full is not None and full != base else None
    return {"headline": "accuracy", "test_items": 100, "models": models, "differences": differences,
            "recovered_share": share, "test_set_sha256": sha}


def register(layout: Layout, model_name: str, eval_json: dict, *overrides: str) -> dict:
    """The real ``register`` stage with this eval.json, into ``model_name`` (store: MLFLOW_TRACKING_URI)."""
    write_json(layout.eval_metrics, eval_json)
    params = load_params(layout.params_file, [f"registry.model_name={model_name}", "registry.retries=1",
                                              "registry.backoff_seconds=0.1", *overrides])
    return run_stage("register", params, layout)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """A real ``mlflow server`` process (sqlite backend, proxied artifacts) that tests can kill and restart."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.db = folder / "mlflow.db"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "MlflowServer":
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{self.db}",
               "--artifacts-destination", str(self.folder / "artifacts"), "--host", "127.0.0.1",
               "--port", str(self.port), "--workers", "1"]
        log = (self.folder / "server.log").open("a")
        self.proc = subprocess.Popen(cmd, cwd=self.folder, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError((self.folder / "server.log").read_text()[-3000:])
                time.sleep(0.3)
        raise RuntimeError("mlflow server did not start in 120 s")

    def kill(self) -> None:
        """SIGKILL the whole process group: no graceful shutdown, like a crashed server."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """One server for the session (each test uses its own registered model name); a test may kill and
    restart it, on the same database, artifacts and port."""
    if "server" not in _SHARED:
        _SHARED["server"] = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    yield _SHARED["server"]
    _SHARED["server"].stop()


def client_for(uri: str):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
