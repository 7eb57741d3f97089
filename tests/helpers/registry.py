"""For the registry tests: hand-made evaluation summaries in the evaluation stage's schema, the real
``register`` stage on them, real ``mlflow server`` processes on 127.0.0.1, and connections to a store."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from loraops.config import RegistryParams, load_params
from loraops.core import Layout, write_json
from loraops.core.tracking import Retrier, Tracking
from loraops.pipeline import run_stage

UPSTREAM = ("base_model", "ingest", "validate", "prepare", "rehearsal", "search", "train")


def evaluation(adapter: float = 0.80, base: float = 0.30, full: float | None = 0.85, half_width: float = 0.08,
               retention_drop: float | None = 0.01, sha: str = "test-set-1", diff_low: float | None = None) -> dict:
    """An eval.json as the evaluate stage writes it (EvaluationSummary); ``None`` leaves a piece of evidence out."""
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
            "recovered_share": share, "test_set_sha256": sha, "confidence": 0.95, "bootstrap_samples": 1000,
            "gain_over_base": adapter - base}


def register(layout: Layout, model_name: str, eval_json: dict, *overrides: str) -> dict:
    """The real ``register`` stage with this eval.json, into ``model_name`` (store: MLFLOW_TRACKING_URI)."""
    write_json(layout.eval_metrics, eval_json)
    params = load_params(layout.params_file, [f"registry.model_name={model_name}", "registry.retries=1",
                                              "registry.backoff_seconds=0.1", *overrides])
    return run_stage("register", params, layout)


@contextmanager
def perturbed_adapter(layout):
    """The trained adapter with random LoRA B matrices (another adapter of the same shape), put back after."""
    import torch
    from safetensors.torch import load_file, save_file

    weights = layout.adapter_dir / "adapter_model.safetensors"
    saved = weights.read_bytes()
    tensors = load_file(str(weights))
    generator = torch.Generator().manual_seed(0)
    save_file({k: (torch.randn(v.shape, generator=generator) if "lora_B" in k else v) for k, v in tensors.items()},
              str(weights))
    try:
        yield
    finally:
        weights.write_bytes(saved)


B_TASK_LABELS = ["cancel_order", "request_refund", "reset_password", "track_order"]


@contextmanager
def other_task_prompt(layout):
    """The trained adapter's prompt file as another task's: another instruction and four of its labels (so a
    composition's tasks are asked and answered differently), put back after."""
    from loraops.core import read_json
    from loraops.data import PROMPT_FILE

    path = layout.adapter_dir / PROMPT_FILE
    saved = path.read_bytes()
    spec = read_json(path)
    assert spec["template"] and set(B_TASK_LABELS) <= set(spec["labels"]), spec  # else the task is not another
    instruction = "Classify the intent of this customer request."
    assert instruction in spec["template"]
    write_json(path, {**spec, "labels": B_TASK_LABELS,
                      "template": spec["template"].replace(instruction, "Which of four requests is this?")})
    try:
        yield
    finally:
        path.write_bytes(saved)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """A real ``mlflow server`` process (sqlite backend, proxied artifacts) that tests can kill and restart."""

    def __init__(self, folder: Path, basic_auth: tuple[str, str] | None = None):
        self.folder = folder
        self.db = folder / "mlflow.db"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.basic_auth = basic_auth  # (admin user, password): run MLflow's basic-auth app, as infra/ does

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "MlflowServer":
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{self.db}",
               "--artifacts-destination", str(self.folder / "artifacts"), "--host", "127.0.0.1",
               "--port", str(self.port), "--workers", "1"]
        env = dict(os.environ)
        if self.basic_auth:
            config = self.folder / "basic_auth.ini"
            config.write_text(f"[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
                              f"database_uri = sqlite:///{self.folder / 'auth.db'}\nadmin_username = {self.basic_auth[0]}\n"
                              f"admin_password = {self.basic_auth[1]}\n"
                              "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
            cmd += ["--app-name", "basic-auth"]
            env.update(MLFLOW_AUTH_CONFIG_PATH=str(config), MLFLOW_FLASK_SERVER_SECRET_KEY="test-secret-key")
        log = (self.folder / "server.log").open("a")
        self.proc = subprocess.Popen(cmd, cwd=self.folder, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True, env=env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except urllib.error.HTTPError as exc:
                if exc.code == 401:  # the basic-auth app answers, and asks who is calling
                    return self
                time.sleep(0.3)
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


def client_for(uri: str):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def tracking_for(layout: Layout, uri: str, retries: int = 2, backoff_seconds: float = 0.1) -> Tracking:
    """A connection of its own to ``uri`` (a thread of a concurrency test needs its own client)."""
    return Tracking(layout, uri, client_for(uri), Retrier(retries, backoff_seconds))


def policy(retries: int = 1, backoff_seconds: float = 0.1) -> RegistryParams:
    return RegistryParams(retries=retries, backoff_seconds=backoff_seconds)
