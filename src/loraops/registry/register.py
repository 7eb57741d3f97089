"""The ``register`` stage: one MLflow run per pipeline execution, and a new registered model version.

The run holds all params, the training and evaluation metrics, the loss curves and the adapter folder
(safetensors); the registered model is a pyfunc that loads that adapter onto the local base model.
"""

from __future__ import annotations

import contextlib
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from loraops.config import Params, flatten
from loraops.core import Layout, RegistryError, require, write_json
from loraops.core.hashing import dvc_md5
from loraops.core.process import process_identity
from loraops.core.tracking import Tracking, connect, git_tags, redact_url
from loraops.evaluation import EvaluationSummary
from loraops.modeling import base_info
from loraops.registry.cleanup import OWNER_TAG, REGISTRATION_TAG, discard_own, repair
from loraops.registry.lineage import MODEL_SHA256_TAG, base_model_tags, evidence_tags, lineage_tags, model_sha256
from loraops.registry.promotion import CHAMPION, alias_version, promote
from loraops.training import TrainChoice, TrainRecord, read_curve
from loraops.validation import ValidationSummary, log_validation

# What the served model needs at load time, pinned to the versions it was registered with (listing them
# also stops MLflow inferring its own, which wants torchvision).
SERVED_PACKAGES = ("torch", "transformers", "peft", "safetensors", "loraops")
PYFUNC_ENTRY = Path(__file__).with_name("pyfunc_entry.py")


def pip_requirements() -> list[str]:
    """``name==version`` of each package the served model imports, as installed here."""
    pins = []
    for name in SERVED_PACKAGES:
        try:
            version = metadata.version(name).split("+")[0]  # a local build tag (torch's +cpu) is no PyPI version
        except metadata.PackageNotFoundError:
            pins.append(name)
            continue
        pins.append(f"{name}=={version}")
    return pins


def numeric(prefix: str, metrics: dict[str, Any]) -> dict[str, float]:
    return {f"{prefix}.{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _verify_uploaded(tracking: Tracking, run_id: str, adapter_md5: str, model_uri: str) -> str:
    """The run's adapter, downloaded back, has the DVC md5 the version records (``adapter_md5``, hashed from
    the local folder before the upload), and the logged model has its MLmodel. Returns the logged model's
    content hash (``model.sha256``), which loading checks (:func:`loraops.registry.serving.verified_model_dir`)."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tracking.client.download_artifacts(run_id, "adapter", tmp))
        uploaded = dvc_md5(local)
        if uploaded != adapter_md5:
            raise RegistryError(f"run {run_id}: the uploaded adapter has md5 {uploaded}, the local one had "
                                f"{adapter_md5} when it was hashed (changed during the upload?); nothing is registered")
        model = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(Path(tmp) / "model"),
                                                         tracking_uri=tracking.uri))
        if not (model / "MLmodel").is_file():
            raise RegistryError(f"run {run_id}: logged model {model_uri} has no MLmodel file")
        return model_sha256(model)


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
                 model_config={"base_model_dir": str(layout.base_model_dir.resolve()),
                               # The base it was trained on, by content: loading checks it (verify_base_model).
                               "base_model_sha256": base_info(layout).get("content_sha256")},
                 pip_requirements=pip_requirements())


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
        raise RegistryError(f"tracking server {redact_url(layout.tracking_uri())}: {_first_line(exc)} "
                            f"(after {params.registry.retries} retries); nothing was registered") from None
    client, retry = tracking.client, tracking.retry
    run_id, version, status, creating = run.info.run_id, None, "FAILED", False
    try:
        tags = {**git_tags(layout.root), **base_model_tags(base_info(layout)), "loraops.pipeline": "true"}
        retry(mlflow.set_tags, tags)
        # Hashed before the upload: the version must record the bytes that were uploaded, checked below.
        lineage = lineage_tags(layout, params)
        info = _log_run(layout, params, train, evaluation, validation, tracking)
        model_hash = retry(_verify_uploaded, tracking, run_id, lineage["dvc.adapter.md5"], info.model_uri)
        # Everything a reviewer needs, on the version itself, written in the call that creates it.
        version_tags = {**tags, **lineage, **evidence_tags(evaluation, train, validation),
                        "run_id": run_id, "validation.data_docs_artifact": f"runs:/{run_id}/validation/data_docs",
                        MODEL_SHA256_TAG: model_hash, OWNER_TAG: process_identity(), REGISTRATION_TAG: "incomplete"}
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
        promotion = promote(tracking, name, number, params.promote, make_challenger=True)
        status = "FINISHED"
    except Exception as exc:
        if version is None and creating:
            with contextlib.suppress(Exception):
                version = _find_version_of_run(tracking, name, run_id)
        if version is not None:
            left = discard_own(tracking, name, str(version.version)) + _champion_now(tracking, name)
        elif creating:
            left = (f"a version may have been created before the server stopped answering; it is tagged "
                    f"{REGISTRATION_TAG}=incomplete and the next run's check deletes it")
        else:
            left = "no version was registered"
        raise RegistryError(f"registration in {redact_url(layout.tracking_uri())} failed: {_first_line(exc)}; "
                            f"{left}") from None
    finally:
        with contextlib.suppress(Exception):
            mlflow.end_run(status)
    return {"run_id": run_id, "experiment_id": experiment_id, "model_name": name, "version": int(number),
            "model_uri": f"models:/{name}/{number}", "tracking_uri": redact_url(layout.tracking_uri()),
            "decision": promotion["decision"], "gates": promotion["gates"], "repaired": repaired}


def _create_registered_model(tracking: Tracking, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        tracking.client.create_registered_model(name, description="LoRA adapters registered by loraops "
                                                                 "(README: Promotion)")
    except MlflowException as exc:
        if getattr(exc, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
            raise


def _champion_now(tracking: Tracking, name: str) -> str:
    """Where ``champion`` points now, for the failure message (a failure after promotion keeps it)."""
    try:
        champion = alias_version(tracking, name, CHAMPION)
    except Exception:  # noqa: BLE001 - the server is gone: the next promotion repairs what is left
        return "; champion unknown (the server does not answer), the next promotion repairs the aliases"
    return f"; champion is version {champion.version}" if champion is not None else "; there is no champion"


def _first_line(exc: BaseException) -> str:
    text = redact_url(str(exc)).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"
