"""Training: one trainer for QLoRA, LoRA and full fine-tuning (``lora=None``), resumable checkpoints, the
merged export, memory figures, and the ``train`` and ``baseline`` stages built on them."""

from loraops.training.curves import read_curve, write_curve
from loraops.training.memory import current_memory_mb, peak_memory_mb, reset_peak_memory
from loraops.training.rehearsal import load_rehearsal_rows, mix_rehearsal, rehearsal_count
from loraops.training.records import BaselineRecord, DisabledBaseline, TrainChoice, TrainRecord, read_baseline
from loraops.training.stage import baseline_stage, chosen_config, train_stage, training_splits
from loraops.training.loss import answer_loss_trainer, example_mean_loss, per_example_losses
from loraops.training.resident import ResidentBase
from loraops.training.reuse import TrainedTrial, keep_trial, publish_trial, save_adapter
from loraops.training.trainer import IGNORE, CompletionCollator, Curves, build_model, encode_example, train, \
    training_arguments, training_inputs, validation_loss

__all__ = ["IGNORE", "BaselineRecord", "CompletionCollator", "Curves", "DisabledBaseline", "TrainChoice", "TrainRecord",
           "answer_loss_trainer", "baseline_stage", "build_model", "chosen_config", "current_memory_mb", "encode_example", "example_mean_loss", "per_example_losses", "load_rehearsal_rows", "mix_rehearsal", "peak_memory_mb", "read_baseline", "rehearsal_count",
           "ResidentBase", "TrainedTrial", "keep_trial", "publish_trial", "save_adapter", "training_inputs",
           "validation_loss", "read_curve", "reset_peak_memory", "train", "train_stage", "training_arguments", "training_splits", "write_curve"]
