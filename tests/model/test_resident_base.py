"""Search trials on one resident base: each trial runs as on a freshly loaded base, whatever ran before it,
and the base is bit-identical after a trial. Real transformers / PEFT / bitsandbytes on the tiny model."""

from pathlib import Path

import pytest
import torch

from loraops.config import EvalParams, LoraParams, PrepareParams, TrainParams
from loraops.data.demo import generate_demo_dataset
from loraops.evaluation import run_model
from loraops.modeling import load_tokenizer
from loraops.prepare import prepare
from loraops.training import ResidentBase, train

REPO = Path(__file__).resolve().parents[2]
FIRST = LoraParams(r=2, alpha=4, target_modules="attention", dropout=0.0)
# Another rank, other modules, dropout (random numbers drawn while training): what must not carry over.
OTHER = LoraParams(r=4, alpha=16, target_modules="mlp", dropout=0.2)


@pytest.fixture(scope="module")
def splits(tiny_base):
    rows = generate_demo_dataset(seed=1, train_per_intent=3, test_per_intent=1)
    rendered, _, _ = prepare(rows, load_tokenizer(tiny_base), PrepareParams(max_length=384), seed=1)
    return {"train": rendered["train"], "val": rendered["val"][:8]}


def trial_params(method: str, **changes) -> TrainParams:
    # Validation every 2 steps: no-grad forwards between training steps, where bitsandbytes may rewrite 4-bit
    # layers (a CPU with AVX512-BF16) unless kept from it.
    return TrainParams(**{"method": method, "max_steps": 4, "batch_size": 4, "learning_rate": 1e-2,
                          "warmup_steps": 0, "logging_steps": 1, "eval_steps": 2, "early_stopping_patience": None,
                          "save_steps": None, **changes})


def adapter_weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}


def base_snapshot(model) -> dict:
    return {"weights": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "modules": [(name, type(m).__name__, m.training, getattr(m, "gradient_checkpointing", None),
                         len(m._forward_hooks), len(m._forward_pre_hooks)) for name, m in model.named_modules()],
            "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
            "config": model.config.to_dict()}


@pytest.mark.parametrize("method", ["qlora", "lora"])
def test_a_trial_on_the_resident_base_runs_as_on_a_fresh_load_whatever_ran_before(method, tiny_base, splits,
                                                                                  tmp_path):
    params = trial_params(method)
    fresh, fresh_record, fresh_curves = train(tiny_base, splits, params, 3, 384, tmp_path / "fresh", FIRST,
                                              checkpoints=False)
    fresh_adapter = adapter_weights(fresh)

    resident = ResidentBase(tiny_base, method)
    train(tiny_base, splits, trial_params(method, learning_rate=5e-2, max_steps=2), 11, 384, tmp_path / "other", OTHER,
          checkpoints=False, resident=resident)
    base = resident.model
    assert resident.release()
    model, record, curves = train(tiny_base, splits, params, 3, 384, tmp_path / "after", FIRST,
                                  checkpoints=False, resident=resident)
    assert resident.model is base  # the same loaded base, not a reload
    assert curves.train == fresh_curves.train and len(curves.train) == 4  # train loss, step by step
    assert curves.val == fresh_curves.val and len(curves.val) == 2
    assert record.val_loss == fresh_record.val_loss
    after = adapter_weights(model)
    assert after.keys() == fresh_adapter.keys() and all(torch.equal(after[k], fresh_adapter[k]) for k in after)
    assert record.trainable_params == fresh_record.trainable_params
    assert resident.release()


@pytest.mark.parametrize("method", ["qlora", "lora"])
def test_the_base_is_bit_identical_after_a_trial(method, tiny_base, splits, tmp_path):
    resident = ResidentBase(tiny_base, method)
    resident.attach(FIRST, 0)  # loads the base
    assert resident.release()
    base = resident.model
    before = base_snapshot(base)
    # Activation checkpointing on: the Trainer adds its flags and an input-gradient hook to the base.
    train(tiny_base, splits, trial_params(method, gradient_checkpointing=True), 0, 384, tmp_path, OTHER,
          checkpoints=False, resident=resident)
    assert resident.release() and resident.model is base
    after = base_snapshot(base)
    assert after["weights"].keys() == before["weights"].keys()
    changed = [k for k, v in before["weights"].items()
               if v.dtype != after["weights"][k].dtype or not torch.equal(v, after["weights"][k])]
    assert changed == []
    assert after["modules"] == before["modules"]
    assert after["requires_grad"] == before["requires_grad"] and after["config"] == before["config"]


def test_full_fine_tuning_and_another_method_are_refused_the_resident_base(tiny_base, splits, tmp_path):
    resident = ResidentBase(tiny_base, "lora")
    with pytest.raises(ValueError, match="full fine-tuning .* loads its own copy"):
        train(tiny_base, splits, trial_params("lora"), 0, 384, tmp_path, None, resident=resident)
    with pytest.raises(ValueError, match="resident base is lora of .*, the run wants qlora"):
        train(tiny_base, splits, trial_params("qlora"), 0, 384, tmp_path, FIRST, resident=resident)
    assert not resident.loaded  # nothing was loaded for the refused runs
    with pytest.raises(ValueError, match="not 'full'"):
        ResidentBase(tiny_base, "full")


def test_an_adapter_in_memory_scores_exactly_as_the_same_adapter_loaded_from_disk(tiny_base, splits, tmp_path):
    resident = ResidentBase(tiny_base, "lora")
    model, _, _ = train(tiny_base, splits, trial_params("lora", gradient_checkpointing=True), 0, 384, tmp_path,
                        FIRST, checkpoints=False, resident=resident)
    model.save_pretrained(tmp_path / "adapter", safe_serialization=True)
    # As a trial scores: constrained to the labels, and retention on the dev pool.
    params = EvalParams(metrics=["accuracy", "perplexity"], retention_max_new_tokens=8)
    rows, labels = splits["val"], sorted({r["label"] for r in splits["train"]})
    scored = {name: run_model(tiny_base, rows, 4, REPO, params=params, labels=labels, retention_pool="dev", **how)
              for name, how in (("memory", {"trained_model": resident.inference_model()}),
                                ("disk", {"adapter_dir": tmp_path / "adapter"}))}
    assert scored["memory"]["items"] == scored["disk"]["items"]
    assert scored["memory"]["retention_items"] == scored["disk"]["retention_items"]
    for key in ("accuracy", "accuracy_unconstrained", "perplexity", "retention"):
        assert scored["memory"]["metrics"][key] == scored["disk"]["metrics"][key]
    assert resident.release()
    with pytest.raises(ValueError, match="not several"):
        run_model(tiny_base, rows, 4, REPO, tmp_path / "adapter", params=params, trained_model=model)
