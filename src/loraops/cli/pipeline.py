"""``loraops check | stage | run | ui``: the pipeline from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Optional

import typer

from loraops.cli.app import ParamsOption, SetOption, app, fails_cleanly, project
from loraops.core.distributed import is_main
from loraops.core.process import project_lock
from loraops.pipeline import preflight, run_stage


@app.command()
def check(params_file: Path = ParamsOption, overrides: Optional[list[str]] = SetOption) -> None:
    """Validate params.yaml and the inputs it names, without running anything."""
    with fails_cleanly():
        params, layout = project(params_file, overrides)
        preflight(params, layout)
    typer.echo(f"{params_file}: ok")


@app.command()
def stage(name: str, params_file: Path = ParamsOption, overrides: Optional[list[str]] = SetOption) -> None:
    """Run one pipeline stage (what dvc.yaml calls)."""
    with fails_cleanly():
        params, layout = project(params_file, overrides)
        # Under a launcher rank 0 holds the lock for all its processes (the others write nothing).
        with project_lock(layout.cache_dir, f"loraops stage {name}") if is_main() else nullcontext():
            result = run_stage(name, params, layout)
    typer.echo(json.dumps(result, indent=2, default=str))


@app.command()
def run(params_file: Path = ParamsOption, overrides: Optional[list[str]] = SetOption) -> None:
    """Run the whole pipeline as a Prefect flow (ephemeral unless PREFECT_API_URL points at a server)."""
    with fails_cleanly():
        params, layout = project(params_file, overrides)
        preflight(params, layout)  # fail before Prefect spends seconds starting up
        if params.search.enabled and params.search.workers_deployment:
            from loraops.search import require_shared_storage

            require_shared_storage(params, layout)  # (the flow checks it again, with the deployment)
        from flows.pipeline import pipeline  # Prefect is the flow's, not the library's

        results = pipeline(root=str(layout.root), overrides=overrides or [], params_file=str(params_file.resolve()))
    registered = results["register"]
    typer.echo(f"registered {registered['model_name']} version {registered['version']} "
               f"(run {registered['run_id']}): {registered['decision']}; see `loraops models` and `loraops ui`")


@app.command()
def ui(params_file: Path = ParamsOption, overrides: Optional[list[str]] = SetOption, port: int = 5000,
       host: str = "127.0.0.1") -> None:
    """Open the MLflow UI on the project's tracking store."""
    with fails_cleanly():
        _, layout = project(params_file, overrides)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", layout.tracking_uri(),
           "--default-artifact-root", layout.artifact_root.as_uri(), "--host", host, "--port", str(port)]
    typer.echo(f"MLflow UI on http://{host}:{port} (store {layout.tracking_uri()})")
    raise typer.Exit(subprocess.call(cmd))
