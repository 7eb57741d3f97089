"""A team stack made of real local processes on 127.0.0.1 (no Docker): PostgreSQL from the machine's
packages (else SQLite, with the reason), a Prefect server, an MLflow server and a Prefect process worker.

Used by tests/integration/test_team_stack.py, tests/integration/test_search_deployment.py (the Optuna study in
the cluster's ``optuna`` database) and bench/bench_skip.py. Every process gets a free port, its
own process group and its own folders; ``stop()`` ends exactly those processes.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.helpers.projects import copy_repo, write_params

BIN = Path(sys.executable).parent
POOL = "loraops-process"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, log: Path, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {seconds} s:\n{log.read_text()[-3000:]}")


def postgres_bin() -> Path | None:
    """The Debian packages' server binaries (initdb, pg_ctl), newest version first."""
    for path in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(path, "initdb").is_file() and Path(path, "pg_ctl").is_file():
            return Path(path)
    return None


class Postgres:
    """A throwaway cluster in a folder of its own; as root, the server runs as the 'postgres' user
    (PostgreSQL refuses to run as root)."""

    def __init__(self, bin_dir: Path):
        self.bin, self.port = bin_dir, free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="loraops-pg-", dir="/tmp"))
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.dir, "postgres", "postgres")

    def _run(self, *args: str) -> None:
        result = subprocess.run(self.as_user + list(args), capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {result.stdout}{result.stderr}")

    def start(self, databases: list[str]) -> None:
        data = self.dir / "data"
        self._run(str(self.bin / "initdb"), "-D", str(data), "-U", "loraops", "--auth=trust", "-E", "UTF8")
        self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(self.dir / "server.log"), "-w", "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        for name in databases:
            self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "loraops", name)

    def url(self, database: str, driver: str = "") -> str:
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://loraops@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        subprocess.run(self.as_user + [str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


class LocalStack:
    def __init__(self, work: Path, remote: Path):
        self.work, self.remote = work, remote
        self.procs: list[subprocess.Popen] = []
        self.postgres: Postgres | None = None
        self.database = ""
        self.prefect_port, self.mlflow_port = free_port(), free_port()
        self.api_url = f"http://127.0.0.1:{self.prefect_port}/api"
        self.tracking_uri = f"http://127.0.0.1:{self.mlflow_port}"

    def env(self, **extra: str) -> dict[str, str]:
        """What a team worker or user shell has: the stack's addresses, by the names loraops reads."""
        env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", PREFECT_API_URL=self.api_url,
                   MLFLOW_TRACKING_URI=self.tracking_uri, LORAOPS_DVC_REMOTE_URL=str(self.remote),
                   PREFECT_HOME=str(self.work / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                   MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="1", PREFECT_LOGGING_LEVEL="INFO")
        env.update(extra)
        return env

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple:
        log = self.work / f"{name}.log"
        proc = subprocess.Popen(cmd, cwd=cwd or self.work, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append(proc)
        return proc, log

    def start(self) -> "LocalStack":
        self.work.mkdir(parents=True, exist_ok=True)
        pg = postgres_bin()
        if pg is not None:
            self.postgres = Postgres(pg)
            self.postgres.start(["mlflow", "prefect", "optuna"])
            prefect_db, mlflow_db = self.postgres.url("prefect", "asyncpg"), self.postgres.url("mlflow", "psycopg2")
            self.database = f"PostgreSQL ({pg.parent.name})"
        else:
            prefect_db = f"sqlite+aiosqlite:///{self.work / 'prefect.db'}"
            mlflow_db = f"sqlite:///{self.work / 'mlflow.db'}"
            self.database = "SQLite (no PostgreSQL server binaries under /usr/lib/postgresql; apt-get install postgresql)"
        server_env = self.env(PREFECT_API_DATABASE_CONNECTION_URL=prefect_db,
                              # a run waiting for the deployment's concurrency slot is re-checked after this long
                              PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS="2",
                              PREFECT_LOGGING_LEVEL="WARNING")
        server_env.pop("PREFECT_API_URL")
        prefect, prefect_log = self._spawn("prefect-server", [str(BIN / "prefect"), "server", "start", "--host",
                                                              "127.0.0.1", "--port", str(self.prefect_port)], server_env)
        mlflow, mlflow_log = self._spawn("mlflow-server", [
            str(BIN / "mlflow"), "server", "--backend-store-uri", mlflow_db, "--artifacts-destination",
            (self.work / "mlflow-artifacts").as_uri(), "--serve-artifacts", "--host", "127.0.0.1",
            "--port", str(self.mlflow_port), "--workers", "1"], self.env())
        wait_http(f"{self.api_url}/health", prefect, prefect_log)
        wait_http(f"{self.tracking_uri}/health", mlflow, mlflow_log)
        return self

    def start_worker(self, pythonpath: str = "", name: str = "prefect-worker", limit: int | None = None,
                     **env: str) -> tuple[subprocess.Popen, Path]:
        """A process worker on the pool and its log (``name`` names both); ``limit``: at most that many flow
        runs at once; ``env``: what its flow runs' environment adds."""
        env = self.env(PREFECT_WORKER_QUERY_SECONDS="1", PREFECT_WORKER_PREFETCH_SECONDS="5",
                       LORAOPS_RETRY_BACKOFF_SECONDS="1", **env)
        if pythonpath:
            env["PYTHONPATH"] = pythonpath
        cmd = [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--type", "process", "--name", name]
        return self._spawn(name, cmd + (["--limit", str(limit)] if limit else []), env)

    def end(self, proc: subprocess.Popen) -> None:
        """End one of the stack's processes (a worker a test is done with) and its process group."""
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=8)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-2500:]}" for p in sorted(self.work.glob("*.log")))

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=8)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if self.postgres is not None:
            self.postgres.stop()


def committed_project(dest: Path, tiny_base: Path) -> Path:
    """A copy of this repository using the tiny base model, committed in a fresh git repo."""
    repo = copy_repo(dest)
    write_params(repo, tiny_base)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"], cwd=repo, check=True)
    return repo


def trigger(client, deployment_id, count: int = 1) -> list:
    """Create ``count`` flow runs of the deployment at once; wait until all are final; return them."""
    ids = [client.create_flow_run_from_deployment(deployment_id).id for _ in range(count)]
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        runs = [client.read_flow_run(i) for i in ids]
        if all(r.state and r.state.type.value in FINAL for r in runs):
            return runs
        time.sleep(1)
    raise TimeoutError(f"flow runs {ids} not final after 240 s")
