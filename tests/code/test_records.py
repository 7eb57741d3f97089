"""Typed stage records: what one stage writes, the next reads back as the same record; anything else is a
one-line error that names the file and the field."""

import json

import pytest

from loraops.config import LoraParams
from loraops.core import StageOrderError
from loraops.evaluation import EvaluationSummary
from loraops.training import BaselineRecord, DisabledBaseline, TrainChoice, TrainRecord, read_baseline
from loraops.validation import ValidationSummary

TRAIN = dict(method="full", train_loss=1.0, val_loss=1.1, steps=3, planned_steps=3, stopped_early=False,
             resumed_from_step=0, trainable_params=10, total_params=10, trainable_share=1.0, learning_rate=1e-4,
             train_seconds=2.0, peak_memory_mb=100.0, memory_before_train_mb=50.0, device="cpu", torch_threads=2)


@pytest.mark.parametrize("record", [
    TrainRecord(**TRAIN),  # no evaluation ran: best_val_loss and tokens_per_second stay None
    TrainRecord(**{**TRAIN, "method": "qlora", "best_val_loss": 0.9, "adapter_bytes": 123}),
    BaselineRecord(**TRAIN),
    DisabledBaseline(reason="baseline.enabled is false in params.yaml"),
    TrainChoice(source="params", lora=LoraParams(), learning_rate=2e-3),
    EvaluationSummary(headline="accuracy", test_items=2, test_set_sha256="x", confidence=0.95, bootstrap_samples=100,
                      models={"adapter": {"items": 2, "accuracy": 0.5}}),
    ValidationSummary(success=True, errors=0, warnings=0, failures=[], stats={"rows": 3}),
])
def test_a_record_reads_back_as_written(record, tmp_path):
    path = tmp_path / "record.json"
    record.write(path)
    assert type(record).read(path) == record
    if "enabled" in type(record).model_fields:
        assert read_baseline(path) == record


def test_a_file_that_is_not_the_record_is_a_one_line_error_naming_file_and_field(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps({**TRAIN, "steps": "many"}))
    with pytest.raises(StageOrderError, match=r"train\.json: not a valid TrainRecord \(steps: .*\)") as info:
        TrainRecord.read(path)
    assert "\n" not in str(info.value)
    path.write_text(json.dumps({**TRAIN, "stpes": 3}))  # a renamed field on the writing side
    with pytest.raises(StageOrderError, match="stpes"):
        TrainRecord.read(path)
    with pytest.raises(StageOrderError, match="missing input"):
        TrainRecord.read(tmp_path / "nowhere.json")
