"""The ``loraops`` command line: thin commands over the library (and, for ``run``, the Prefect flow)."""

from loraops.cli import compose, pipeline, registry, serve, team  # noqa: F401  (each module adds its commands to the app)
from loraops.cli.app import app

__all__ = ["app"]
