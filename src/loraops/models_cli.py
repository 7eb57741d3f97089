"""``loraops models | promote | rollback | predict``: the registry from the command line.

They use the project's MLflow store (or ``MLFLOW_TRACKING_URI``) and the registered model named by
``registry.model_name`` in params.yaml.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from loraops.config import PROMOTION_GATES
from loraops.errors import RegistryError

ParamsOption = typer.Option(Path("params.yaml"), "--params", "-p", help="The project's params file.")


def _open(params_file: Path) -> tuple[Any, Any, Any, Any]:
    import mlflow

    from loraops.cli import _setup
    from loraops.retrying import Retrier, quiet_mlflow_client

    params, layout = _setup(params_file, None)
    quiet_mlflow_client()
    client = mlflow.MlflowClient(tracking_uri=layout.tracking_uri(), registry_uri=layout.tracking_uri())
    return params, layout, client, Retrier(params.registry.retries, params.registry.backoff_seconds)


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", err=True)
    raise typer.Exit(code=2)


def version_rows(client: Any, name: str) -> list[dict[str, Any]]:
    rows = []
    # Search results leave aliases out; the registered model has the alias -> version map.
    from mlflow.exceptions import MlflowException

    try:
        registered = client.get_registered_model(name)
    except MlflowException as exc:
        if getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise
    by_version: dict[str, list[str]] = {}
    for alias, number in registered.aliases.items():
        by_version.setdefault(str(number), []).append(alias)
    for version in sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version)):
        tags = version.tags
        rows.append({"version": int(version.version), "aliases": sorted(by_version.get(str(version.version), [])),
                     "accuracy": tags.get("eval.adapter.accuracy"),
                     "interval": [tags.get("eval.adapter.accuracy_low"), tags.get("eval.adapter.accuracy_high")],
                     "base": tags.get("eval.base.accuracy"), "full": tags.get("eval.full.accuracy"),
                     "decision": tags.get("promotion.decision", "not evaluated"),
                     "gates": {g: tags.get(f"gate.{g}", "-") for g in PROMOTION_GATES},
                     "forced_reason": tags.get("promotion.forced_reason"), "run_id": version.run_id})
    return rows


def models(params_file: Path = ParamsOption,
           as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the registered versions with key metrics, aliases and gate outcomes."""
    try:
        params, _, client, _ = _open(params_file)
        rows = version_rows(client, params.registry.model_name)
    except Exception as exc:  # a server that is down is reported, not a traceback
        _fail(exc)
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
        gates = " ".join(short.get(s, s) for s in r["gates"].values())
        typer.echo(f"{r['version']:>4} {','.join(r['aliases']) or '-':<20} {r['accuracy'] or '-':>9} {interval:<16} "
                   f"{r['base'] or '-':>6} {r['full'] or '-':>6}  {r['decision']:<18} {gates}")


def promote(version: int = typer.Argument(..., help="The version to promote."),
            force: bool = typer.Option(False, "--force", help="Move champion even if a gate fails."),
            reason: Optional[str] = typer.Option(None, "--reason", help="Why (required with --force)."),
            params_file: Path = ParamsOption) -> None:
    """Run the gates for VERSION and make it champion if they pass (or with --force --reason)."""
    from loraops.promotion import promote as run_promotion

    try:
        if force and not (reason and reason.strip()):
            raise RegistryError("--force needs --reason TEXT (it is recorded on the version)")
        params, _, client, retry = _open(params_file)
        result = run_promotion(client, params.registry.model_name, str(version), params.promote, retry,
                               force_reason=reason.strip() if force and reason else None)
    except Exception as exc:
        _fail(exc)
    for gate, status in result["gates"].items():
        typer.echo(f"  {gate:<26} {status}")
    typer.echo(f"version {version}: {result['decision']}")
    if not result["decision"].startswith("champion"):
        raise typer.Exit(code=1)


def rollback(params_file: Path = ParamsOption) -> None:
    """Move champion back to the previous champion."""
    from loraops.promotion import rollback as run_rollback

    try:
        params, _, client, retry = _open(params_file)
        result = run_rollback(client, params.registry.model_name, params.promote, retry)
    except Exception as exc:
        _fail(exc)
    typer.echo(f"champion is version {result['champion']} again (version {result['rolled_back']} rolled back)")


def predict(text: list[str] = typer.Argument(..., help="One or more texts to classify."),
            params_file: Path = ParamsOption) -> None:
    """Answer with models:/<name>@champion, loaded offline onto the local base model."""
    import mlflow

    try:
        params, layout, client, _ = _open(params_file)
        mlflow.set_tracking_uri(layout.tracking_uri())
        from loraops.promotion import CHAMPION, alias_version

        if alias_version(client, params.registry.model_name, CHAMPION) is None:
            raise RegistryError(f"{params.registry.model_name} has no champion yet (see `loraops models`)")
        served = mlflow.pyfunc.load_model(f"models:/{params.registry.model_name}@{CHAMPION}")
        answers = served.predict({"text": list(text)})
    except Exception as exc:
        _fail(exc)
    for answer in answers:
        typer.echo(answer)


def attach(app: typer.Typer) -> None:
    for command in (models, promote, rollback, predict):
        app.command()(command)
