"""The pipeline's stages: each reads its inputs from the project layout, calls the library, writes its outputs.

This is the one implementation of every step. ``loraops stage NAME`` (what ``dvc.yaml`` runs) and the
Prefect flow in ``flows/`` both call :func:`run_stage`; neither holds step logic of its own.
"""

from __future__ import annotations

import csv
import io
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

    _require(layout.base_model_dir, layout.prepared_dir)
    train_params = params.train
    choice = read_json(layout.search_choice) if layout.search_choice.is_file() else {}
    if choice.get("source") == "search":  # the search stage's pick; disabled, train's own lora/learning_rate
        train_params = train_params.model_copy(update={"lora": LoraParams(**choice["lora"]),
                                                       "learning_rate": choice["learning_rate"]})
    work = layout.cache_dir / "work" / "train"
    shutil.rmtree(work, ignore_errors=True)
    model, metrics, curve = train(layout.base_model_dir, load_splits(layout), train_params, params.project.seed,
                                  params.prepare.max_length, work, train_params.lora)
    base_info = read_json(layout.base_model_dir / INFO_FILE)
    # The adapter records where its base came from by id, not by this machine's path.
    model.peft_config["default"].base_model_name_or_path = base_info["id"]
    with atomic_dir(layout.adapter_dir) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        write_json(staging / PROMPT_FILE, prompt_spec(read_json(layout.prepared_dir / "labels.json"), params.prepare))
        metrics["adapter_bytes"] = sum(p.stat().st_size for p in staging.glob("*.safetensors"))
    base_bytes = sum(p.stat().st_size for p in layout.base_model_dir.glob("*.safetensors"))
    metrics["adapter_to_base_size"] = metrics["adapter_bytes"] / base_bytes
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["step", "train_loss"])
    writer.writeheader()
    writer.writerows(curve)
    atomic_write_text(layout.train_curve, buffer.getvalue())
    write_json(layout.train_metrics, metrics)
    return metrics


def stage_evaluate(params: Params, layout: Layout) -> dict:
    from loraops.evaluation import evaluate_model

    _require(layout.adapter_dir, layout.prepared_dir)
    rows = load_splits(layout)["test"][: params.eval.max_items]
    candidates = {"adapter": layout.adapter_dir, **({"base": None} if params.eval.compare_base else {})}
    results, items = {}, []
    for name, adapter in candidates.items():
        metrics, predictions = evaluate_model(layout.base_model_dir, rows, params.eval.batch_size, layout.root, adapter)
        results[name] = metrics
        items += [{"model": name, **p} for p in predictions]
    summary: dict = {"models": results, "test_items": len(rows)}
    if "base" in results:
        summary["accuracy_gain_over_base"] = results["adapter"]["accuracy"] - results["base"]["accuracy"]
    write_jsonl(layout.predictions, items)
    write_json(layout.eval_metrics, summary)
    return summary


def stage_register(params: Params, layout: Layout) -> dict:
    from loraops.registry import log_and_register

    _require(layout.adapter_dir, layout.train_metrics, layout.eval_metrics, layout.train_curve)
    curve = list(csv.DictReader(layout.train_curve.open()))
    curve = [{"step": int(r["step"]), "train_loss": float(r["train_loss"])} for r in curve]
    result = log_and_register(layout, params, read_json(layout.train_metrics), read_json(layout.eval_metrics),
                              curve, read_json(layout.base_model_dir / INFO_FILE))
    write_json(layout.registration, result)
    return result


# The DAG, in order. dvc.yaml and the Prefect flow follow this order (tests check both).
STAGES: dict[str, Callable[[Params, Layout], dict]] = {
    "base_model": stage_base_model, "ingest": stage_ingest, "validate": stage_validate, "prepare": stage_prepare,
    "search": stage_search, "train": stage_train, "evaluate": stage_evaluate, "register": stage_register,
}
PIPELINE = tuple(STAGES)


def run_stage(name: str, params: Params, layout: Layout) -> dict:
    if name not in STAGES:
        raise StageOrderError(f"unknown stage {name!r}; stages are {', '.join(PIPELINE)}")
    preflight(params, layout)
    return STAGES[name](params, layout)
