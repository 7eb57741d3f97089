"""``loraops deploy``: scheduled retraining (and the search's workers) on a Prefect server.

It drives the ``prefect`` command line (the library never imports Prefect). The deployment itself is defined
once, in the project's ``prefect.yaml``; ``deploy`` creates its work pool when missing, then runs
``prefect deploy`` for it from the project root, so the worker runs the flow in this folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import typer
import yaml

from loraops.cli.app import ParamsOption, SetOption, app, fails_cleanly, project
from loraops.config import SEARCH_WORKER_FLOW
from loraops.core import ConfigError, LoraopsError

# The flows prefect.yaml's entrypoints name (the deployments are FLOW/DEPLOYMENT on the server).
FLOWS = {"flows/retrain.py:retrain": "loraops-retrain", "flows/search_worker.py:search_worker": SEARCH_WORKER_FLOW}
# Work pools the deployments in prefect.yaml name: their worker type and base job template (if not Prefect's).
POOL_TYPES = {"loraops-process": ("process", None),
              "loraops-k8s-gpu": ("kubernetes", "infra/k8s/gpu-job-template.json")}


def prefect_cli(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).with_name("prefect")), "--no-prompt", *args]
    result = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise LoraopsError(f"prefect {' '.join(args)} failed: {(result.stdout + result.stderr).strip()[-1500:]}")
    return result


def deployment_spec(root: Path, name: str) -> dict:
    path = root / "prefect.yaml"
    if not path.is_file():
        raise ConfigError(f"{path}: not found; deployments are defined there")
    specs = {d.get("name"): d for d in (yaml.safe_load(path.read_text()) or {}).get("deployments", [])}
    if name not in specs:
        raise ConfigError(f"{path}: no deployment named {name!r} (have {', '.join(map(str, specs))})")
    return specs[name]


def ensure_work_pool(root: Path, pool: str) -> str:
    """Create ``pool`` when the server does not have it; returns 'created' or 'exists'."""
    if prefect_cli(root, "work-pool", "inspect", pool, check=False).returncode == 0:
        return "exists"
    kind, template = POOL_TYPES.get(pool, ("process", None))
    args = ["work-pool", "create", pool, "--type", kind]
    if template:
        args += ["--base-job-template", str(root / template)]
    prefect_cli(root, *args)
    return "created"


@app.command()
def deploy(name: str = typer.Option("retrain", "--name", "-n", help="Deployment in prefect.yaml."),
           cron: Optional[str] = typer.Option(None, help="Replace the schedule, e.g. '0 */6 * * *'."),
           pool: Optional[str] = typer.Option(None, help="Work pool (default: the one prefect.yaml names)."),
           params_file: Path = ParamsOption, overrides: Optional[list[str]] = SetOption) -> None:
    """Create or update a deployment of prefect.yaml (beside the params file) on the Prefect server at
    PREFECT_API_URL: the scheduled retrain (default), or the search's workers (--name search-worker)."""
    with fails_cleanly():
        _, layout = project(params_file, overrides)
        root = layout.root
        if not os.environ.get("PREFECT_API_URL"):
            raise ConfigError("PREFECT_API_URL is not set: a schedule needs a Prefect server "
                              "(`prefect server start`, or the team stack in infra/)")
        spec = deployment_spec(root, name)
        pool = pool or spec["work_pool"]["name"]
        typer.echo(f"work pool {pool}: {ensure_work_pool(root, pool)}")
        args = ["deploy", "--prefect-file", str(root / "prefect.yaml"), "--name", name, "--pool", pool]
        if cron:
            args += ["--cron", cron]
        prefect_cli(root, *args)
    flow = FLOWS.get(spec["entrypoint"], spec["entrypoint"])
    typer.echo(f"deployed {flow}/{name} (pool {pool}); start a worker: prefect worker start --pool {pool}")
    if flow == SEARCH_WORKER_FLOW:
        typer.echo(f"fan the search out over it: -S search.workers_deployment={flow}/{name} (search.n_jobs runs; "
                   "LORAOPS_OPTUNA_STORAGE set to PostgreSQL for the pipeline and every worker)")
    else:
        typer.echo(f"trigger now: prefect deployment run {flow}/{name}")
