"""A search trial's adapter kept for the ``train`` stage, so that the chosen configuration is trained once.

A completed trial saves its adapter (as the train stage saves one, :func:`save_adapter`) with a
:class:`TrainedTrial` record (``trained.json``: its training record, its train-loss curve and what decided its
weights, :func:`loraops.training.training_inputs`) under ``.loraops/search/trials/<study>/<trial>/``, outside
every DVC out. When the search has chosen, :func:`publish_trial` copies the chosen trial's folder to
``models/search/trained/`` (part of the search stage's out) and removes the other trials' adapters. The
``train`` stage computes its own inputs the same way and takes that adapter instead of training only when they
are equal (:func:`reuse_decision`); ``metrics/train.json`` says which happened and why (``reuse``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from loraops.config import Params
from loraops.core import atomic_dir
from loraops.core.records import Record
from loraops.training.checkpoints import differing_inputs, weights_fingerprint
from loraops.training.records import TrainChoice, TrainRecord

RECORD_FILE = "trained.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


class TrainedTrial(Record):
    """``trained.json`` next to a kept trial's adapter."""

    trial: int
    fingerprint: str  # weights_fingerprint(inputs)
    inputs: dict[str, Any]  # loraops.training.checkpoints.weights_inputs, by name
    record: TrainRecord  # as the trial's training returned it (its val loss on the trial's val rows)
    train_curve: list[dict[str, int | float]]  # {"step": int, "train_loss": float}; int first so steps stay ints


def save_adapter(model: Any, out_dir: Path, base_id: str) -> None:
    """The adapter's files (safetensors, ``adapter_config.json``) as the train stage ships them: the config
    names its base by id, not by this machine's path."""
    model.peft_config["default"].base_model_name_or_path = base_id
    model.save_pretrained(out_dir, safe_serialization=True)


def keep_trial(folder: Path, adapter_dir: Path, trial: int, inputs: dict[str, Any], record: TrainRecord,
               train_curve: list[dict[str, float]]) -> None:
    """Move a completed trial's saved adapter into ``folder`` with its :class:`TrainedTrial` record."""
    with atomic_dir(folder) as staging:
        for path in adapter_dir.iterdir():
            shutil.move(str(path), staging / path.name)
        TrainedTrial(trial=trial, fingerprint=weights_fingerprint(inputs), inputs=inputs, record=record,
                     train_curve=train_curve).write(staging / RECORD_FILE)


def publish_trial(study_dir: Path, trial: int, target: Path) -> bool:
    """Copy trial ``trial``'s folder from ``study_dir`` (one study's kept trials) to ``target`` and remove the
    other trials' adapters; False (and no ``target``) when the trial kept none (it ran on another machine)."""
    shutil.rmtree(target, ignore_errors=True)
    source = study_dir / str(trial)
    found = (source / RECORD_FILE).is_file()
    if found:
        with atomic_dir(target) as staging:
            shutil.copytree(source, staging, dirs_exist_ok=True)
    if study_dir.is_dir():
        for other in study_dir.iterdir():
            if other != source:
                shutil.rmtree(other, ignore_errors=True)
    return found


def reuse_decision(params: Params, choice: TrainChoice, trained_dir: Path,
                   inputs: dict[str, Any]) -> tuple[TrainedTrial | None, str]:
    """The kept trial the train stage takes as its training (None: train) and why, for ``metrics/train.json``."""
    if choice.source != "search":
        return None, "no: search off"
    if not params.train.reuse_trial:
        return None, "no: train.reuse_trial is false"
    record_file = trained_dir / RECORD_FILE
    if not record_file.is_file() or not (trained_dir / ADAPTER_WEIGHTS).is_file():
        return None, f"no: the search kept no adapter of trial {choice.trial} ({trained_dir})"
    kept = TrainedTrial.read(record_file)
    if kept.trial != choice.trial:
        return None, f"no: {trained_dir} holds trial {kept.trial}, the search chose trial {choice.trial}"
    differ = differing_inputs(inputs, kept.inputs)
    if differ:
        return None, f"no: {', '.join(differ)} differ{'s' if len(differ) == 1 else ''} from trial {kept.trial}'s"
    return kept, f"yes: trial {kept.trial}'s adapter, same weights' inputs (fingerprint {kept.fingerprint})"
