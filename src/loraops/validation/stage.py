"""The ``validate`` stage: the suites on ``data/raw/dataset.jsonl``, Data Docs and summary written pass or fail."""

from __future__ import annotations

import shutil

from loraops.config import Params, flatten
from loraops.core import Layout, ValidationFailed, atomic_dir, read_json, read_jsonl, require, write_json
from loraops.core.tracking import connect, git_tags
from loraops.modeling import load_tokenizer, token_counter
from loraops.validation.check import validate_dataset
from loraops.validation.records import ValidationSummary


def validate_stage(params: Params, layout: Layout) -> dict:
    """Validate the raw dataset; a failure raises :class:`ValidationFailed` (one screen) after the Data Docs and
    ``metrics/validation.json`` are written and a FAILED MLflow run holds them, so nothing trains on it and the
    reasons stay on disk and in the tracking store."""
    require(layout.raw_data, layout.base_model_dir)
    tokenizer = load_tokenizer(layout.base_model_dir)
    previous = read_json(layout.validation_profile) if layout.validation_profile.is_file() else None
    report = validate_dataset(read_jsonl(layout.raw_data), params.validate, layout.cache_dir / "validation",
                              token_counter(tokenizer), previous, special_token_strings(tokenizer))
    docs_index = None
    if report.docs_index is not None:
        with atomic_dir(layout.validation_docs) as staging:
            shutil.copytree(report.docs_index.parent, staging, dirs_exist_ok=True)
        report.docs_index = layout.validation_docs / report.docs_index.name
        docs_index = report.docs_index.relative_to(layout.root).as_posix()
    summary = ValidationSummary.model_validate({**report.to_json(), "docs_index": docs_index})
    summary.write(layout.validation_summary)
    if not report.success:
        record_failed_validation(layout, params, summary)
        raise ValidationFailed(report.summary())
    write_json(layout.validation_profile, report.stats)
    return summary.to_json()


def special_token_strings(tokenizer) -> tuple[str, ...]:  # noqa: ANN001 - any transformers tokenizer
    """Every special or added token's text (``<|im_end|>``...): in a text or label it would act as that token."""
    added = [str(getattr(token, "content", token)) for token in getattr(tokenizer, "added_tokens_decoder", {}).values()]
    return tuple(sorted(set(added) | set(tokenizer.all_special_tokens)))


def log_validation(layout: Layout, summary: ValidationSummary) -> None:
    """Data Docs and the verdict of the dataset's validation, on the active MLflow run."""
    import mlflow

    mlflow.set_tags({"validation.success": str(summary.success).lower(), "validation.errors": str(summary.errors),
                     "validation.warnings": str(summary.warnings), "validation.data_docs": str(summary.docs_index)})
    if layout.validation_docs.is_dir():
        mlflow.log_artifacts(str(layout.validation_docs), artifact_path="validation/data_docs")


def record_failed_validation(layout: Layout, params: Params, summary: ValidationSummary) -> str:
    """A failed validation still leaves its evidence in MLflow: a FAILED run with the Data Docs, no model."""
    import mlflow

    tracking = connect(layout, params.registry)
    experiment_id = tracking.experiment_id(params.registry.experiment)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{params.project.name}-validation") as run:
        mlflow.set_tags({**git_tags(layout.root), "loraops.stage": "validate"})
        mlflow.log_params(flatten(params))
        log_validation(layout, summary)
        mlflow.log_artifact(str(layout.validation_summary), artifact_path="reports")
    tracking.retry(tracking.client.set_terminated, run.info.run_id, status="FAILED")
    return run.info.run_id
