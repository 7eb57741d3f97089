"""Fixtures every test folder shares: the tiny Llama base model and throwaway projects that use it.
The helpers behind them are plain modules under ``tests/helpers``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.projects import new_project, run_stages
from tests.helpers.tiny_model import build_tiny_model

for key, value in {"MLFLOW_DISABLE_TELEMETRY": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                   "HF_EVALUATE_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1",
                   "TOKENIZERS_PARALLELISM": "false",
                   # In-process flows would log Prefect's server shutdown at exit, to a console pytest closed.
                   "PREFECT_LOGGING_LEVEL": "WARNING"}.items():
    os.environ.setdefault(key, value)
os.environ.pop("MLFLOW_TRACKING_URI", None)
# Under pytest-xdist (`make test` runs two workers) each worker's in-process Prefect flows get a home of their
# own, so two ephemeral Prefect servers never share one SQLite database.
if os.environ.get("PYTEST_XDIST_WORKER") and "PREFECT_HOME" not in os.environ:
    import tempfile

    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix=f"loraops-prefect-{os.environ['PYTEST_XDIST_WORKER']}-")


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    from loraops.config import PrepareParams
    from loraops.data import user_message
    from loraops.data.demo import generate_demo_dataset

    rows = generate_demo_dataset(seed=0, train_per_intent=20, test_per_intent=5)
    labels = sorted({r["label"] for r in rows})
    corpus = [r["text"] for r in rows] + labels + [user_message("", labels, PrepareParams()),
                                                   PrepareParams().system_prompt]
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "base", corpus * 3)


@pytest.fixture
def tiny_project(tmp_path, tiny_base) -> Path:
    """A bare project folder (params.yaml + evals/) using the tiny base model."""
    return new_project(tmp_path / "project", tiny_base).root


@pytest.fixture(scope="session")
def finished_project(tmp_path_factory, tiny_base):
    """One project whose whole DAG ran in-process on the tiny model (search on): (layout, stage results).
    Shared by the tests that only read what a finished run left (the MLflow record, the UI)."""
    from loraops.pipeline import PIPELINE

    layout = new_project(tmp_path_factory.mktemp("finished") / "project", tiny_base)
    return layout, run_stages(layout, *PIPELINE)
