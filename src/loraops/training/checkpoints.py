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
from typing import Any

from loraops.config import LoraParams, TrainParams
from loraops.core import write_json
from loraops.core.distributed import barrier, is_main
from loraops.core.hashing import library_versions, sha256_file, sha256_json, tree_sha256

MANIFEST = "loraops_manifest.json"
TRAINING_LIBRARIES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "safetensors", "tokenizers")
PREFIX = "checkpoint-"
log = logging.getLogger(__name__)


def checkpoint_key(base_dir: Path, splits: dict[str, list[dict]], params: TrainParams, seed: int, max_length: int,
                   lora: LoraParams | None, learning_rate: float | None, device: str, processes: int = 1) -> str:
    """The resume key: checkpoints resume only when it matches. It covers the train params (but the progress
    bar and the merge tolerance, which do not shape the trajectory), the seed, ``max_length``, the LoRA config
    (None: full fine-tuning), the learning rate override, the device, the number of processes (each saves its
    own RNG state), the train and val rows, the bytes of every file of the base model (weights, config,
    tokenizer) and the versions of the training libraries (a resumed optimizer or RNG state is only valid
    with the code that wrote it)."""
    payload = {"train": params.model_dump(exclude={"progress_bar", "merge_tolerance"}), "seed": seed,
               "max_length": max_length, "lora": lora.model_dump() if lora else None,
               "data": sha256_json([splits["train"], splits["val"]]), "learning_rate": learning_rate,
               "device": device, "processes": processes, "base": tree_sha256(base_dir),
               "libraries": library_versions(TRAINING_LIBRARIES)}
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
