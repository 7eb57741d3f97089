"""Where a project's stage outputs live.

Every path is relative to the project root (the folder holding ``params.yaml``), so the same layout
serves ``dvc.yaml``, the Prefect flow and tests that copy a project into a temporary folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from loraops.core.errors import StageOrderError


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def params_file(self) -> Path:
        return self.root / "params.yaml"

    @property
    def base_model_dir(self) -> Path:
        return self.root / "models" / "base"

    @property
    def raw_data(self) -> Path:
        return self.root / "data" / "raw" / "dataset.jsonl"

    @property
    def validation_summary(self) -> Path:
        return self.root / "metrics" / "validation.json"

    @property
    def validation_docs(self) -> Path:
        """Great Expectations Data Docs (HTML) of the last validation, pass or fail."""
        return self.root / "reports" / "validation"

    @property
    def validation_profile(self) -> Path:
        """Statistics of the last dataset version that passed; the next version's shift checks use it."""
        return self.root / "data" / "validated" / "profile.json"

    @property
    def rehearsal_answers(self) -> Path:
        """The base model's own answers to the rehearsal prompts (prompt/completion rows), mixed into training."""
        return self.root / "data" / "rehearsal" / "answers.jsonl"

    @property
    def rehearsal_summary(self) -> Path:
        """What the rehearsal stage generated (items, answer tokens, seconds, its cache key)."""
        return self.root / "data" / "rehearsal" / "summary.json"

    @property
    def rehearsal_cache(self) -> Path:
        """Generated rehearsal answers by content key, outside every DVC out, so a re-run with the same base,
        prompts and settings generates nothing."""
        return self.cache_dir / "rehearsal"

    @property
    def prepared_dir(self) -> Path:
        return self.root / "data" / "prepared"

    @property
    def search_dir(self) -> Path:
        return self.root / "models" / "search"

    @property
    def search_choice(self) -> Path:
        """The configuration the ``train`` stage uses (written by the ``search`` stage)."""
        return self.search_dir / "chosen.json"

    @property
    def search_plots(self) -> tuple[Path, Path]:
        """(all trials, Pareto front) as CSV for ``dvc plots``."""
        return self.root / "plots" / "search_trials.csv", self.root / "plots" / "search_pareto.csv"

    @property
    def search_trained(self) -> Path:
        """The chosen trial's adapter, record and training inputs, which the ``train`` stage may take as its own
        (:mod:`loraops.training.reuse`)."""
        return self.search_dir / "trained"

    @property
    def search_trials_dir(self) -> Path:
        """Each completed trial's adapter while its study runs, by study name and trial number; outside every
        DVC out (only the chosen one is copied into ``models/search``)."""
        return self.search_study_dir / "trials"

    @property
    def search_study_dir(self) -> Path:
        """The default Optuna SQLite study: outside every DVC out, so it survives re-runs (resume)."""
        return self.cache_dir / "search"

    @property
    def adapter_dir(self) -> Path:
        return self.root / "models" / "adapter"

    @property
    def train_metrics(self) -> Path:
        return self.root / "metrics" / "train.json"

    @property
    def train_curve(self) -> Path:
        return self.root / "plots" / "train_loss.csv"

    @property
    def val_curve(self) -> Path:
        return self.root / "plots" / "val_loss.csv"

    @property
    def merged_dir(self) -> Path:
        """The adapter merged into the full-precision base: a plain transformers model folder."""
        return self.root / "models" / "merged"

    @property
    def full_model_dir(self) -> Path:
        """The full fine-tuning baseline (or, when disabled, only its 'disabled' record)."""
        return self.root / "models" / "full"

    @property
    def baseline_metrics(self) -> Path:
        return self.root / "metrics" / "baseline.json"

    def work_dir(self, stage: str) -> Path:
        """Resumable checkpoints of ``stage``; outside every DVC out, so ``dvc repro`` never deletes them."""
        return self.cache_dir / "work" / stage

    @property
    def eval_metrics(self) -> Path:
        return self.root / "metrics" / "eval.json"

    # The evaluation report (markdown) and the adapter's confusion matrix on label tasks.
    @property
    def eval_report(self) -> Path:
        return self.root / "reports" / "eval" / "report.md"

    @property
    def confusion_plot(self) -> Path:
        return self.root / "plots" / "confusion.csv"

    @property
    def comparison_plot(self) -> Path:
        """Headline metric and retention of every evaluated model with intervals (a DVC plot)."""
        return self.root / "plots" / "comparison.csv"

    @property
    def comparison_png(self) -> Path:
        return self.root / "reports" / "eval" / "comparison.png"

    @property
    def summary_metrics(self) -> Path:
        """The dozen headline numbers of a run, decision included: the DVC metrics file."""
        return self.root / "metrics" / "summary.json"

    @property
    def predictions(self) -> Path:
        return self.root / "data" / "eval" / "predictions.jsonl"

    @property
    def registration(self) -> Path:
        return self.root / "metrics" / "registration.json"

    @property
    def hash_memo(self) -> Path:
        """sha256 of large input files, remembered by size and mtime (see loraops.core.hashing.HashMemo)."""
        return self.cache_dir / "file-hashes.json"

    @property
    def cache_dir(self) -> Path:
        """Downloads kept between runs (the base model's wheel); never a pipeline output."""
        return self.root / ".loraops"

    def local_tracking_uri(self) -> str:
        """The project's own store, used unless MLFLOW_TRACKING_URI names another."""
        return f"sqlite:///{self.root / 'mlflow.db'}"

    def tracking_uri(self) -> str:
        return os.environ.get("MLFLOW_TRACKING_URI") or self.local_tracking_uri()

    @property
    def artifact_root(self) -> Path:
        return self.root / "mlartifacts"


def require(*paths: Path) -> None:
    """Each path exists, or a StageOrderError names it and says to run the stage that produces it first."""
    for path in paths:
        if not path.exists():
            raise StageOrderError(f"{path}: missing input; run the stage that produces it first")
