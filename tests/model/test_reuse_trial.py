"""The train stage takes the chosen search trial's adapter when it would train the same weights, and only then."""

from __future__ import annotations

import pytest

from loraops.core import Layout, read_json
from loraops.training.curves import read_curve
from loraops.training.reuse import RECORD_FILE
from tests.helpers.projects import new_project, prepared_from_library, run_stages

# A trial validates every step on 4 val rows and saves nothing; the train stage validates every 2 steps on the
# whole val split, with checkpoints and (inert at 4 steps) early stopping: neither may change the weights.
SEARCH = {"enabled": True, "n_trials": 2, "max_steps": 4, "eval_steps": 1, "val_items": 4, "pruner": "none",
          "sampler": "random", "dropout": 0.1, "learning_rate": [1e-3, 3e-2]}
TRAIN = {"method": "lora", "max_steps": 4, "eval_steps": 2, "save_steps": 2, "early_stopping_patience": 3}


def searched_project(root, tiny_base, **changes) -> Layout:
    """A project on the tiny base whose search has run (prepared splits straight from the library: the data
    stages have their own tests, and GX is slow)."""
    layout = new_project(root, tiny_base, search={**SEARCH, **changes.pop("search", {})},
                         train={**TRAIN, **changes.pop("train", {})})
    prepared_from_library(layout)
    run_stages(layout, "search")
    return layout


@pytest.fixture(scope="module")
def searched(tmp_path_factory, tiny_base) -> Layout:
    return searched_project(tmp_path_factory.mktemp("reuse") / "project", tiny_base)


def adapter_tensors(layout: Layout) -> dict:
    from safetensors.torch import load_file

    return load_file(layout.adapter_dir / "adapter_model.safetensors")


def test_the_chosen_trial_is_reused_and_equals_a_fresh_training_of_the_same_choice(searched):
    layout = searched
    choice = read_json(layout.search_choice)
    kept = read_json(layout.search_trained / RECORD_FILE)
    assert kept["trial"] == choice["trial"] and (layout.search_trained / "adapter_model.safetensors").is_file()
    # Only the winner's adapter is left in the study's working area.
    assert [p.name for p in layout.search_trials_dir.glob("*/*")] == [str(choice["trial"])]

    reused = run_stages(layout, "train")["train"]
    assert reused["reuse"].startswith(f"yes: trial {choice['trial']}'s adapter")
    assert reused["reused_from_trial"] == choice["trial"] and reused["steps"] == 4
    assert not layout.work_dir("train").exists()
    # The curve as the register stage reads it for MLflow: integer steps, as a fresh training writes them.
    steps = [line.split(",")[0] for line in layout.train_curve.read_text().splitlines()[1:]]
    assert steps and all(step.isdigit() for step in steps), steps
    reused_curve = read_curve(layout.train_curve, "train_loss")
    files = sorted(p.name for p in layout.adapter_dir.iterdir())
    config, tensors = read_json(layout.adapter_dir / "adapter_config.json"), adapter_tensors(layout)
    assert config["lora_dropout"] == 0.1 and config["r"] == choice["lora"]["r"]

    fresh = run_stages(layout, "train", overrides=["train.reuse_trial=false"])["train"]
    assert fresh["reuse"] == "no: train.reuse_trial is false" and "reused_from_trial" not in fresh
    assert fresh["weights_fingerprint"] == reused["weights_fingerprint"]
    again = adapter_tensors(layout)
    assert tensors.keys() == again.keys() and all(tensors[k].equal(again[k]) for k in tensors)
    # The same format downstream: the same files, the same config, the same record but for what says reuse.
    assert sorted(p.name for p in layout.adapter_dir.iterdir()) == files
    assert read_json(layout.adapter_dir / "adapter_config.json") == config
    fresh_curve = read_curve(layout.train_curve, "train_loss")
    assert [r["step"] for r in fresh_curve] == [r["step"] for r in reused_curve]
    assert [r["train_loss"] for r in fresh_curve] == pytest.approx([r["train_loss"] for r in reused_curve], rel=1e-6)
    assert fresh["train_loss"] == pytest.approx(reused["train_loss"], rel=1e-6)
    assert fresh["val_loss"] == pytest.approx(reused["val_loss"], rel=1e-5)  # on the whole val split, both
    assert fresh["merge_max_abs_logit_diff"] == pytest.approx(reused["merge_max_abs_logit_diff"], abs=1e-6)
    assert set(reused) - set(fresh) == {"reused_from_trial"} and set(fresh) - set(reused) == {"best_val_loss"}


def test_an_override_that_changes_the_weights_trains_afresh_and_says_why(searched):
    layout = searched
    record = run_stages(layout, "train", overrides=["train.max_steps=3"])["train"]
    trial = read_json(layout.search_choice)["trial"]
    assert record["reuse"] == f"no: train.max_steps differs from trial {trial}'s"
    assert record["steps"] == 3 and "reused_from_trial" not in record
    # Early stopping that can end the run early counts too (its val rows with it).
    record = run_stages(layout, "train", overrides=["train.eval_steps=1", "train.early_stopping_patience=1"])["train"]
    assert record["reuse"] == f"no: early_stopping differs from trial {trial}'s" and record["steps"] <= 4


def test_search_off_trains_and_says_so(searched, tmp_path):
    import shutil

    root = tmp_path / "project"
    shutil.copytree(searched.root, root, ignore=shutil.ignore_patterns("mlflow.db", "mlartifacts", ".loraops"))
    layout = Layout(root)
    results = run_stages(layout, "search", "train", overrides=["search.enabled=false"])
    assert not layout.search_trained.exists() and results["train"]["reuse"] == "no: search off"


def test_a_qlora_trial_on_the_workers_resident_4bit_base_equals_a_fresh_qlora_training(tmp_path, tiny_base):
    layout = searched_project(tmp_path / "project", tiny_base, search={"n_trials": 1}, train={"method": "qlora"})
    reused = run_stages(layout, "train")["train"]
    assert reused["reuse"].startswith("yes:") and reused["method"] == "qlora"
    tensors = adapter_tensors(layout)
    fresh = run_stages(layout, "train", overrides=["train.reuse_trial=false"])["train"]
    again = adapter_tensors(layout)
    assert all(tensors[k].equal(again[k]) for k in tensors)
    assert fresh["val_loss"] == pytest.approx(reused["val_loss"], rel=1e-5)  # both on the 4-bit training base
