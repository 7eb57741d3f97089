"""What the ``train`` and ``baseline`` stages record (``metrics/train.json``, ``metrics/baseline.json``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from loraops.config import LoraParams
from loraops.core.records import Record


class TrainRecord(Record):
    """One training run: budget, what was trainable, cost, and (for adapters) the export's checks."""

    method: Literal["qlora", "lora", "full"]
    train_loss: float  # mean training loss over the run (the per-step series is plots/train_loss.csv)
    val_loss: float  # validation loss of the final weights
    best_val_loss: float | None = None  # the best validation loss seen during the run (early stopping watches it)
    steps: int
    planned_steps: int
    stopped_early: bool
    resumed_from_step: int
    trainable_params: int
    total_params: int
    trainable_share: float
    learning_rate: float
    train_seconds: float
    tokens_per_second: float | None = None
    peak_memory_mb: float
    memory_before_train_mb: float
    # The malloc the process ran on (loraops.core.allocator): on CPU it decides much of peak_memory_mb.
    allocator: str | None = None
    device: str
    # Processes that trained together (DDP under accelerate launch / torchrun); the memory and cost
    # figures below are rank 0's own.
    processes: int = 1
    torch_threads: int
    # Rehearsal pairs mixed into the train split (train.rehearsal.share): how many, and their answer tokens,
    # i.e. what forgetting protection cost in training data.
    rehearsal_share: float = 0.0
    rehearsal_rows: int = 0
    rehearsal_tokens: int = 0
    # What the training loop cost (loraops.training.energy): CPU seconds of this process, busy GPU seconds
    # (CUDA only), energy in joules and how it was measured ("rapl", "estimate: 12 W per busy core", "+ nvml").
    cpu_seconds: float | None = None
    gpu_seconds: float | None = None
    energy_joules: float | None = None
    cpu_energy_joules: float | None = None
    gpu_energy_joules: float | None = None
    energy_method: str | None = None
    # Written by the train stage once the adapter is saved and merged (none for the full fine-tune).
    adapter_bytes: int | None = None
    adapter_to_base_size: float | None = None
    merge_max_abs_logit_diff: float | None = None
    # The train stage: the fingerprint of what decided the weights (loraops.training.checkpoints.weights_inputs),
    # whether it took the chosen search trial's adapter instead of training ("yes: ..." / "no: <why>"), and
    # which trial. A reused adapter's record is the trial's (its cost is that training's), its val_loss
    # measured again on the whole val split, best_val_loss none (the trial validated on its own rows).
    weights_fingerprint: str | None = None
    reuse: str | None = None
    reused_from_trial: int | None = None


class BaselineRecord(TrainRecord):
    """``metrics/baseline.json`` when the full fine-tune ran."""

    enabled: Literal[True] = True


class DisabledBaseline(Record):
    """``metrics/baseline.json`` with ``baseline.enabled: false``: an explicit record, never a fake model."""

    enabled: Literal[False] = False
    reason: str


def read_baseline(path: Path) -> BaselineRecord | DisabledBaseline:
    """The baseline record, whichever of the two it is."""
    enabled = json.loads(path.read_text(encoding="utf-8")).get("enabled") if path.is_file() else None
    return (DisabledBaseline if enabled is False else BaselineRecord).read(path)


class TrainChoice(Record):
    """``models/search/chosen.json``: the LoRA config, learning rate and rehearsal share the ``train`` stage is
    handed, written by the ``search`` stage. ``source: params`` when the search is off (train then uses its own
    params, so this never goes stale); ``source: search`` with the chosen trial and how it was chosen."""

    source: Literal["search", "params"]
    lora: LoraParams
    learning_rate: float
    rehearsal_share: float | None = None  # source search: the share train mixes in (else train.rehearsal.share)
    trial: int | None = None
    metric_name: str | None = None
    metric: float | None = None
    trainable_params: int | None = None
    best_trial: int | None = None
    best_metric: float | None = None
    # The selection's evidence (search.select): retention drop on the dev pool against its bound, the base
    # model on the same val items, and the paired bootstrap bounds of chosen - base and chosen - best.
    retention_drop: float | None = None
    max_retention_drop: float | None = None
    base_metric: float | None = None
    base_retention: float | None = None
    gain_over_base_low: float | None = None
    versus_best_high: float | None = None
    feasible_trials: int | None = None
    trials: dict[str, int] | None = None  # complete / pruned / fail counts
    total_steps: int | None = None
    # What the search cost: sums over its counted trials that recorded a cost (each trial's training and
    # scoring, pruned and failed ones included; loraops.training.energy), and the methods used.
    costed_trials: int | None = None
    total_wall_seconds: float | None = None
    total_cpu_seconds: float | None = None
    total_gpu_seconds: float | None = None
    total_energy_joules: float | None = None
    energy_method: str | None = None
    study_name: str | None = None
    storage: str | None = None  # the study's storage URL, password redacted
    fingerprint: str | None = None
    mlflow_run_id: str | None = None  # the search's parent run
