"""The train and baseline stages on the tiny model: outputs, merged export, full fine-tune, disabled baseline."""

import shutil

import pytest

from loraops.config import load_params
from loraops.core import Layout, read_json
from loraops.modeling import load_tokenizer
from loraops.pipeline import run_stage
from loraops.training import BaselineRecord, DisabledBaseline, read_baseline
from tests.helpers.projects import new_project, prepared_from_library, run_stages


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_base):
    layout = new_project(tmp_path_factory.mktemp("stages") / "project", tiny_base,
                         train={"eval_steps": 2, "save_steps": 2}, search={"enabled": False})
    prepared_from_library(layout)
    run_stages(layout, "search", "train", "baseline")
    return layout


def test_train_stage_writes_adapter_curves_and_measurements(trained):
    layout = trained
    metrics = read_json(layout.train_metrics)
    for key in ("trainable_params", "total_params", "trainable_share", "adapter_bytes", "adapter_to_base_size",
                "train_seconds", "peak_memory_mb", "memory_before_train_mb", "tokens_per_second", "val_loss",
                "merge_max_abs_logit_diff"):
        assert isinstance(metrics[key], (int, float)), key
    assert (layout.adapter_dir / "adapter_model.safetensors").is_file()
    assert layout.train_curve.read_text().splitlines()[0] == "step,train_loss"
    assert [line.split(",")[0] for line in layout.val_curve.read_text().splitlines()] == ["step", "2", "4"]
    assert not layout.work_dir("train").exists()  # finished: checkpoints removed


def test_merged_export_loads_with_plain_transformers_and_matches_the_adapter(trained):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from loraops.modeling import load_tokenizer
    from loraops.core import read_jsonl
    from loraops.training.export import sample_batch

    layout = trained
    diff = read_json(layout.train_metrics)["merge_max_abs_logit_diff"]
    assert 0 <= diff <= load_params(layout.params_file).train.merge_tolerance
    merged = AutoModelForCausalLM.from_pretrained(layout.merged_dir)
    assert not list(layout.merged_dir.glob("*.bin")) and list(layout.merged_dir.glob("*.safetensors"))
    assert not any("lora" in name for name, _ in merged.named_parameters())
    base = AutoModelForCausalLM.from_pretrained(layout.base_model_dir, dtype=torch.float32)
    unmerged = PeftModel.from_pretrained(base, layout.adapter_dir).eval()
    batch = sample_batch(load_tokenizer(layout.merged_dir), read_jsonl(layout.prepared_dir / "test.jsonl"))
    with torch.no_grad():
        gap = (merged(**batch).logits - unmerged(**batch).logits).abs()[batch["attention_mask"].bool()].max()
    assert gap.item() <= 1e-3
    # ... and the merge changed something: the adapter is not a no-op on these prompts.
    with torch.no_grad(), unmerged.disable_adapter():
        assert (unmerged(**batch).logits - merged(**batch).logits).abs().max().item() > 1e-4


def test_baseline_stage_writes_a_plain_full_model_and_its_metrics(trained):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    layout = trained
    metrics = read_json(layout.baseline_metrics)
    assert metrics["enabled"] is True and metrics["method"] == "full" and metrics["trainable_share"] == 1.0
    assert metrics["learning_rate"] == load_params(layout.params_file).baseline.learning_rate
    assert metrics["steps"] == read_json(layout.train_metrics)["steps"]  # same budget
    assert "adapter_bytes" not in metrics and isinstance(metrics["val_loss"], float)
    assert isinstance(read_baseline(layout.baseline_metrics), BaselineRecord)
    assert (layout.full_model_dir / "config.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(layout.full_model_dir)
    AutoTokenizer.from_pretrained(layout.full_model_dir)
    base = AutoModelForCausalLM.from_pretrained(layout.base_model_dir)
    moved = [n for (n, p), (_, q) in zip(model.named_parameters(), base.named_parameters()) if not p.equal(q)]
    assert len(moved) > len(list(base.named_parameters())) // 2  # every weight was trainable


def test_disabled_baseline_writes_an_explicit_record_and_no_model(trained, tmp_path):
    root = tmp_path / "project"
    shutil.copytree(trained.root, root, ignore=shutil.ignore_patterns("full", "baseline.json"))
    layout = Layout(root)
    params = load_params(layout.params_file, ["baseline.enabled=false"])
    assert run_stage("baseline", params, layout) == read_json(layout.baseline_metrics)
    assert read_json(layout.baseline_metrics)["enabled"] is False
    assert isinstance(read_baseline(layout.baseline_metrics), DisabledBaseline)
    assert not (layout.full_model_dir / "config.json").is_file()
    assert not list(layout.full_model_dir.glob("*.safetensors"))
