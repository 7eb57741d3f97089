"""`loraops ui` starts a real MLflow server process on 127.0.0.1 over the project's store."""

import socket
import subprocess
import time
import urllib.request

import pytest

from tests.helpers.projects import loraops_cmd

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ui_serves_the_project_store(tiny_project):
    port = free_port()
    proc = subprocess.Popen(loraops_cmd() + ["ui", "--port", str(port)], cwd=tiny_project,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline, status = time.monotonic() + 90, None
        while time.monotonic() < deadline and status is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    status = response.status
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(1)
        assert status == 200
        assert (tiny_project / "mlflow.db").is_file()  # the UI opened this project's store, not another
    finally:
        import os
        import signal

        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
