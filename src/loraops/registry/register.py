"""The ``register`` stage: the pipeline run's record in MLflow, and a new registered model version.

The pipeline run was opened when the pass through the DAG started (:mod:`loraops.core.pipeline_run`); this
stage fills it in the shape of :mod:`loraops.registry.runs` (params, datasets, comparative metrics, one child
run per evaluated model, artifacts, the registered pyfunc with its signature), registers the adapter,
runs the gates, writes the description and ``metrics/summary.json``, and ends the run.
"""

from __future__ import annotations

import contextlib
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from loraops.config import Params, tracking_params
from loraops.core import Layout, RegistryError, require, write_json
from loraops.core.hashing import dvc_md5
from loraops.core.pipeline_run import forget_pass, pipeline_run_id
from loraops.core.process import process_identity
from loraops.core.tracking import Tracking, connect, git_tags, redact_url
from loraops.evaluation import EvaluationSummary
from loraops.modeling import base_info
from loraops.registry.cleanup import OWNER_TAG, REGISTRATION_TAG, discard_own, repair
from loraops.registry.composition import TASKS_FILE
from loraops.registry.hand_moves import check_champion
from loraops.registry.lineage import (MODEL_SHA256_TAG, base_model_tags, lineage_record, lineage_tags, model_sha256,
                                      version_tags)
from loraops.registry.promotion import CHAMPION, alias_version, promote
from loraops.registry.runs import (artifact_files, comparative_metrics, datasets, dataset_inputs,
                                   log_model_runs, run_description)
from loraops.registry.summary import summary, write_summary
from loraops.training import TrainChoice, TrainRecord
from loraops.validation import ValidationSummary, log_validation

# What the served model needs at load time, pinned to the versions it was registered with (listing them
# also stops MLflow inferring its own, which wants torchvision).
SERVED_PACKAGES = ("torch", "transformers", "peft", "safetensors", "loraops")
PYFUNC_ENTRY = Path(__file__).with_name("pyfunc_entry.py")
BASE_REFERENCE = "base_model.json"  # in the logged model: where the local base model is (serving.py reads it)
INPUT_EXAMPLE = {"text": ["where is my parcel?"]}


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


def signature(composed: bool = False) -> Any:
    """Text in, label out: what the served model takes and returns (shown as its schema in the UI). A
    composition also takes an optional ``task`` (a source model's name): MLflow drops columns a signature
    lacks before the model sees them."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = [ColSpec("string", "text")] + ([ColSpec("string", "task", required=False)] if composed else [])
    return ModelSignature(inputs=Schema(inputs), outputs=Schema([ColSpec("string", "label")]))


def verify_uploaded(tracking: Tracking, run_id: str, adapter_md5: str, model_uri: str) -> str:
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


def find_version_of_run(tracking: Tracking, name: str, run_id: str) -> Any | None:
    found = tracking.client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    return found[0] if found else None


def _search_run_id(layout: Layout) -> str | None:
    """The search's parent run, when the search ran (a choice made from params has none)."""
    if not layout.search_choice.is_file():
        return None
    return TrainChoice.read(layout.search_choice).mlflow_run_id


def _log_run(layout: Layout, params: Params, evaluation: EvaluationSummary, validation: ValidationSummary,
             tracking: Tracking, experiment_id: str, run_id: str, base: dict[str, Any]) -> tuple[Any, dict]:
    """Params, datasets, metrics, child runs and artifacts on the active pipeline run; returns the logged
    pyfunc model and ``{model: child run id}``."""
    import mlflow

    retry = tracking.retry
    retry(mlflow.log_params, tracking_params(params, layout.root))
    search_run = _search_run_id(layout)
    if search_run:  # links this run to the rank search's parent run (also nested under it)
        retry(mlflow.set_tag, "search.run_id", search_run)
    found = datasets(layout)
    retry(tracking.client.log_inputs, run_id, datasets=dataset_inputs(found, tuple(found)))
    retry(mlflow.log_metrics, comparative_metrics(evaluation))
    retry(mlflow.log_artifacts, str(layout.adapter_dir), artifact_path="adapter")
    for path, folder in artifact_files(layout):
        retry(mlflow.log_artifact, str(path), artifact_path=folder)
    if layout.eval_report.parent.is_dir():  # report.md, per-label scores, confusion and comparison plots
        retry(mlflow.log_artifacts, str(layout.eval_report.parent), artifact_path="reports/eval")
    retry(log_validation, layout, validation)
    info = log_adapter_model(tracking, layout.adapter_dir, layout.base_model_dir, base)
    children = log_model_runs(tracking, experiment_id, run_id, layout, evaluation, found, str(base.get("id")),
                              info.model_id)
    return info, children


def log_adapter_model(tracking: Tracking, adapter_dir: Path, base_dir: Path, base: dict[str, Any]) -> Any:
    """Log ``adapter_dir`` as the served pyfunc on the active run, referencing the local base; returns MLflow's
    model info."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        # The base model's location goes in a file of the model, not in model_config: MLflow logs
        # model_config as run params, and a path on this machine is no param. Another machine's copy of the
        # base is named at load time by LORAOPS_BASE_MODEL_DIR (serving.base_model_reference).
        reference = Path(tmp) / BASE_REFERENCE
        write_json(reference, {"base_model_dir": str(base_dir.resolve()),
                               "base_model_id": base.get("id"), "base_model_sha256": base.get("content_sha256")})
        return tracking.retry(mlflow.pyfunc.log_model, name="model", python_model=str(PYFUNC_ENTRY),
                              artifacts={"adapter": str(adapter_dir), "base_model": str(reference)},
                              signature=signature(composed=(adapter_dir / TASKS_FILE).is_file()),
                              input_example=INPUT_EXAMPLE, pip_requirements=pip_requirements())


def register_stage(params: Params, layout: Layout) -> dict[str, Any]:
    """The ``register`` stage: the run, a new version, the gates; ``metrics/registration.json``."""
    require(layout.adapter_dir, layout.train_metrics, layout.eval_metrics, layout.train_curve,
            layout.validation_summary)
    result = log_and_register(layout, params)
    write_json(layout.registration, result)
    return result


def log_and_register(layout: Layout, params: Params) -> dict[str, Any]:
    """Fill the pipeline run, register its adapter as a new version (alias ``challenger``), run the gates.

    The version is created only after the run's artifacts are uploaded and read back, with its tags in
    the same call; a failure after that removes it by the clean-up rule (:mod:`loraops.registry.cleanup`):
    deleted while incomplete and unaliased, kept once complete. Calls to the server are retried per
    ``registry.retries`` with exponential backoff (the one retry layer). A hand move of ``champion`` is
    handled first (:mod:`loraops.registry.hand_moves`).
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
        moved = check_champion(tracking, name, params.promote)
        run_id = pipeline_run_id(tracking, experiment_id, params.project.name)
        tracking.retry(mlflow.start_run, run_id=run_id)
    except RegistryError:
        raise
    except Exception as exc:
        raise RegistryError(f"tracking server {redact_url(layout.tracking_uri())}: {first_line(exc)} "
                            f"(after {params.registry.retries} retries); nothing was registered") from None
    client, retry = tracking.client, tracking.retry
    version, status, creating = None, "FAILED", False
    try:
        base, git = base_info(layout), git_tags(layout.root)
        retry(mlflow.set_tags, {**git, **base_model_tags(base), "loraops.pipeline": "true"})
        # Hashed before the upload: the version must record the bytes that were uploaded, checked below.
        outputs = lineage_tags(layout, params)
        info, children = _log_run(layout, params, evaluation, validation, tracking, experiment_id, run_id, base)
        model_hash = retry(verify_uploaded, tracking, run_id, outputs["dvc.adapter.md5"], info.model_uri)
        retry(mlflow.log_dict, lineage_record(outputs, evaluation, train, validation, base, git, run_id,
                                              _search_run_id(layout)), "lineage.json")
        tags = {**version_tags(outputs, evaluation, base, git), MODEL_SHA256_TAG: model_hash,
                OWNER_TAG: process_identity(), REGISTRATION_TAG: "incomplete"}
        retry(create_registered_model, tracking, name)
        creating = True
        version = create_complete_version(tracking, name, info, run_id, tags)
        number = str(version.version)
        promotion = promote(tracking, name, number, params.promote, make_challenger=True)
        values = summary(evaluation, promotion["decision"], promotion["gates"], train)
        write_summary(layout.summary_metrics, values)
        retry(mlflow.log_artifact, str(layout.summary_metrics), artifact_path="reports")
        retry(mlflow.set_tags, {"decision": promotion["decision"], "registered_version": f"{name}/{number}",
                                "mlflow.note.content": run_description(evaluation, promotion["decision"],
                                                                       promotion["gates"], number, name, children)})
        status = "FINISHED"
    except Exception as exc:
        left = failed_registration(tracking, name, run_id, version, creating, "register", exc)
        raise RegistryError(f"registration in {redact_url(layout.tracking_uri())} failed: {first_line(exc)}; "
                            f"{left}") from None
    finally:
        with contextlib.suppress(Exception):
            mlflow.end_run(status)
        forget_pass(layout, run_id)
    return {"run_id": run_id, "experiment_id": experiment_id, "model_name": name, "version": int(number),
            "model_uri": f"models:/{name}/{number}", "tracking_uri": redact_url(layout.tracking_uri()),
            "decision": promotion["decision"], "gates": promotion["gates"], "repaired": repaired,
            "model_runs": children, "summary": values, "hand_move": moved.line if moved else None}


def link_logged_model(tracking: Tracking, model_id: str, name: str, version: str) -> None:
    """What ``mlflow.register_model`` does and ``create_model_version`` does not: tell the logged model which
    version it became, so the run's Logged models table shows it registered."""
    import json

    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    model = tracking.client.get_logged_model(model_id)
    known = json.loads(model.tags.get(MLFLOW_MODEL_VERSIONS) or "[]")
    entry = {"name": name, "version": version}
    if entry not in known:
        tracking.client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps([*known, entry])})


def create_complete_version(tracking: Tracking, name: str, info: Any, run_id: str, tags: dict[str, str]) -> Any:
    """Register the logged model ``info`` as a new version of ``name`` (tagged incomplete by ``tags``), once
    even when the server fails to answer, then mark it complete and link the logged model; one path for
    ``register`` and ``compose``."""
    client, retry = tracking.client, tracking.retry
    try:
        version = client.create_model_version(name, source=info.model_uri, run_id=run_id, tags=tags,
                                              model_id=info.model_id)
    except Exception:
        # The server may have created it before failing to answer: look before creating a second one.
        version = retry(find_version_of_run, tracking, name, run_id) or \
            retry(client.create_model_version, name, source=info.model_uri, run_id=run_id, tags=tags,
                  model_id=info.model_id)
    # Complete before any alias points at it: an alias never names a half-registered version.
    retry(client.set_model_version_tag, name, str(version.version), REGISTRATION_TAG, "complete")
    retry(link_logged_model, tracking, info.model_id, name, str(version.version))
    return version


def failed_registration(tracking: Tracking, name: str, run_id: str, version: Any | None, creating: bool,
                        stage: str, exc: BaseException) -> str:
    """After a failed registration (``register`` or ``compose``): discard the version this run created (the
    clean-up rule), tag the run with the failure, and say what is left for the error line."""
    if version is None and creating:
        with contextlib.suppress(Exception):
            version = find_version_of_run(tracking, name, run_id)
    if version is not None:
        left = discard_own(tracking, name, str(version.version)) + champion_now(tracking, name)
    elif creating:
        left = (f"a version may have been created before the server stopped answering; it is tagged "
                f"{REGISTRATION_TAG}=incomplete and the next registration's check deletes it")
    else:
        left = "no version was registered"
    with contextlib.suppress(Exception):
        tracking.client.set_tag(run_id, "loraops.failed_stage", f"{stage}: {first_line(exc)}")
    return left


def create_registered_model(tracking: Tracking, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        tracking.client.create_registered_model(name, description="LoRA adapters registered by loraops "
                                                                 "(README: Promotion)")
    except MlflowException as exc:
        if getattr(exc, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
            raise


def champion_now(tracking: Tracking, name: str) -> str:
    """Where ``champion`` points now, for the failure message (a failure after promotion keeps it)."""
    try:
        champion = alias_version(tracking, name, CHAMPION)
    except Exception:  # noqa: BLE001 - the server is gone: the next promotion repairs what is left
        return "; champion unknown (the server does not answer), the next promotion repairs the aliases"
    return f"; champion is version {champion.version}" if champion is not None else "; there is no champion"


def first_line(exc: BaseException) -> str:
    text = redact_url(str(exc)).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"
