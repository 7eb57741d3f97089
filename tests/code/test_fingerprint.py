"""Fingerprints of a retrain's inputs: equal when nothing that matters changed, different when it did."""

import json
import shutil

import pytest

from loraops.config import load_params
from loraops.pipeline.fingerprint import Fingerprint, retrain_fingerprint
from loraops.core import Layout


def fingerprint(root, *overrides):
    layout = Layout(root)
    return retrain_fingerprint(load_params(layout.params_file, list(overrides)), layout)


def test_same_project_fingerprints_the_same_and_a_copy_elsewhere_too(tiny_project, tmp_path):
    first = fingerprint(tiny_project)
    assert fingerprint(tiny_project) == first
    copy = shutil.copytree(tiny_project, tmp_path / "elsewhere")
    assert fingerprint(copy).data == first.data  # content, not paths


@pytest.mark.parametrize("override, component", [
    ("data.demo.train_per_intent=7", "data"),
    ("project.seed=8", "data"),
    ("train.learning_rate=0.001", "params"),
    ("eval.max_items=3", "params"),
    ("registry.model_name=other", "params"),
])
def test_a_changed_input_changes_its_component(tiny_project, override, component):
    before, after = fingerprint(tiny_project), fingerprint(tiny_project, override)
    assert component in after.changed_since(before)
    assert after.combined != before.combined


def test_only_params_change_when_a_training_param_changes(tiny_project):
    before, after = fingerprint(tiny_project), fingerprint(tiny_project, "train.max_steps=9")
    assert after.changed_since(before) == ["params"]


def test_data_file_bytes_count(tiny_project):
    (tiny_project / "d.jsonl").write_text(json.dumps({"text": "a", "label": "x"}) + "\n")
    before = fingerprint(tiny_project, "data.source=jsonl", "data.path=d.jsonl")
    (tiny_project / "d.jsonl").write_text(json.dumps({"text": "b", "label": "x"}) + "\n")
    after = fingerprint(tiny_project, "data.source=jsonl", "data.path=d.jsonl")
    assert after.changed_since(before) == ["data"]


def test_base_model_weights_count(tiny_project, tiny_base, tmp_path):
    base = shutil.copytree(tiny_base, tmp_path / "base")
    before = fingerprint(tiny_project, f"model.base={base}")
    weights = next(base.glob("*.safetensors"))
    payload = bytearray(weights.read_bytes())
    payload[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(payload))
    after = fingerprint(tiny_project, f"model.base={base}")
    assert after.changed_since(before) == ["base_model"]


def test_builtin_and_hub_references_fingerprint_without_downloading(tiny_project):
    builtin = fingerprint(tiny_project, "model.base=smollm2-135m-instruct")
    hub = fingerprint(tiny_project, "model.base=org/model", "model.revision=abc")
    moved = fingerprint(tiny_project, "model.base=org/model", "model.revision=def")
    assert len({builtin.base_model, hub.base_model, moved.base_model}) == 3


def test_tags_round_trip_and_partial_tags_are_no_fingerprint(tiny_project):
    current = fingerprint(tiny_project)
    tags = current.as_tags()
    assert Fingerprint.from_tags(tags) == current
    tags.pop("loraops.fingerprint.params")
    assert Fingerprint.from_tags(tags) is None
    assert current.changed_since(None) == ["data", "params", "base_model", "code"]


def test_code_and_library_versions_are_part_of_the_retrain_fingerprint(tiny_project):
    before = fingerprint(tiny_project)
    metric = tiny_project / "evals" / "accuracy" / "accuracy.py"
    metric.write_text(metric.read_text() + "\n# a fix\n")
    after = fingerprint(tiny_project)
    assert after.changed_since(before) == ["code"]
    from loraops.pipeline.fingerprint import LIBRARIES
    assert {"torch", "transformers", "peft"} <= set(LIBRARIES)


def test_a_local_base_counts_its_nested_files(tiny_project, tiny_base, tmp_path):
    base = shutil.copytree(tiny_base, tmp_path / "base")
    (base / "tokenizer").mkdir()
    (base / "tokenizer" / "tokenizer_config.json").write_text('{"model_max_length": 512}')
    before = fingerprint(tiny_project, f"model.base={base}")
    (base / "tokenizer" / "tokenizer_config.json").write_text('{"model_max_length": 128}')
    assert fingerprint(tiny_project, f"model.base={base}").changed_since(before) == ["base_model"]


def test_an_edit_that_keeps_size_and_mtime_is_still_seen(tiny_project, tiny_base, tmp_path):
    import os

    base = shutil.copytree(tiny_base, tmp_path / "base")
    before = fingerprint(tiny_project, f"model.base={base}")  # remembered in the project's hash memo
    weights = next(base.glob("*.safetensors"))
    stat = weights.stat()
    payload = bytearray(weights.read_bytes())
    payload[-1] ^= 1
    weights.write_bytes(bytes(payload))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same mtime
    assert weights.stat().st_size == stat.st_size and weights.stat().st_mtime_ns == stat.st_mtime_ns
    assert fingerprint(tiny_project, f"model.base={base}").changed_since(before) == ["base_model"]


def test_the_search_study_name_covers_the_base_weights_and_the_lr_schedule(tiny_project, tiny_base):
    from loraops.search import study_name

    layout = Layout(tiny_project)
    shutil.copytree(tiny_base, layout.base_model_dir)
    params = load_params(layout.params_file)
    name = study_name(params, layout)
    assert study_name(load_params(layout.params_file, ["train.lr_scheduler=linear"]), layout) != name
    weights = next(layout.base_model_dir.glob("*.safetensors"))
    payload = bytearray(weights.read_bytes())
    payload[-1] ^= 1
    weights.write_bytes(bytes(payload))
    assert study_name(params, layout) != name


def test_the_checkpoint_key_covers_tokenizer_files_and_library_versions(tiny_base, tmp_path):
    import json

    from loraops.config import TrainParams
    from loraops.training.checkpoints import TRAINING_LIBRARIES, checkpoint_key

    base = shutil.copytree(tiny_base, tmp_path / "base")
    splits = {"train": [{"text": "a"}], "val": [{"text": "b"}]}
    key = checkpoint_key(base, splits, TrainParams(), 1, 64, None, None, "cpu")
    config = json.loads((base / "tokenizer_config.json").read_text())
    (base / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 77}))
    assert checkpoint_key(base, splits, TrainParams(), 1, 64, None, None, "cpu") != key
    assert {"torch", "transformers", "peft", "accelerate"} <= set(TRAINING_LIBRARIES)


def test_the_weights_inputs_leave_out_what_cannot_change_the_weights_and_name_what_does(tiny_base):
    from loraops.config import LoraParams, TrainParams
    from loraops.training.checkpoints import differing_inputs, weights_fingerprint, weights_inputs

    splits = {"train": [{"text": "a"}], "val": [{"text": "b"}]}
    lora = LoraParams(r=4, alpha=8)
    shipped = TrainParams(max_steps=60, eval_steps=20, early_stopping_patience=3)

    def inputs(params=shipped, rows=splits, adapter=lora):
        return weights_inputs(tiny_base, rows, params, 1, 64, adapter, None, "cpu")

    base = inputs()
    # How often it logs, validates or saves, on which val rows, and (inert: 4 x 20 >= 60) early stopping.
    same = [shipped.model_copy(update={"eval_steps": 1, "logging_steps": 1, "save_steps": None,
                                       "early_stopping_patience": None, "reuse_trial": False}),
            shipped.model_copy(update={"eval_steps": 15})]
    for params in same:
        assert weights_fingerprint(inputs(params)) == weights_fingerprint(base)
    assert inputs(rows={**splits, "val": []}) == base
    assert differing_inputs(inputs(shipped.model_copy(update={"max_steps": 80})), base) == ["train.max_steps"]
    assert differing_inputs(inputs(adapter=lora.model_copy(update={"dropout": 0.1})), base) == ["lora.dropout"]
    assert differing_inputs(inputs(rows={**splits, "train": []}), base) == ["train_data"]
    # Early stopping that can stop before the last step counts, with the val rows it judges.
    stopping = shipped.model_copy(update={"eval_steps": 10})
    assert differing_inputs(inputs(stopping), base) == ["early_stopping"]
    assert inputs(stopping, rows={**splits, "val": []}) != inputs(stopping)
