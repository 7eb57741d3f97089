"""The ``validate`` stage: the suites on ``data/raw/dataset.jsonl``, Data Docs and summary written pass or fail."""

from __future__ import annotations

import shutil

from loraops.config import Params, tracking_params
from loraops.core import Layout, ValidationFailed, atomic_dir, atomic_write_text, read_json, read_jsonl, require, \
    write_json
from loraops.core.hashing import dvc_md5
from loraops.core.pipeline_run import end_pipeline_run, pipeline_run_id
from loraops.core.tracking import connect, git_tags
from loraops.modeling import load_tokenizer, token_counter
from loraops.validation.check import validate_dataset
from loraops.validation.docs_html import render_html
from loraops.validation.records import ValidationSummary

DOCS_PAGE = "data_docs.html"  # the one-page Data Docs, beside Great Expectations' site
DOCS_ARTIFACT = "validation/data_docs.html"  # where the MLflow run holds it


def validate_stage(params: Params, layout: Layout) -> dict:
    """Validate the raw dataset; a failure raises :class:`ValidationFailed` (one screen) after the Data Docs and
    ``metrics/validation.json`` are written and a FAILED MLflow run holds them, so nothing trains on it and the
    reasons stay on disk and in the tracking store."""
    require(layout.raw_data, layout.base_model_dir)
    tokenizer = load_tokenizer(layout.base_model_dir)
    previous = read_json(layout.validation_profile) if layout.validation_profile.is_file() else None
    dataset = f"dataset md5 {dvc_md5(layout.raw_data)[:12]}"
    report = validate_dataset(read_jsonl(layout.raw_data), params.validate, layout.cache_dir / "validation",
                              token_counter(tokenizer), previous, special_token_strings(tokenizer), run_name=dataset)
    docs_index = None
    with atomic_dir(layout.validation_docs) as staging:
        if report.docs_index is not None:
            shutil.copytree(report.docs_index.parent, staging, dirs_exist_ok=True)
        atomic_write_text(staging / DOCS_PAGE, render_html(report, f"Data validation of {dataset}"))
    if report.docs_index is not None:
        report.docs_index = layout.validation_docs / report.docs_index.name
        docs_index = report.docs_index.relative_to(layout.root).as_posix()
    page = (layout.validation_docs / DOCS_PAGE).relative_to(layout.root).as_posix()
    summary = ValidationSummary.model_validate({**report.to_json(), "docs_index": docs_index, "docs_page": page})
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


def validation_tags(summary: ValidationSummary, run_id: str | None) -> dict[str, str]:
    """The verdict, and where the one-page Data Docs are: a ``runs:/`` URI, never a path on this machine."""
    tags = {"validation.success": str(summary.success).lower(), "validation.errors": str(summary.errors),
            "validation.warnings": str(summary.warnings)}
    if run_id is not None and summary.docs_page is not None:
        tags["validation.data_docs"] = f"runs:/{run_id}/{DOCS_ARTIFACT}"
    return tags


def log_validation(layout: Layout, summary: ValidationSummary) -> None:
    """The one-page Data Docs and the verdict of the dataset's validation, on the active MLflow run."""
    import mlflow

    page = layout.root / summary.docs_page if summary.docs_page else None
    logged = page is not None and page.is_file()
    if logged:
        mlflow.log_artifact(str(page), artifact_path=DOCS_ARTIFACT.rsplit("/", 1)[0])
    mlflow.set_tags(validation_tags(summary, mlflow.active_run().info.run_id if logged else None))


def record_failed_validation(layout: Layout, params: Params, summary: ValidationSummary) -> str:
    """A failed validation still leaves its evidence in MLflow: the pipeline run ends FAILED with the Data
    Docs and the validation summary, and no model."""
    import mlflow

    tracking = connect(layout, params.registry)
    experiment_id = tracking.experiment_id(params.registry.experiment)
    run_id = pipeline_run_id(tracking, experiment_id, params.project.name)
    with mlflow.start_run(run_id=run_id):
        mlflow.set_tags({**git_tags(layout.root), "loraops.failed_stage": "validate: dataset validation failed"})
        mlflow.log_params(tracking_params(params, layout.root))
        log_validation(layout, summary)
        mlflow.log_artifact(str(layout.validation_summary), artifact_path="reports")
    end_pipeline_run(tracking, run_id, "FAILED")
    return run_id
