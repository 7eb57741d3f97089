"""Resumable training checkpoints that are either complete or ignored, never loaded half.

The HF Trainer writes ``checkpoint-N/`` (weights as safetensors, optimizer/scheduler/RNG state with
``torch.save``, which the Trainer reloads itself, with ``weights_only=True``). A crash can leave a folder
torn at any point, so after each save :class:`ManifestCallback` writes ``loraops_manifest.json`` (sha256 and
size of every file) atomically and last: a checkpoint is complete only if its manifest exists and every file
still matches it. Runs live in ``run-<fingerprint>/`` where the fingerprint covers every input of the
training (params, seed, data, base weights), so a changed input starts afresh instead of resuming a stale run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

from loraops.project import write_json

MANIFEST = "loraops_manifest.json"
PREFIX = "checkpoint-"
log = logging.getLogger(__name__)


def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def fingerprint(payload: Any, files: list[Path]) -> str:
    """sha256 over a JSON-able description of the run and the contents of ``files`` (data, base weights)."""
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode())
    for path in sorted(files):
        digest.update(path.name.encode() + b"\0" + file_sha256(path).encode())
    return digest.hexdigest()


def write_manifest(checkpoint: Path) -> None:
    files = {p.relative_to(checkpoint).as_posix(): {"sha256": file_sha256(p), "bytes": p.stat().st_size}
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
        if file_sha256(path) != expected["sha256"]:
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
    """``work_dir/run-<key>``; runs of other (stale) fingerprints are removed, they can never be resumed."""
    run_dir = work_dir / f"run-{key[:16]}"
    if work_dir.is_dir():
        for other in work_dir.glob("run-*"):
            if other != run_dir:
                log.info("removing checkpoints of a run with other inputs: %s", other)
                shutil.rmtree(other, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def manifest_callback() -> Any:
    """A TrainerCallback sealing each checkpoint with its manifest once the Trainer has fully written it."""
    from transformers import TrainerCallback

    class ManifestCallback(TrainerCallback):
        # on_save runs after the Trainer wrote weights, optimizer, RNG and trainer_state (and rotated old ones).
        def on_save(self, args, state, control, **kwargs):
            write_manifest(Path(args.output_dir) / f"{PREFIX}{state.global_step}")

    return ManifestCallback()
