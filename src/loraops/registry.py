"""The ``register`` stage: one MLflow run per pipeline execution, and a new registered model version.

The run holds all params, the training and evaluation metrics, the loss curve and the adapter folder
(safetensors); the registered model is a pyfunc that loads that adapter onto the local base model.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Any

from loraops.config import Params, flatten
from loraops.errors import RegistryError
from loraops.lineage import base_model_tags, evidence_tags, lineage_tags
from loraops.project import Layout, read_json
from loraops.promotion import CHALLENGER, REGISTRATION_TAG, check_and_repair, promote
from loraops.retrying import Retrier, quiet_mlflow_client

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


def _verify_uploaded(client: Any, run_id: str, adapter_dir: Path, model_id: str) -> None:
    """The run's adapter files match the local ones by name and size, and the logged model has its MLmodel."""
    local = {p.name: p.stat().st_size for p in adapter_dir.iterdir() if p.is_file()}
    remote = {Path(f.path).name: f.file_size for f in client.list_artifacts(run_id, "adapter") if not f.is_dir}
    if remote != local:
        raise RegistryError(f"run {run_id}: uploaded adapter {sorted(remote.items())} does not match "
                            f"{adapter_dir} {sorted(local.items())}")
    if "MLmodel" not in {Path(f.path).name for f in client.list_logged_model_artifacts(model_id)}:
        raise RegistryError(f"run {run_id}: logged model {model_id} has no MLmodel file")


def _find_version_of_run(client: Any, name: str, run_id: str) -> Any | None:
    found = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    return found[0] if found else None


def _log_run(layout: Layout, params: Params, train_metrics: dict, eval_metrics: dict, curve: list[dict],
             val_curve: list[dict], retry: Retrier) -> Any:
    """Params, metrics, curve and every artifact on the active run; returns the logged pyfunc model."""
    import mlflow

    retry(mlflow.log_params, flatten(params))
    if layout.search_choice.is_file():  # links this run to the rank search's parent run
        retry(mlflow.set_tag, "search.run_id", str(read_json(layout.search_choice).get("mlflow_run_id")))
    metrics = numeric("train", train_metrics)
    for model_name, scores in eval_metrics["models"].items():
        metrics.update(numeric(f"eval.{model_name}", scores))
    metrics.update(numeric("eval", {k: v for k, v in eval_metrics.items() if k != "models"}))
    retry(mlflow.log_metrics, metrics)
    for row in curve:
        retry(mlflow.log_metric, "train_loss", row["train_loss"], step=int(row["step"]))
    for row in val_curve:
        retry(mlflow.log_metric, "val_loss", row["val_loss"], step=int(row["step"]))
    retry(mlflow.log_artifacts, str(layout.adapter_dir), artifact_path="adapter")
    for path in (layout.train_metrics, layout.eval_metrics, layout.train_curve, layout.validation_summary):
        retry(mlflow.log_artifact, str(path), artifact_path="reports")
    if layout.eval_report.parent.is_dir():  # report.md, per-label scores, confusion matrix, retention
        retry(mlflow.log_artifacts, str(layout.eval_report.parent), artifact_path="reports/eval")
    retry(log_validation, layout)
    return retry(mlflow.pyfunc.log_model, name="model", python_model=str(Path(__file__).with_name("pyfunc_entry.py")),
                 artifacts={"adapter": str(layout.adapter_dir)},
                 model_config={"base_model_dir": str(layout.base_model_dir.resolve())},
                 pip_requirements=PIP_REQUIREMENTS)


def log_and_register(layout: Layout, params: Params, train_metrics: dict, eval_metrics: dict,
                     curve: list[dict], base_info: dict, val_curve: list[dict] | None = None) -> dict[str, Any]:
    """Log the run, register its adapter as a new version (alias ``challenger``), then run the gates.

    The version is created only after the run's artifacts are uploaded and read back, with all its
    lineage tags in the same call; a failure after that deletes it again when the server allows, and
    the next run's consistency check deletes it otherwise (it stays tagged ``loraops.registration=
    incomplete``). Calls to the server are retried per ``registry.retries`` with exponential backoff.
    """
    import mlflow

    if "adapter" not in (eval_metrics.get("models") or {}):
        raise RegistryError(f"{layout.eval_metrics}: no 'adapter' entry under 'models'; nothing was registered")
    quiet_mlflow_client()
    retry = Retrier(params.registry.retries, params.registry.backoff_seconds)
    name = params.registry.model_name
    try:
        experiment_id = retry(connect, layout, params.registry.experiment)
        client = mlflow.MlflowClient()
        repaired = check_and_repair(client, name, params.promote.lock_ttl_seconds, retry)
        run = retry(mlflow.start_run, experiment_id=experiment_id, run_name=f"{params.project.name}")
    except RegistryError:
        raise
    except Exception as exc:
        raise RegistryError(f"tracking server {layout.tracking_uri()}: {_first_line(exc)} "
                            f"(after {params.registry.retries} retries); nothing was registered") from None
    run_id, version, status, creating = run.info.run_id, None, "FAILED", False
    try:
        validation = read_json(layout.validation_summary)
        tags = {**git_state(layout.root), **base_model_tags(base_info), "loraops.pipeline": "true"}
        retry(mlflow.set_tags, tags)
        info = _log_run(layout, params, train_metrics, eval_metrics, curve, val_curve or [], retry)
        retry(_verify_uploaded, client, run_id, layout.adapter_dir, info.model_id)
        # Everything a reviewer needs, on the version itself, written in the call that creates it.
        version_tags = {**tags, **lineage_tags(layout, params), **evidence_tags(eval_metrics, train_metrics, validation),
                        "run_id": run_id, "validation.data_docs_artifact": f"runs:/{run_id}/validation/data_docs",
                        REGISTRATION_TAG: "incomplete"}
        retry(_create_registered_model, client, name)
        creating = True
        try:
            version = client.create_model_version(name, source=info.model_uri, run_id=run_id, tags=version_tags,
                                                  model_id=info.model_id)
        except Exception:
            # The server may have created it before failing to answer: look before creating a second one.
            version = retry(_find_version_of_run, client, name, run_id) or \
                retry(client.create_model_version, name, source=info.model_uri, run_id=run_id, tags=version_tags,
                      model_id=info.model_id)
        number = str(version.version)
        # Complete before any alias points at it: an alias never names a half-registered version.
        retry(client.set_model_version_tag, name, number, REGISTRATION_TAG, "complete")
        retry(client.set_registered_model_alias, name, CHALLENGER, number)
        promotion = promote(client, name, number, params.promote, retry)
        status = "FINISHED"
    except Exception as exc:
        if version is None and creating:
            with contextlib.suppress(Exception):
                version = _find_version_of_run(client, name, run_id)
        left = _undo(client, name, version, creating, retry)
        raise RegistryError(f"registration in {layout.tracking_uri()} failed: {_first_line(exc)}; {left}") from None
    finally:
        with contextlib.suppress(Exception):
            mlflow.end_run(status)
    return {"run_id": run_id, "experiment_id": experiment_id, "model_name": name, "version": int(number),
            "model_uri": f"models:/{name}/{number}", "tracking_uri": layout.tracking_uri(),
            "decision": promotion["decision"], "gates": promotion["gates"], "repaired": repaired}


def _create_registered_model(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description="LoRA adapters registered by loraops (README: Promotion)")
    except MlflowException as exc:
        if getattr(exc, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
            raise


def _undo(client: Any, name: str, version: Any | None, creating: bool, retry: Retrier) -> str:
    """Remove a version whose registration did not finish; say what was left if the server is gone."""
    if version is None:
        if creating:
            return (f"a version may have been created before the server stopped answering; it is tagged "
                    f"{REGISTRATION_TAG}=incomplete and the next run's check deletes it")
        return "no version was registered"
    number = str(version.version)
    try:
        if client.get_model_version(name, number).tags.get(REGISTRATION_TAG) == "complete":
            return f"version {number} stays registered as {CHALLENGER} (its promotion did not finish)"
        retry(client.delete_model_version, name, number)
        return f"half-registered version {number} was deleted"
    except Exception:
        return f"version {number} is tagged {REGISTRATION_TAG}=incomplete; the next run's check deletes it"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"
