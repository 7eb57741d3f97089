"""The ``loraops`` command line: thin commands over the library (and, for ``run``, the Prefect flow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import typer

from loraops.errors import LoraopsError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="MLOps pipeline for LoRA/QLoRA adapters.")

SetOption = typer.Option(None, "--set", "-S", help="Override a param, e.g. -S train.learning_rate=2e-4")
ParamsOption = typer.Option(Path("params.yaml"), "--params", "-p", help="The project's params file.")

# No telemetry from any of the tools, and nothing from the Hugging Face Hub at run time for metrics.
QUIET_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
             "HF_EVALUATE_OFFLINE": "1", "DO_NOT_TRACK": "1", "TOKENIZERS_PARALLELISM": "false"}


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code=2)


def _setup(params_file: Path, overrides: Optional[list[str]]):
    from loraops.config import load_params
    from loraops.project import Layout

    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    layout = Layout(params_file.resolve().parent)
    return load_params(params_file, overrides or []), layout


@app.command()
def check(params_file: Path = ParamsOption, overrides: Optional[list[str]] = SetOption) -> None:
    """Validate params.yaml and the inputs it names, without running anything."""
    from loraops.steps import preflight

    try:
        params, layout = _setup(params_file, overrides)
        preflight(params, layout)
    except LoraopsError as exc:
        _fail(exc)
    typer.echo(f"{params_file}: ok")


@app.command()
def stage(name: str, params_file: Path = ParamsOption, overrides: Optional[list[str]] = SetOption) -> None:
    """Run one pipeline stage (what dvc.yaml calls)."""
    from loraops.steps import run_stage

    try:
        params, layout = _setup(params_file, overrides)
        result = run_stage(name, params, layout)
    except LoraopsError as exc:
        _fail(exc)
    typer.echo(json.dumps(result, indent=2, default=str))


@app.command()
def run(params_file: Path = ParamsOption, overrides: Optional[list[str]] = SetOption) -> None:
    """Run the whole pipeline as a Prefect flow (ephemeral unless PREFECT_API_URL points at a server)."""
    try:
        params, layout = _setup(params_file, overrides)
        from loraops.steps import preflight

        preflight(params, layout)  # fail before Prefect spends seconds starting up
        from flows.pipeline import pipeline

        results = pipeline(root=str(layout.root), overrides=overrides or [])
    except LoraopsError as exc:
        _fail(exc)
    registered = results["register"]
    typer.echo(f"registered {registered['model_name']} version {registered['version']} "
               f"(run {registered['run_id']}); see `loraops ui`")


@app.command()
def ui(params_file: Path = ParamsOption, port: int = 5000, host: str = "127.0.0.1") -> None:
    """Open the MLflow UI on the project's tracking store."""
    params, layout = _setup(params_file, None)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", layout.tracking_uri(),
           "--default-artifact-root", layout.artifact_root.as_uri(), "--host", host, "--port", str(port)]
    typer.echo(f"MLflow UI on http://{host}:{port} (store {layout.tracking_uri()})")
    raise typer.Exit(subprocess.call(cmd))


from loraops.models_cli import attach as _attach_registry_commands  # noqa: E402  (issue 7)

_attach_registry_commands(app)

# Issue 8: scheduled retraining (`loraops deploy`) and restoring a version from the DVC remote (`loraops restore`).
from loraops.cli_team import attach as _attach_team_commands  # noqa: E402

_attach_team_commands(app)


if __name__ == "__main__":
    app()
