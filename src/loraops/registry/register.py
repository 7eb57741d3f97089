"""The ``register`` stage: one MLflow run per pipeline execution, and a new registered model version.

The run holds all params, the training and evaluation metrics, the loss curves and the adapter folder
(safetensors); the registered model is a pyfunc that loads that adapter onto the local base model.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from loraops.config import Params, flatten
from loraops.core import Layout, RegistryError, require, write_json
from loraops.core.tracking import Tracking, connect, git_tags
from loraops.evaluation import EvaluationSummary
from loraops.modeling import base_info
from loraops.registry.cleanup import REGISTRATION_TAG, discard_own, repair
from loraops.registry.lineage import base_model_tags, evidence_tags, lineage_tags
from loraops.registry.promotion import CHALLENGER, promote
from loraops.training import TrainChoice, TrainRecord, read_curve
from loraops.validation import ValidationSummary, log_validation

# The served model needs these at load time; listing them stops MLflow inferring (it wants torchvision).
PIP_REQUIREMENTS = ["torch", "transformers", "peft", "safetensors", "loraops"]
PYFUNC_ENTRY = Path(__file__).with_name("pyfunc_entry.py")


def numeric(prefix: str, metrics: dict[str, Any]) -> dict[str, float]:
    return {f"{prefix}.{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _verify_uploaded(tracking: Tracking, run_id: str, adapter_dir: Path, model_id: str) -> None:
    """The run's adapter files match the local ones by name and size, and the logged model has its MLmodel."""
    client = tracking.client
    local = {p.name: p.stat().st_size for p in adapter_dir.iterdir() if p.is_file()}
    remote = {Path(f.path).name: f.file_size for f in client.list_artifacts(run_id, "adapter") if not f.is_dir}
    if remote != local:
        raise RegistryError(f"run {run_id}: uploaded adapter {sorted(remote.items())} does not match "
                            f"{adapter_dir} {sorted(local.items())}")
    if "MLmodel" not in {Path(f.path).name for f in client.list_logged_model_artifacts(model_id)}:
        raise RegistryError(f"run {run_id}: logged model {model_id} has no MLmodel file")


def _find_version_of_run(tracking: Tracking, name: str, run_id: str) -> Any | None:
    found = tracking.client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    return found[0] if found else None


def _log_run(layout: Layout, params: Params, train: TrainRecord, evaluation: EvaluationSummary,
             validation: ValidationSummary, tracking: Tracking) -> Any:
    """Params, metrics, curves and every artifact on the active run; returns the logged pyfunc model."""
    import mlflow

    retry = tracking.retry
    retry(mlflow.log_params, flatten(params))
    if layout.search_choice.is_file():  # links this run to the rank search's parent run
        retry(mlflow.set_tag, "search.run_id", str(TrainChoice.read(layout.search_choice).mlflow_run_id))
    metrics = numeric("train", train.model_dump())
    for model_name, scores in evaluation.models.items():
        metrics.update(numeric(f"eval.{model_name}", scores.model_dump()))
    metrics.update(numeric("eval", evaluation.model_dump(exclude={"models", "differences"})))
    retry(mlflow.log_metrics, metrics)
    for row in read_curve(layout.train_curve, "train_loss"):
        retry(mlflow.log_metric, "train_loss", row["train_loss"], step=int(row["step"]))
    for row in read_curve(layout.val_curve, "val_loss"):
        retry(mlflow.log_metric, "val_loss", row["val_loss"], step=int(row["step"]))
    retry(mlflow.log_artifacts, str(layout.adapter_dir), artifact_path="adapter")
    for path in (layout.train_metrics, layout.eval_metrics, layout.train_curve, layout.validation_summary):
        retry(mlflow.log_artifact, str(path), artifact_path="reports")
    if layout.eval_report.parent.is_dir():  # report.md, per-label scores, confusion matrix, retention
        retry(mlflow.log_artifacts, str(layout.eval_report.parent), artifact_path="reports/eval")
    retry(log_validation, layout, validation)
    return retry(mlflow.pyfunc.log_model, name="model", python_model=str(PYFUNC_ENTRY),
                 artifacts={"adapter": str(layout.adapter_dir)},
                 model_config={"base_model_dir": str(layout.base_model_dir.resolve())},
                 pip_requirements=PIP_REQUIREMENTS)


def register_stage(params: Params, layout: Layout) -> dict[str, Any]:
    """The ``register`` stage: the run, a new version, the gates; ``metrics/registration.json``."""
    require(layout.adapter_dir, layout.train_metrics, layout.eval_metrics, layout.train_curve,
            layout.validation_summary)
    result = log_and_register(layout, params)
    write_json(layout.registration, result)
    return result


def log_and_register(layout: Layout, params: Params) -> dict[str, Any]:
    """Log the run, register its adapter as a new version (alias ``challenger``), then run the gates.

    The version is created only after the run's artifacts are uploaded and read back, with all its
    lineage tags in the same call; a failure after that removes it by the clean-up rule
    (:mod:`loraops.registry.cleanup`): deleted while incomplete and unaliased, kept once complete. Calls to
    the server are retried per ``registry.retries`` with exponential backoff (the one retry layer).
    """
    import mlflow

    evaluation = EvaluationSummary.read(layout.eval_metrics)
    if evaluation.model("adapter") is None:
        raise RegistryError(f"{layout.eval_metrics}: no 'adapter' entry under 'models'; nothing was registered")
    train = TrainRecord.read(layout.train_metrics)
    validation = ValidationSummary.read(layout.validation_summary)
    name = params.registry.model_name
    try:
        tracking = connect(layout, params.registry)
        experiment_id = tracking.experiment_id(params.registry.experiment)
        repaired = repair(tracking, name, params.promote.lock_ttl_seconds)
        run = tracking.retry(mlflow.start_run, experiment_id=experiment_id, run_name=f"{params.project.name}")
    except RegistryError:
        raise
    except Exception as exc:
        raise RegistryError(f"tracking server {layout.tracking_uri()}: {_first_line(exc)} "
                            f"(after {params.registry.retries} retries); nothing was registered") from None
    client, retry = tracking.client, tracking.retry
    run_id, version, status, creating = run.info.run_id, None, "FAILED", False
    try:
        tags = {**git_tags(layout.root), **base_model_tags(base_info(layout)), "loraops.pipeline": "true"}
        retry(mlflow.set_tags, tags)
        info = _log_run(layout, params, train, evaluation, validation, tracking)
        retry(_verify_uploaded, tracking, run_id, layout.adapter_dir, info.model_id)
        # Everything a reviewer needs, on the version itself, written in the call that creates it.
        version_tags = {**tags, **lineage_tags(layout, params), **evidence_tags(evaluation, train, validation),
                        "run_id": run_id, "validation.data_docs_artifact": f"runs:/{run_id}/validation/data_docs",
                        REGISTRATION_TAG: "incomplete"}
        retry(_create_registered_model, tracking, name)
        creating = True
        try:
            version = client.create_model_version(name, source=info.model_uri, run_id=run_id, tags=version_tags,
                                                  model_id=info.model_id)
        except Exception:
            # The server may have created it before failing to answer: look before creating a second one.
            version = retry(_find_version_of_run, tracking, name, run_id) or \
                retry(client.create_model_version, name, source=info.model_uri, run_id=run_id, tags=version_tags,
                      model_id=info.model_id)
        number = str(version.version)
        # Complete before any alias points at it: an alias never names a half-registered version.
        retry(client.set_model_version_tag, name, number, REGISTRATION_TAG, "complete")
        retry(client.set_registered_model_alias, name, CHALLENGER, number)
        promotion = promote(tracking, name, number, params.promote)
        status = "FINISHED"
    except Exception as exc:
        if version is None and creating:
            with contextlib.suppress(Exception):
                version = _find_version_of_run(tracking, name, run_id)
        if version is not None:
            left = discard_own(tracking, name, str(version.version))
        elif creating:
            left = (f"a version may have been created before the server stopped answering; it is tagged "
                    f"{REGISTRATION_TAG}=incomplete and the next run's check deletes it")
        else:
            left = "no version was registered"
        raise RegistryError(f"registration in {layout.tracking_uri()} failed: {_first_line(exc)}; {left}") from None
    finally:
        with contextlib.suppress(Exception):
            mlflow.end_run(status)
    return {"run_id": run_id, "experiment_id": experiment_id, "model_name": name, "version": int(number),
            "model_uri": f"models:/{name}/{number}", "tracking_uri": layout.tracking_uri(),
            "decision": promotion["decision"], "gates": promotion["gates"], "repaired": repaired}


def _create_registered_model(tracking: Tracking, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        tracking.client.create_registered_model(name, description="LoRA adapters registered by loraops "
                                                                 "(README: Promotion)")
    except MlflowException as exc:
        if getattr(exc, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
            raise


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"
