"""The ``loraops`` Typer app, the options every command shares, and the one way a command fails.

Every command takes ``-p/--params FILE`` (the project is the folder holding it) and ``-S/--set key=value``
overrides. A command fails in one way only: one line ``error: ...`` on stderr and exit code 2 (set
``LORAOPS_DEBUG=1`` to see the traceback instead).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Optional

import typer

from loraops.config import Params, load_params
from loraops.core import Layout

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="MLOps pipeline for LoRA/QLoRA adapters.")

SetOption = typer.Option(None, "--set", "-S", help="Override a param, e.g. -S train.learning_rate=2e-4")
ParamsOption = typer.Option(Path("params.yaml"), "--params", "-p", help="The project's params file.")

# No telemetry from any of the tools, and nothing from the Hugging Face Hub at run time for metrics.
QUIET_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
             "HF_EVALUATE_OFFLINE": "1", "DO_NOT_TRACK": "1", "TOKENIZERS_PARALLELISM": "false"}


def project(params_file: Path, overrides: Optional[list[str]]) -> tuple[Params, Layout]:
    """The params (file + overrides, validated) and the layout of the project that holds the file."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    return load_params(params_file, overrides or []), Layout(params_file.resolve().parent)


def one_line(exc: BaseException) -> str:
    from loraops.core import LoraopsError
    from loraops.core.tracking import redact_url

    text = redact_url(str(exc)).strip()
    first = text.splitlines()[0] if text else ""
    return first if isinstance(exc, LoraopsError) and first else f"{type(exc).__name__}: {first}"


@contextlib.contextmanager
def fails_cleanly() -> Iterator[None]:
    """Turn any error into ``error: <one line>`` and exit 2; a command's own exits pass through."""
    try:
        yield
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:
        if os.environ.get("LORAOPS_DEBUG"):
            raise
        typer.echo(f"error: {one_line(exc)}", err=True)
        raise typer.Exit(code=2) from None
