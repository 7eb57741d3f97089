"""How a pipeline run looks in MLflow, so that the UI's own views compare the models.

- The **pipeline run** (:mod:`loraops.core.pipeline_run`) holds every param, the datasets, the comparative
  metrics (``adapter_minus_base``, ``recovered_share``, ...), the artifacts and the registered model, and a
  description with the comparison table and the promotion decision.
- **One child run per evaluated model** (``base``, ``adapter``, ``full``) carries the same metric names
  (:data:`MODEL_METRICS`), so the experiment's chart view draws the three models as bars of one chart per
  metric, on one axis, and the run comparison lists them side by side. Child runs were chosen over MLflow 3
  LoggedModels because only the adapter is a logged model (base and full fine-tune are not packaged), and the
  runs views (chart view, Compare) handle runs; the adapter's metrics are also linked to its LoggedModel.
- The search's parent run and its trials are nested in the pipeline run too (:mod:`loraops.search.tracking`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from loraops.core import Layout, read_json
from loraops.core.hashing import dvc_md5
from loraops.core.tracking import Tracking
from loraops.data.splits import SPLIT_NAMES
from loraops.evaluation import EvaluationSummary, ModelScores
from loraops.evaluation.comparison import MODEL_ORDER, markdown_table
from loraops.training import BaselineRecord, TrainRecord, read_baseline

MODEL_TAG = "loraops.model"  # base | adapter | full on a model's child run
# The metric names every model's child run uses (each only where it applies); the compare views line them up.
MODEL_METRICS = ("accuracy", "accuracy_low", "accuracy_high", "macro_f1", "retention", "retention_drop",
                 "trainable_params", "train_seconds", "peak_memory_mb", "cpu_seconds", "gpu_seconds", "energy_joules")
SCORE_NAMES = {"seconds": "eval_seconds", "items_per_second": "eval_items_per_second", "items": "test_items"}
TRAIN_NAMES = {"train_loss": "train_loss_mean", "val_loss": "val_loss_final", "best_val_loss": "val_loss_best",
               "adapter_bytes": "model_bytes", "adapter_to_base_size": "size_vs_base"}
TRAIN_KEYS = ("trainable_params", "total_params", "trainable_share", "train_seconds", "peak_memory_mb",
              "tokens_per_second", "steps", "train_loss", "val_loss", "best_val_loss", "adapter_bytes",
              "adapter_to_base_size", "cpu_seconds", "gpu_seconds", "energy_joules", "cpu_energy_joules",
              "gpu_energy_joules", "energy_method", "allocator")
CONTEXTS = {"train": "training", "val": "validation", "test": "test"}
DESCRIPTIONS = {"base": "The base model, untrained, through the same evaluator (on a label task asked at its best: "
                        "the labels listed, worked examples from the train split).",
                "adapter": "The LoRA/QLoRA adapter on the base model.",
                "full": "The full fine-tune (every weight trained) on the same data and budget.",
                "tfidf": "A classical reference: TF-IDF + logistic regression on the same train split "
                         "(never gated on)."}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def model_metrics(scores: ModelScores, training: dict[str, Any] | None) -> tuple[dict[str, float], dict[str, float]]:
    """One model's metrics under the shared names: (scores on the test split from eval.json, what training
    cost from its training record)."""
    evaluated = {SCORE_NAMES.get(k, k): float(v) for k, v in scores.model_dump().items() if _number(v)}
    cost = {TRAIN_NAMES.get(k, k): float(v) for k, v in (training or {}).items() if _number(v)}
    return evaluated, cost


def training_records(layout: Layout) -> dict[str, dict[str, Any]]:
    """What each model cost: nothing for the base model, the train and baseline records for the others."""
    records: dict[str, dict[str, Any]] = {"base": {"trainable_params": 0, "train_seconds": 0.0}}
    if layout.train_metrics.is_file():
        records["adapter"] = TrainRecord.read(layout.train_metrics).model_dump(include=set(TRAIN_KEYS))
    if layout.baseline_metrics.is_file():
        baseline = read_baseline(layout.baseline_metrics)
        if isinstance(baseline, BaselineRecord):
            records["full"] = baseline.model_dump(include=set(TRAIN_KEYS) - {"adapter_bytes", "adapter_to_base_size"})
    return records


def model_params(name: str, layout: Layout, training: dict[str, Any] | None, base_id: str) -> dict[str, str]:
    """A few params per model that tell the three apart in the compare view (method, rank, learning rate)."""
    if name == "base":
        return {"method": "none (base model)", "base_model": base_id}
    if name == "tfidf":
        return {"method": "tfidf + logistic regression"}
    params = {"base_model": base_id}
    if training and training.get("energy_method"):  # how energy_joules was measured (rapl, nvml, estimate)
        params["energy_method"] = str(training["energy_method"])
    if training and training.get("allocator"):  # the malloc peak_memory_mb was measured on
        params["allocator"] = str(training["allocator"])
    if name == "adapter":
        config = read_json(layout.adapter_dir / "adapter_config.json")
        params.update({"method": "lora" if not layout.train_metrics.is_file()
                       else TrainRecord.read(layout.train_metrics).method,
                       "lora_r": str(config.get("r")), "lora_alpha": str(config.get("lora_alpha")),
                       "target_modules": json.dumps(sorted(config.get("target_modules") or []))})
        if layout.train_metrics.is_file():
            params["learning_rate"] = str(TrainRecord.read(layout.train_metrics).learning_rate)
    elif name == "full" and layout.baseline_metrics.is_file():
        baseline = read_baseline(layout.baseline_metrics)
        if isinstance(baseline, BaselineRecord):
            params.update({"method": "full", "learning_rate": str(baseline.learning_rate)})
    return params


def datasets(layout: Layout) -> dict[str, Any]:
    """The prepared splits as MLflow datasets: name = split, digest = the file's DVC md5, source = its path
    in the project (so the Dataset column and the lineage show exactly which bytes went in)."""
    import warnings

    import mlflow
    import pandas as pd

    out = {}
    for split in SPLIT_NAMES:
        path = layout.prepared_dir / f"{split}.jsonl"
        if not path.is_file():
            continue
        frame = pd.read_json(path, lines=True)
        with warnings.catch_warnings():  # a relative path matches the local source twice; it is one source
            warnings.simplefilter("ignore", UserWarning)
            out[split] = mlflow.data.from_pandas(
                frame, source=path.relative_to(layout.root).as_posix(), name=split, digest=dvc_md5(path),
                targets="label" if "label" in frame.columns else None)
    return out


def dataset_inputs(found: dict[str, Any], splits: tuple[str, ...]) -> list[Any]:
    from mlflow.entities import DatasetInput, InputTag

    return [DatasetInput(found[s]._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", CONTEXTS[s])])
            for s in splits if s in found]


def log_model_runs(tracking: Tracking, experiment_id: str, parent_id: str, layout: Layout,
                   evaluation: EvaluationSummary, found_datasets: dict[str, Any], base_id: str,
                   adapter_model_id: str | None) -> dict[str, str]:
    """One finished child run per evaluated model, under ``parent_id``; returns ``{model: run_id}``."""
    from mlflow.entities import Metric, Param

    from loraops.training import read_curve

    client, retry = tracking.client, tracking.retry
    records = training_records(layout)
    runs = {}
    names = sorted(evaluation.models, key=lambda m: (MODEL_ORDER.index(m) if m in MODEL_ORDER else 9, m))
    started = int(time.time() * 1000)
    for index, name in enumerate(names):
        scores = evaluation.models[name]
        training = records.get(name)
        tags = {"mlflow.parentRunId": parent_id, MODEL_TAG: name, "loraops.stage": "evaluate",
                "mlflow.note.content": DESCRIPTIONS.get(name, name)}
        # Start times a millisecond apart, first model latest: the UI (newest first) lists base, adapter, full.
        run = retry(client.create_run, experiment_id, run_name=name, tags=tags,
                    start_time=started + len(names) - index)
        run_id = run.info.run_id
        stamp = int(time.time() * 1000)
        model_id = adapter_model_id if name == "adapter" else None
        test = found_datasets.get("test")
        on_test = {"dataset_name": test.name, "dataset_digest": test.digest} if test is not None else {}
        evaluated, cost = model_metrics(scores, training)
        metrics = [Metric(k, v, stamp, 0, model_id=model_id, **on_test) for k, v in evaluated.items()]
        metrics += [Metric(k, v, stamp, 0, model_id=model_id) for k, v in cost.items()]
        params = [Param(k, v) for k, v in model_params(name, layout, training, base_id).items()]
        retry(client.log_batch, run_id, metrics=metrics, params=params)
        if name == "adapter":
            for series, path in (("train_loss", layout.train_curve), ("val_loss", layout.val_curve)):
                if path.is_file():
                    points = [Metric(series, float(r[series]), stamp, int(r["step"])) for r in read_curve(path, series)]
                    for start in range(0, len(points), 900):
                        retry(client.log_batch, run_id, metrics=points[start:start + 900])
        splits = ("test",) if name == "base" else SPLIT_NAMES
        retry(client.log_inputs, run_id, datasets=dataset_inputs(found_datasets, splits))
        retry(client.set_terminated, run_id, status="FINISHED")
        runs[name] = run_id
    return runs


def run_description(evaluation: EvaluationSummary, decision: str, gates: dict[str, str], version: str,
                    model_name: str, child_runs: dict[str, str]) -> str:
    """The pipeline run's description (markdown): the decision, the comparison table, the gates."""
    metric = evaluation.headline
    lines = [f"**{model_name} version {version}: {decision}**", "",
             f"Base model vs adapter vs full fine-tune on {evaluation.test_items} test items ({metric}) and on the "
             "retention set (general prompts; drop = base minus model). The child runs "
             + ", ".join(f"`{m}`" for m in child_runs) + " carry the same metric names: select them and press "
             "Compare, or open the chart view, to see them on one axis.", "", markdown_table(evaluation)]
    for key, diff in evaluation.differences.items():
        lines.append(f"- {key.replace('_', ' ')}: {diff.mean:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}]")
    if evaluation.recovered_share is not None:
        lines.append(f"- recovered share of the full fine-tune's gain: {evaluation.recovered_share:.0%}")
    lines += ["", "| gate | outcome |", "|---|---|"] + [f"| {g} | {s} |" for g, s in gates.items()]
    lines += ["", "Gate reasons: the model version's description. Data validation: `validation/data_docs.html`; "
              "lineage: `lineage.json`; comparison plot: `reports/eval/comparison.png`."]
    return "\n".join(lines)


def comparative_metrics(evaluation: EvaluationSummary) -> dict[str, float]:
    """The pipeline run's own metrics: only what compares models, under names no child run uses."""
    metrics: dict[str, float] = {}
    for key, diff in evaluation.differences.items():
        metrics.update({key: diff.mean, f"{key}_low": diff.low, f"{key}_high": diff.high})
    if evaluation.recovered_share is not None:
        metrics["recovered_share"] = evaluation.recovered_share
    return metrics


def artifact_files(layout: Layout) -> list[tuple[Path, str]]:
    """(file, artifact folder) for the reports the pipeline run holds."""
    files = [(layout.train_metrics, "reports"), (layout.eval_metrics, "reports"), (layout.train_curve, "reports"),
             (layout.validation_summary, "reports"), (layout.baseline_metrics, "reports")]
    return [(path, folder) for path, folder in files if path.is_file()]
