"""A secret planted in every URL a run is given from the environment (the MLflow tracking URI and the Optuna
storage, both on a real PostgreSQL with a password) appears in no output, log, artifact, database row
or file the run leaves behind: stdout and stderr of `loraops run` and of a failing command, every file of the
project (outputs, mlruns, metrics, reports, the DVC cache), Prefect's home (its database and logs), and a dump
of both PostgreSQL databases."""

import os
import subprocess
import uuid

import pytest

from tests.helpers.projects import loraops_cmd
from tests.helpers.team_stack import Postgres, committed_project, postgres_bin

pytestmark = pytest.mark.integration


def files_holding(folder, secret: bytes) -> list[str]:
    found = []
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if secret in path.read_bytes():
                    found.append(str(path))
            except OSError:
                pass
    return found


def test_a_planted_secret_appears_in_no_output_log_or_artifact(tmp_path, tiny_base):
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("needs PostgreSQL's server binaries (apt-get install postgresql; .ci/run installs them)")
    secret = f"PlantedSecret{uuid.uuid4().hex[:12]}"
    postgres = Postgres(bin_dir)
    postgres.start(["mlflow", "optuna"])  # trust authentication: the password is accepted and ignored
    try:
        host = f"127.0.0.1:{postgres.port}"
        tracking = f"postgresql+psycopg2://loraops:{secret}@{host}/mlflow"
        storage = f"postgresql+psycopg2://loraops:{secret}@{host}/optuna"
        repo = committed_project(tmp_path / "repo", tiny_base)
        home = tmp_path / "prefect-home"
        env = dict(os.environ, MLFLOW_TRACKING_URI=tracking, LORAOPS_OPTUNA_STORAGE=storage, PREFECT_HOME=str(home),
                   PREFECT_LOGGING_LEVEL="INFO")
        run = subprocess.run([*loraops_cmd(), "run"], cwd=repo, env=env, capture_output=True, text=True, timeout=1500)
        assert run.returncode == 0, run.stderr[-3000:]
        assert "registered tiny-intent version 1" in run.stdout
        # A command that fails on the same URI (a port nobody listens on) says where, without the password.
        dead = tracking.replace(host, "127.0.0.1:1")
        failed = subprocess.run([*loraops_cmd(), "stage", "register", "-S", "registry.retries=0"], cwd=repo,
                                env=dict(env, MLFLOW_TRACKING_URI=dead), capture_output=True, text=True, timeout=600)
        assert failed.returncode == 2 and "127.0.0.1:1" in failed.stderr, failed.stderr[-2000:]

        leaks = [name for name, text in (("run stdout", run.stdout), ("run stderr", run.stderr),
                                         ("failed stdout", failed.stdout), ("failed stderr", failed.stderr))
                 if secret in text]
        leaks += files_holding(repo, secret.encode()) + files_holding(home, secret.encode())
        for database in ("mlflow", "optuna"):
            dump = subprocess.run(postgres.as_user + [str(bin_dir / "pg_dump"), "-h", "127.0.0.1", "-p",
                                                      str(postgres.port), "-U", "loraops", database],
                                  capture_output=True, timeout=120)
            assert dump.returncode == 0 and b"CREATE TABLE" in dump.stdout, dump.stderr[-500:]
            if secret.encode() in dump.stdout:
                leaks.append(f"PostgreSQL database {database}")
        assert leaks == [], leaks
        assert "loraops:***@" in (repo / "metrics" / "registration.json").read_text()
    finally:
        postgres.stop()
