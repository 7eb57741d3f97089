"""Shared fixtures: a tiny Llama base model and throwaway loraops projects that use it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from tiny_model import build_tiny_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CLINC150 = SHARED / "datasets" / "clinc150" / "data_full.json"

for key, value in {"MLFLOW_DISABLE_TELEMETRY": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                   "HF_EVALUATE_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1",
                   "TOKENIZERS_PARALLELISM": "false",
                   # In-process flows would log Prefect's server shutdown at exit, to a console pytest closed.
                   "PREFECT_LOGGING_LEVEL": "WARNING"}.items():
    os.environ.setdefault(key, value)
os.environ.pop("MLFLOW_TRACKING_URI", None)

# Small enough that a whole DAG runs in seconds on the tiny model, large enough to exercise every path.
TINY_PARAMS = {
    "project": {"name": "tiny", "seed": 7},
    "data": {"source": "demo", "demo": {"train_per_intent": 6, "test_per_intent": 2}},
    "prepare": {"max_length": 384},
    "train": {"max_steps": 4, "batch_size": 4, "logging_steps": 1, "warmup_steps": 0,
              "lora": {"r": 4, "alpha": 8}},
    # Issue 5: a real (tiny) search in every whole-DAG test: 2 trials x 2 steps, pruning checked each step.
    "search": {"enabled": True, "n_trials": 2, "max_steps": 2, "eval_steps": 1, "ranks": [2, 4],
               "target_modules": ["attention"], "val_items": 8, "heartbeat_seconds": 5},
    "eval": {"batch_size": 32},
    "registry": {"experiment": "tiny", "model_name": "tiny-intent"},
}


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    from loraops.data.demo import generate_demo_dataset
    from loraops.prepare import user_message
    from loraops.config import PrepareParams

    rows = generate_demo_dataset(seed=0, train_per_intent=20, test_per_intent=5)
    labels = sorted({r["label"] for r in rows})
    corpus = [r["text"] for r in rows] + labels + [user_message("", labels, PrepareParams()),
                                                   PrepareParams().system_prompt]
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "base", corpus * 3)


def merge(into: dict, changes: dict) -> dict:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value
    return into


def write_params(root: Path, base: Path, **groups) -> Path:
    """The repository's params.yaml (every group DVC tracks is present) with the tiny settings on top."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    merge(params, yaml.safe_load(yaml.safe_dump(TINY_PARAMS)))
    merge(params, {"model": {"base": str(base)}, **groups})
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture
def tiny_project(tmp_path, tiny_base) -> Path:
    """A bare project folder (params.yaml + evals/) using the tiny base model."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copytree(REPO / "evals", root / "evals")
    write_params(root, tiny_base)
    return root


def copy_repo(dest: Path) -> Path:
    """A copy of this repository's tracked and untracked-but-not-ignored files, as a fresh git repo."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def loraops_cmd() -> list[str]:
    return [str(Path(sys.executable).with_name("loraops"))]
