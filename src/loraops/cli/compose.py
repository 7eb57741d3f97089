"""``loraops compose``: one adapter from registered versions of several models, scored on each source task and
on retention, registered as a model of its own with gates against each task's champion
(:mod:`loraops.registry.compose`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from loraops.cli.app import ParamsOption, SetOption, app, fails_cleanly, project


@app.command()
def compose(sources: list[str] = typer.Argument(..., help="Two or more sources, one per registered model: "
                                                          "MODEL@VERSION, MODEL@ALIAS or MODEL (its champion)."),
            name: str = typer.Option(..., "--name", "-n", help="The registered model the composition becomes "
                                                               "(a model of its own)."),
            data: Optional[list[str]] = typer.Option(None, "--data",
                                                     help="MODEL=FOLDER: that source's project (or prepared folder), "
                                                          "where the test split its version was scored on is; "
                                                          "default: the path its version records, in this project."),
            params_file: Path = ParamsOption, overrides: Optional[list[str]] = SetOption) -> None:
    """Combine the sources with PEFT (compose.combination, compose.weights, compose.density), score the result on
    every source's test set and on retention, and register it; champion moves only if no task loses more than
    compose.max_task_loss against its champion and retention holds."""
    from loraops.core.tracking import connect
    from loraops.registry.compose import compose as run_compose

    with fails_cleanly():
        params, layout = project(params_file, overrides)
        result = run_compose(connect(layout, params.registry), layout, params, name, list(sources), data)
    if result["hand_move"]:
        typer.echo(result["hand_move"], err=True)
    for gate, status in result["gates"].items():
        typer.echo(f"  {gate:<26} {status:<8} {result['reasons'][gate]}")
    typer.echo(f"registered {result['model_name']} version {result['version']} (run {result['run_id']}): "
               f"{result['decision']}")
