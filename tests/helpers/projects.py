"""Throwaway loraops projects on the tiny model: params on top of the repository's, a copy of the repository,
running stages in-process, and the ``loraops`` and ``dvc`` command lines."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from loraops.config import Params, load_params
from loraops.core import Layout
from loraops.pipeline import run_stage

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
CLINC150 = SHARED / "datasets" / "clinc150" / "data_full.json"

# Small enough that a whole DAG runs in seconds on the tiny model, large enough to exercise every path.
TINY_PARAMS = {
    "project": {"name": "tiny", "seed": 7},
    "data": {"source": "demo", "demo": {"train_per_intent": 6, "test_per_intent": 2}},
    "prepare": {"max_length": 384},
    "train": {"max_steps": 4, "batch_size": 4, "logging_steps": 1, "warmup_steps": 0,
              "lora": {"r": 4, "alpha": 8}, "rehearsal": {"share": 0.0}},
    # A real (tiny) search in every whole-DAG test: 2 trials x 2 steps, pruning checked each step. A random
    # tiny model never beats its base beyond noise (no floor) and has no rehearsal answers (share 0 only).
    "search": {"enabled": True, "n_trials": 2, "max_steps": 2, "eval_steps": 1, "ranks": [2, 4],
               "target_modules": ["attention"], "val_items": 8, "heartbeat_seconds": 5, "beat_base": False,
               "rehearsal_shares": [0.0]},
    "eval": {"batch_size": 32},
    "registry": {"experiment": "tiny", "model_name": "tiny-intent"},
}


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
    merge(params, {"model": {"base": str(base)}})
    merge(params, groups)  # a group given here changes only the keys it names (model.base stays)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def new_project(root: Path, base: Path, **groups) -> Layout:
    """A bare project folder (params.yaml + evals/) on the tiny base model."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "evals", root / "evals", dirs_exist_ok=True)
    write_params(root, base, **groups)
    return Layout(root)


def prepared_from_library(layout: Layout, seed: int = 1) -> None:
    """The base model stage, then prepared splits written straight from the library (the data stages have
    their own tests, and GX is slow): a project ready for search, train and baseline."""
    from loraops.core import write_json, write_jsonl
    from loraops.data.demo import generate_demo_dataset
    from loraops.modeling import load_tokenizer
    from loraops.prepare import prepare

    params = load_params(layout.params_file)
    run_stage("base_model", params, layout)
    rows = generate_demo_dataset(seed=seed, train_per_intent=6, test_per_intent=2)
    splits, labels, _ = prepare(rows, load_tokenizer(layout.base_model_dir), params.prepare, seed=seed)
    for name, split in splits.items():
        write_jsonl(layout.prepared_dir / f"{name}.jsonl", split)
    write_json(layout.prepared_dir / "labels.json", labels)


def run_stages(layout: Layout, *names: str, overrides: list[str] | None = None) -> dict[str, dict]:
    """Run ``names`` in order in this process, with the project's params (plus ``overrides``)."""
    params: Params = load_params(layout.params_file, overrides or [])
    return {name: run_stage(name, params, layout) for name in names}


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


def dvc(repo: Path, *args: str, timeout: float = 900) -> str:
    """Run the real ``dvc`` command line in ``repo``; a failure fails the test with its output."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    result = subprocess.run([str(Path(sys.executable).with_name("dvc")), *args], cwd=repo, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr
