"""Resumable training checkpoints that are either complete or ignored, never loaded half.

The HF Trainer writes ``checkpoint-N/`` (weights as safetensors, optimizer/scheduler/RNG state with
``torch.save``, which the Trainer reloads itself, with ``weights_only=True``). A crash can leave a folder
torn at any point, so after each save :class:`ManifestCallback` writes ``loraops_manifest.json`` (sha256 and
size of every file) atomically and last: a checkpoint is complete only if its manifest exists and every file
still matches it. Runs live in ``run-<fingerprint>/`` where the fingerprint covers every input of the
training (params, seed, data, base weights), so a changed input starts afresh instead of resuming a stale run.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable

from loraops.config import LoraParams, TrainParams
from loraops.core import write_json
from loraops.core.distributed import barrier, is_main
from loraops.core.hashing import library_versions, sha256_file, sha256_json, tree_sha256

MANIFEST = "loraops_manifest.json"
TRAINING_LIBRARIES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "safetensors", "tokenizers")
PREFIX = "checkpoint-"
log = logging.getLogger(__name__)


# Train params that cannot change the trained weights: how often the run logs, validates or saves, the progress
# bar, what the export checks and whether the train stage may reuse a trial's adapter. Validating draws nothing
# from the training's random stream (the trainer runs it under a forked RNG), so its cadence and its rows do not
# count; early stopping does, where it can end the run early (:func:`early_stopping_can_stop`). The LoRA config,
# learning rate and training rows are inputs of their own.
NOT_WEIGHT_KEYS = {"logging_steps", "eval_steps", "save_steps", "save_total_limit", "progress_bar", "merge_tolerance",
                   "reuse_trial", "early_stopping_patience", "early_stopping_min_delta", "learning_rate", "lora",
                   "rehearsal"}
# The loraops code that builds the model and runs the steps (model loading and quantisation, LoRA config, the
# trainer, the loss).
WEIGHT_CODE = ("training", "modeling")


def early_stopping_can_stop(params: TrainParams) -> bool:
    """Whether early stopping can end a run before ``max_steps``: its counter starts at the second validation,
    so it stops at the earliest at validation ``patience + 1``, step ``(patience + 1) * eval_steps``."""
    if params.early_stopping_patience is None:
        return False
    if params.max_steps is None or params.eval_steps is None:
        return True
    return (params.early_stopping_patience + 1) * params.eval_steps < params.max_steps


def weights_inputs(base_dir: Path, splits: dict[str, list[dict]], params: TrainParams, seed: int, max_length: int,
                   lora: LoraParams | None, learning_rate: float | None, device: str, processes: int = 1,
                   hashes: Callable[[Path], str] = sha256_file) -> dict[str, Any]:
    """Every input that decides the weights a :func:`loraops.training.train` call with these arguments ends
    with, by name (:func:`weights_fingerprint` hashes them): the bytes of every file of the base model, the
    training rows (the task's and any rehearsal pairs mixed in), the train params that shape the run (budget,
    batch, accumulation, warmup, schedule, method and so the quantisation, activation checkpointing; not
    :data:`NOT_WEIGHT_KEYS`), early stopping where it can stop the run (with the val rows it judges), the LoRA
    config, the learning rate, the seed, ``max_length``, the device, the processes and CPU threads (float
    reductions depend on how the work is split), the versions of the training libraries and the loraops code
    of :data:`WEIGHT_CODE`."""
    import torch

    import loraops

    train = params.model_dump(exclude=NOT_WEIGHT_KEYS)
    if params.max_steps is not None:  # a step budget makes epochs irrelevant (TrainingArguments)
        train.pop("epochs")
    stopping = None
    if early_stopping_can_stop(params):
        stopping = {"patience": params.early_stopping_patience, "min_delta": params.early_stopping_min_delta,
                    "eval_steps": params.eval_steps, "val": sha256_json(splits["val"])}
    package = Path(loraops.__file__).resolve().parent
    code = {name: tree_sha256(package / name, patterns=("*.py",)) for name in WEIGHT_CODE}
    return {"base": sha256_json(tree_sha256(base_dir, hashes)), "train_data": sha256_json(splits["train"]),
            "train": train, "early_stopping": stopping, "lora": lora.model_dump() if lora else None,
            "learning_rate": learning_rate or params.learning_rate, "seed": seed, "max_length": max_length,
            "device": device, "processes": processes,
            "cpu_threads": torch.get_num_threads() if device == "cpu" else None,
            "libraries": library_versions(TRAINING_LIBRARIES), "code": sha256_json(code)}


def weights_fingerprint(inputs: dict[str, Any]) -> str:
    """The short hash of :func:`weights_inputs`: equal fingerprints, equal weights."""
    return sha256_json(inputs)[:16]


def differing_inputs(mine: dict[str, Any], other: dict[str, Any]) -> list[str]:
    """The names of the inputs that differ (``train.max_steps``, ``lora.r``, ``train_data``), in order."""
    out = []
    for key in sorted(set(mine) | set(other)):
        a, b = mine.get(key), other.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        else:
            out.append(key)
    return out


def checkpoint_key(base_dir: Path, splits: dict[str, list[dict]], params: TrainParams, seed: int, max_length: int,
                   lora: LoraParams | None, learning_rate: float | None, device: str, processes: int = 1) -> str:
    """The resume key: checkpoints resume only when it matches. It covers what decides the weights
    (:func:`weights_inputs`: base files, training rows, seed, LoRA config, the device, the processes (each
    saves its own RNG state), the versions of the training libraries: a resumed optimizer or RNG state is only
    valid with the code that wrote it) and besides every train param but the progress bar, the merge tolerance
    and whether a trial may be reused (a checkpoint folder's contents depend on how often it saves), and the
    val rows."""
    payload = {"weights": weights_inputs(base_dir, splits, params, seed, max_length, lora, learning_rate, device,
                                         processes),
               "train": params.model_dump(exclude={"progress_bar", "merge_tolerance", "reuse_trial"}),
               "val": sha256_json(splits["val"])}
    return sha256_json(payload)


def write_manifest(checkpoint: Path) -> None:
    files = {p.relative_to(checkpoint).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
             for p in sorted(checkpoint.rglob("*")) if p.is_file() and p.name != MANIFEST}
    write_json(checkpoint / MANIFEST, {"step": step_of(checkpoint), "files": files})


def step_of(checkpoint: Path) -> int:
    return int(checkpoint.name.removeprefix(PREFIX))


def problem_with(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` cannot be resumed from, or None when it is complete and intact."""
    manifest = checkpoint / MANIFEST
    if not manifest.is_file():
        return "no manifest (the save did not finish)"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError) as exc:
        return f"unreadable manifest ({exc})"
    if "trainer_state.json" not in files:
        return "manifest lists no trainer_state.json"
    for name, expected in files.items():
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected["bytes"]:
            return f"{name} is {path.stat().st_size} bytes, manifest says {expected['bytes']} (truncated?)"
        if sha256_file(path) != expected["sha256"]:
            return f"{name} does not match its sha256 (corrupt)"
    return None


def latest_complete(run_dir: Path) -> Path | None:
    """The newest intact checkpoint; newer broken ones are removed with a warning so none is loaded half."""
    found = sorted((p for p in run_dir.glob(f"{PREFIX}*") if p.is_dir() and p.name[len(PREFIX):].isdigit()),
                   key=step_of, reverse=True)
    for checkpoint in found:
        problem = problem_with(checkpoint)
        if problem is None:
            return checkpoint
        warnings.warn(f"{checkpoint}: skipping incomplete checkpoint: {problem}; removed, using the previous one",
                      stacklevel=2)
        shutil.rmtree(checkpoint)
    return None


def run_dir_for(work_dir: Path, key: str) -> Path:
    """``work_dir/run-<key>``: where the checkpoints of a run with these inputs live."""
    return work_dir / f"run-{key[:16]}"


def prepare_run_dir(run_dir: Path, resume: bool) -> Path | None:
    """Make ``run_dir`` ready and return the checkpoint to resume from (None: start afresh). Runs of other
    (stale) fingerprints are removed, they can never be resumed; without ``resume`` this run's own older
    checkpoints go too, so none is mixed with the fresh start's. Rank 0 only: it deletes."""
    work_dir = run_dir.parent
    if work_dir.is_dir():
        for other in work_dir.glob("run-*"):
            if other != run_dir:
                log.info("removing checkpoints of a run with other inputs: %s", other)
                shutil.rmtree(other, ignore_errors=True)
    if resume:
        run_dir.mkdir(parents=True, exist_ok=True)
        return latest_complete(run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    return None


def manifest_callback() -> Any:
    """A TrainerCallback sealing each checkpoint with its manifest once the Trainer has fully written it."""
    from transformers import TrainerCallback

    class ManifestCallback(TrainerCallback):
        # on_save runs after the Trainer wrote weights, optimizer, RNG and trainer_state (and rotated old ones).
        # Under several processes each writes its own RNG state into the folder: all must be done before
        # rank 0 seals it, and only rank 0 writes the manifest.
        def on_save(self, args, state, control, **kwargs):
            barrier()
            if is_main():
                write_manifest(Path(args.output_dir) / f"{PREFIX}{state.global_step}")

    return ManifestCallback()
