"""``loraops models | promote | rollback | predict | restore``: the registry from the command line.

They use the project's MLflow store (or ``MLFLOW_TRACKING_URI``) and the registered model named by
``registry.model_name`` (so ``-S registry.model_name=X`` reaches any model). Each first checks whether
``champion`` was moved outside loraops and handles it (:mod:`loraops.registry.hand_moves`), printing one line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from loraops.cli.app import ParamsOption, SetOption, app, fails_cleanly, project
from loraops.config import PROMOTION_GATES, Params
from loraops.core import ConfigError, Layout, RegistryError
from loraops.core.tracking import Tracking, connect
from loraops.pipeline import restore_version
from loraops.registry import champion_uri, check_champion, promote as run_promotion, rollback as run_rollback, \
    version_rows


def registry(params: Params, layout: Layout) -> Tracking:
    """The connection a registry command uses, after the hand-move check (its line goes to stderr)."""
    tracking = connect(layout, params.registry)
    moved = check_champion(tracking, params.registry.model_name, params.promote)
    if moved is not None:
        typer.echo(moved.line, err=True)
    return tracking


@app.command()
def models(params_file: Path = ParamsOption, overrides: Optional[list[str]] = SetOption,
           as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the registered versions with key metrics, aliases and gate outcomes."""
    with fails_cleanly():
        params, layout = project(params_file, overrides)
        rows = version_rows(registry(params, layout), params.registry.model_name)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo(f"{params.registry.model_name}: no versions registered")
        return
    short = {"pass": "ok", "fail": "FAIL", "skipped": "skip", "-": "-"}
    typer.echo(f"{'ver':>4} {'aliases':<20} {'accuracy':>9} {'interval':<16} {'base':>6} {'full':>6}  "
               f"{'decision':<18} gates ({', '.join(PROMOTION_GATES)})")
    for r in rows:
        interval = f"[{r['interval'][0]}, {r['interval'][1]}]" if r["interval"][0] else "-"
        gates = " ".join(short.get(s, s) if tuple(r["gates"]) == PROMOTION_GATES else f"{g}={short.get(s, s)}"
                         for g, s in r["gates"].items())  # a composed version's gates are its own, named
        typer.echo(f"{r['version']:>4} {','.join(r['aliases']) or '-':<20} {r['accuracy'] or '-':>9} {interval:<16} "
                   f"{r['base'] or '-':>6} {r['full'] or '-':>6}  {r['decision']:<18} {gates}")


@app.command()
def promote(version: int = typer.Argument(..., help="The version to promote."),
            force: bool = typer.Option(False, "--force", help="Move champion even if a gate fails."),
            reason: Optional[str] = typer.Option(None, "--reason", help="Why (required with --force)."),
            params_file: Path = ParamsOption, overrides: Optional[list[str]] = SetOption) -> None:
    """Run the gates for VERSION and make it champion if they pass (or with --force --reason)."""
    with fails_cleanly():
        if force and not (reason and reason.strip()):
            raise RegistryError("--force needs --reason TEXT (it is recorded on the version)")
        params, layout = project(params_file, overrides)
        result = run_promotion(registry(params, layout), params.registry.model_name, str(version),
                               params.promote, force_reason=reason.strip() if force and reason else None)
    for gate, status in result["gates"].items():
        typer.echo(f"  {gate:<26} {status}")
    typer.echo(f"version {version}: {result['decision']}")
    if not result["decision"].startswith("champion"):
        raise typer.Exit(code=1)


@app.command()
def rollback(params_file: Path = ParamsOption, overrides: Optional[list[str]] = SetOption) -> None:
    """Move champion back to the previous champion."""
    with fails_cleanly():
        params, layout = project(params_file, overrides)
        result = run_rollback(registry(params, layout), params.registry.model_name, params.promote)
    typer.echo(f"champion is version {result['champion']} again (version {result['rolled_back']} rolled back)")


@app.command()
def predict(text: list[str] = typer.Argument(..., help="One or more texts to classify."),
            task: Optional[str] = typer.Option(None, "--task", help="For a composed model: the source model whose "
                                                                    "task to ask (default its first source's)."),
            params_file: Path = ParamsOption, overrides: Optional[list[str]] = SetOption) -> None:
    """Answer with models:/<name>@champion, loaded offline onto the local base model (its artifacts and its
    base checked against the hashes the version records first)."""
    from loraops.registry.serving import predict_verified

    with fails_cleanly():
        params, layout = project(params_file, overrides)
        tracking = registry(params, layout)
        if champion_uri(tracking, params.registry.model_name) is None:
            raise RegistryError(f"{params.registry.model_name} has no champion yet (see `loraops models`)")
        answers = predict_verified(tracking, params.registry.model_name, "champion", list(text), task)
    for answer in answers:
        typer.echo(answer)


@app.command()
def restore(ref: str = typer.Argument(..., help="A version number of registry.model_name, or the MLflow run id "
                                                "that registered it."),
            params_file: Path = ParamsOption, overrides: Optional[list[str]] = SetOption) -> None:
    """Put back the dataset, prepared splits and adapter a version was registered with (DVC remote or cache)."""
    with fails_cleanly():
        params, layout = project(params_file, overrides)
        if layout.tracking_uri() == layout.local_tracking_uri() and not (layout.root / "mlflow.db").is_file():
            raise ConfigError(f"{layout.root}: no local MLflow store (mlflow.db); set MLFLOW_TRACKING_URI to the "
                              f"tracking server that holds {ref}")
        result = restore_version(layout, params, ref)
    typer.echo(json.dumps(result, indent=2))
