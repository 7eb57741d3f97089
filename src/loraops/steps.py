"""The pipeline's stages: each reads its inputs from the project layout, calls the library, writes its outputs.

This is the one implementation of every step. ``loraops stage NAME`` (what ``dvc.yaml`` runs) and the
Prefect flow in ``flows/`` both call :func:`run_stage`; neither holds step logic of its own.
"""

from __future__ import annotations

import shutil
from typing import Callable

from loraops.base_model import INFO_FILE, classify_reference, materialise_base_model
from loraops.config import Params
from loraops.data.ingest import ingest, source_file
from loraops.errors import StageOrderError, ValidationFailed
from loraops.project import Layout, atomic_dir, atomic_write_text, read_json, read_jsonl, write_json, write_jsonl

def _require(*paths) -> None:
    for path in paths:
        if not path.exists():
            raise StageOrderError(f"{path}: missing input; run the stage that produces it first")


def preflight(params: Params, layout: Layout) -> None:
    """Checks that need no heavy work, run before anything starts, so bad input fails at once."""
    classify_reference(params.model, layout.root)
    if params.data.source != "demo":
        source_file(params.data, layout.root)


def stage_base_model(params: Params, layout: Layout) -> dict:
    return materialise_base_model(params.model, layout.root, layout.base_model_dir, layout.cache_dir)


def stage_ingest(params: Params, layout: Layout) -> dict:
    records = ingest(params.data, layout.root, params.project.seed)
    write_jsonl(layout.raw_data, records)
    return {"rows": len(records), "path": str(layout.raw_data)}


def stage_validate(params: Params, layout: Layout) -> dict:
    """Great Expectations checks on the raw dataset; a failure stops the pipeline before anything trains."""
    from loraops.modeling import load_tokenizer, token_counter
    from loraops.validation import validate_dataset

    _require(layout.raw_data, layout.base_model_dir)
    token_lengths = token_counter(load_tokenizer(layout.base_model_dir))
    previous = read_json(layout.validation_profile) if layout.validation_profile.is_file() else None
    report = validate_dataset(read_jsonl(layout.raw_data), params.validate, layout.cache_dir / "validation",
                              token_lengths, previous)
    summary = report.to_json()
    if report.docs_index is not None:
        with atomic_dir(layout.validation_docs) as staging:
            shutil.copytree(report.docs_index.parent, staging, dirs_exist_ok=True)
        report.docs_index = layout.validation_docs / report.docs_index.name
        summary["docs_index"] = str(report.docs_index.relative_to(layout.root))
    write_json(layout.validation_summary, summary)
    if not report.success:
        from loraops.registry import log_failed_validation

        log_failed_validation(layout, params, summary)
        raise ValidationFailed(report.summary())
    write_json(layout.validation_profile, report.stats)
    return summary


def stage_prepare(params: Params, layout: Layout) -> dict:
    from loraops.modeling import load_tokenizer
    from loraops.prepare import prepare

    _require(layout.raw_data, layout.base_model_dir, layout.validation_summary)
    if not read_json(layout.validation_summary)["success"]:
        raise ValidationFailed(f"{layout.validation_summary}: the dataset failed validation; fix the data first")
    tokenizer = load_tokenizer(layout.base_model_dir)
    splits, labels, summary = prepare(read_jsonl(layout.raw_data), tokenizer, params.prepare, params.project.seed)
    with atomic_dir(layout.prepared_dir) as staging:
        for name, rows in splits.items():
            write_jsonl(staging / f"{name}.jsonl", rows)
        write_json(staging / "labels.json", labels)
        write_json(staging / "summary.json", summary)
    return summary


def load_splits(layout: Layout) -> dict[str, list[dict]]:
    _require(layout.prepared_dir / "train.jsonl")
    return {name: read_jsonl(layout.prepared_dir / f"{name}.jsonl") for name in ("train", "val", "test")}


def stage_search(params: Params, layout: Layout) -> dict:
    from loraops.search import run_search

    _require(layout.base_model_dir, layout.prepared_dir)
    return run_search(params, layout)


def stage_train(params: Params, layout: Layout) -> dict:
    from loraops.config import LoraParams
    from loraops.serving import PROMPT_FILE, prompt_spec
    from loraops.train import train
    from loraops.train_outputs import merge_adapter, safetensors_bytes, write_curve

    _require(layout.base_model_dir, layout.prepared_dir)
    splits = load_splits(layout)
    train_params = params.train
    choice = read_json(layout.search_choice) if layout.search_choice.is_file() else {}
    if choice.get("source") == "search":  # the search stage's pick; disabled, train's own lora/learning_rate
        train_params = train_params.model_copy(update={"lora": LoraParams(**choice["lora"]),
                                                       "learning_rate": choice["learning_rate"]})
    # Not wiped: a re-run after a crash resumes from the last complete checkpoint of the same inputs.
    work = layout.work_dir("train")
    model, metrics, curve = train(layout.base_model_dir, splits, train_params, params.project.seed,
                                  params.prepare.max_length, work, train_params.lora)
    val_curve = metrics.pop("val_curve")
    base_info = read_json(layout.base_model_dir / INFO_FILE)
    # The adapter records where its base came from by id, not by this machine's path.
    model.peft_config["default"].base_model_name_or_path = base_info["id"]
    with atomic_dir(layout.adapter_dir) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        write_json(staging / PROMPT_FILE, prompt_spec(read_json(layout.prepared_dir / "labels.json"), params.prepare))
        metrics["adapter_bytes"] = safetensors_bytes(staging)
        del model
        # Checked before the adapter is put in place: a merge over tolerance leaves the old outputs.
        metrics["merge_max_abs_logit_diff"] = merge_adapter(layout.base_model_dir, staging, layout.merged_dir,
                                                            splits["val"], params.train.merge_tolerance)
    metrics["adapter_to_base_size"] = metrics["adapter_bytes"] / safetensors_bytes(layout.base_model_dir)
    write_curve(layout.train_curve, curve, "train_loss")
    write_curve(layout.val_curve, val_curve, "val_loss")
    write_json(layout.train_metrics, metrics)
    shutil.rmtree(work, ignore_errors=True)  # finished: its checkpoints can never be resumed again
    return metrics


def stage_baseline(params: Params, layout: Layout) -> dict:
    """Full fine-tuning through the same trainer: same data and budget as ``train``, its own learning rate."""
    from loraops.train import train
    from loraops.train_outputs import save_full_model, write_disabled_baseline

    if not params.baseline.enabled:
        return write_disabled_baseline(layout.full_model_dir, layout.baseline_metrics)
    _require(layout.base_model_dir, layout.prepared_dir)
    work = layout.work_dir("baseline")
    model, metrics, _ = train(layout.base_model_dir, load_splits(layout), params.train, params.project.seed,
                              params.prepare.max_length, work, None, learning_rate=params.baseline.learning_rate)
    metrics.pop("val_curve")
    save_full_model(model, layout.base_model_dir, layout.full_model_dir, metrics)
    write_json(layout.baseline_metrics, {"enabled": True, **metrics})
    shutil.rmtree(work, ignore_errors=True)
    return metrics


def stage_evaluate(params: Params, layout: Layout) -> dict:
    """Base model vs adapter vs full fine-tune (when models/full exists): see loraops.comparison."""
    from loraops.comparison import run_evaluation

    _require(layout.adapter_dir, layout.prepared_dir)
    return run_evaluation(params, layout, load_splits(layout)["test"][: params.eval.max_items])


def stage_register(params: Params, layout: Layout) -> dict:
    from loraops.registry import log_and_register

    _require(layout.adapter_dir, layout.train_metrics, layout.eval_metrics, layout.train_curve)
    from loraops.train_outputs import read_curve

    result = log_and_register(layout, params, read_json(layout.train_metrics), read_json(layout.eval_metrics),
                              read_curve(layout.train_curve, "train_loss"), read_json(layout.base_model_dir / INFO_FILE),
                              val_curve=read_curve(layout.val_curve, "val_loss"))
    write_json(layout.registration, result)
    return result


# The DAG, in order. dvc.yaml and the Prefect flow follow this order (tests check both).
STAGES: dict[str, Callable[[Params, Layout], dict]] = {
    "base_model": stage_base_model, "ingest": stage_ingest, "validate": stage_validate, "prepare": stage_prepare,
    "search": stage_search, "train": stage_train, "baseline": stage_baseline, "evaluate": stage_evaluate,
    "register": stage_register,
}
PIPELINE = tuple(STAGES)


def run_stage(name: str, params: Params, layout: Layout) -> dict:
    if name not in STAGES:
        raise StageOrderError(f"unknown stage {name!r}; stages are {', '.join(PIPELINE)}")
    preflight(params, layout)
    return STAGES[name](params, layout)
