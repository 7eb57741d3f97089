"""The ``prepare`` stage: the validated raw dataset, split and rendered, as ``data/prepared/``."""

from __future__ import annotations

from loraops.config import Params
from loraops.core import Layout, ValidationFailed, atomic_dir, read_jsonl, require, write_json, write_jsonl
from loraops.modeling import load_tokenizer
from loraops.prepare.splitting import prepare
from loraops.validation import ValidationSummary


def prepare_stage(params: Params, layout: Layout) -> dict:
    """The ``prepare`` stage: ``data/prepared/{train,val,test}.jsonl``, ``labels.json`` and ``summary.json``;
    it refuses a dataset that failed validation."""
    require(layout.raw_data, layout.base_model_dir, layout.validation_summary)
    if not ValidationSummary.read(layout.validation_summary).success:
        raise ValidationFailed(f"{layout.validation_summary}: the dataset failed validation; fix the data first")
    tokenizer = load_tokenizer(layout.base_model_dir)
    splits, labels, summary = prepare(read_jsonl(layout.raw_data), tokenizer, params.prepare, params.project.seed)
    with atomic_dir(layout.prepared_dir) as staging:
        for name, rows in splits.items():
            write_jsonl(staging / f"{name}.jsonl", rows)
        write_json(staging / "labels.json", labels)
        write_json(staging / "summary.json", summary)
    return summary
