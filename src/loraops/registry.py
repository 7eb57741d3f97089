"""The ``register`` stage: one MLflow run per pipeline execution, and a new registered model version.

The run holds all params, the training and evaluation metrics, the loss curve and the adapter folder
(safetensors); the registered model is a pyfunc that loads that adapter onto the local base model.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from loraops.config import Params, flatten
from loraops.project import Layout, read_json

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# The served model needs these at load time; listing them stops MLflow inferring (it wants torchvision).
PIP_REQUIREMENTS = ["torch", "transformers", "peft", "safetensors", "loraops"]


def connect(layout: Layout, experiment: str) -> str:
    """Point MLflow at the project's store (or ``MLFLOW_TRACKING_URI``) and return the experiment id."""
    import mlflow

    uri = layout.tracking_uri()
    exported = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    # set_tracking_uri also exports MLFLOW_TRACKING_URI; undo that so the user's setting stays the only source.
    if exported is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    # With the project's own store, artifacts live beside it (not in an ./mlruns of whatever the cwd is).
    location = layout.artifact_root.as_uri() if uri == layout.local_tracking_uri() else None
    return mlflow.create_experiment(experiment, artifact_location=location)


def git_state(root: Path) -> dict[str, str]:
    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else ""

    commit = git("rev-parse", "HEAD")
    return {"git.commit": commit or "none", "git.dirty": str(bool(git("status", "--porcelain"))).lower()}


def numeric(prefix: str, metrics: dict[str, Any]) -> dict[str, float]:
    return {f"{prefix}.{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def log_validation(layout: Layout) -> None:
    """Data Docs and the verdict of the dataset's validation, on the active run (tags feed registration)."""
    import mlflow

    summary = read_json(layout.validation_summary)
    mlflow.set_tags({"validation.success": str(summary["success"]).lower(),
                     "validation.errors": str(summary["errors"]), "validation.warnings": str(summary["warnings"]),
                     "validation.data_docs": str(summary.get("docs_index"))})
    if layout.validation_docs.is_dir():
        mlflow.log_artifacts(str(layout.validation_docs), artifact_path="validation/data_docs")


def log_failed_validation(layout: Layout, params: Params, summary: dict) -> str:
    """A failed validation still leaves its evidence in MLflow: a FAILED run with the Data Docs, no model."""
    import mlflow

    experiment_id = connect(layout, params.registry.experiment)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{params.project.name}-validation") as run:
        mlflow.set_tags({**git_state(layout.root), "loraops.stage": "validate"})
        mlflow.log_params(flatten(params))
        log_validation(layout)
        mlflow.log_artifact(str(layout.validation_summary), artifact_path="reports")
    mlflow.MlflowClient().set_terminated(run.info.run_id, status="FAILED")
    return run.info.run_id


def log_and_register(layout: Layout, params: Params, train_metrics: dict, eval_metrics: dict,
                     curve: list[dict], base_info: dict) -> dict[str, Any]:
    import mlflow

    experiment_id = connect(layout, params.registry.experiment)
    entry = Path(__file__).with_name("pyfunc_entry.py")
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{params.project.name}") as run:
        mlflow.set_tags({**git_state(layout.root), "base_model.id": str(base_info.get("id")),
                         "base_model.revision": str(base_info.get("revision")),
                         "base_model.licence": str(base_info.get("licence")), "loraops.pipeline": "true"})
        mlflow.log_params(flatten(params))
        if layout.search_choice.is_file():  # links this run to the search's parent run (issue 5)
            mlflow.set_tag("search.run_id", str(read_json(layout.search_choice).get("mlflow_run_id")))
        metrics = numeric("train", train_metrics)
        for model_name, scores in eval_metrics["models"].items():
            metrics.update(numeric(f"eval.{model_name}", scores))
        metrics.update(numeric("eval", {k: v for k, v in eval_metrics.items() if k != "models"}))
        mlflow.log_metrics(metrics)
        for row in curve:
            mlflow.log_metric("train_loss", row["train_loss"], step=int(row["step"]))
        mlflow.log_artifacts(str(layout.adapter_dir), artifact_path="adapter")
        for path in (layout.train_metrics, layout.eval_metrics, layout.train_curve, layout.validation_summary):
            mlflow.log_artifact(str(path), artifact_path="reports")
        log_validation(layout)
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(entry), artifacts={"adapter": str(layout.adapter_dir)},
            model_config={"base_model_dir": str(layout.base_model_dir.resolve())},
            pip_requirements=PIP_REQUIREMENTS, registered_model_name=params.registry.model_name)
        # The version carries the evidence a reviewer needs in the registry view itself.
        validation = read_json(layout.validation_summary)
        version_tags = {"validation.success": str(validation["success"]).lower(),
                        "validation.warnings": str(validation["warnings"]), "run_id": run.info.run_id,
                        **{k: f"{v:.4f}" for k, v in metrics.items() if k.startswith("eval.") and k.endswith("accuracy")}}
        client = mlflow.MlflowClient()
        for key, value in version_tags.items():
            client.set_model_version_tag(params.registry.model_name, info.registered_model_version, key, value)
    return {"run_id": run.info.run_id, "experiment_id": experiment_id, "model_name": params.registry.model_name,
            "version": int(info.registered_model_version), "model_uri": info.model_uri,
            "tracking_uri": layout.tracking_uri()}
