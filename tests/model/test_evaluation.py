"""One evaluator for base and adapter; metrics load from evals/ by path with no network."""

from pathlib import Path

import pytest

from loraops.config import LoraParams, PrepareParams
from loraops.data.demo import generate_demo_dataset
from loraops.evaluation import evaluate_model, load_metric, normalise_answer
from loraops.modeling import load_base, load_tokenizer, lora_config
from loraops.prepare import prepare

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("raw, expected", [
    ("cancel_order", "cancel_order"), ("  Cancel Order.\nmore text", "cancel_order"),
    ('"track-order"', "track_order"), ("", ""), ("reset_password!", "reset_password"),
])
def test_normalise_answer(raw, expected):
    assert normalise_answer(raw) == expected


def test_accuracy_module_loads_offline_by_path_and_scores_known_answers():
    metric = load_metric("accuracy", REPO)
    assert metric.compute(predictions=["a", "b", "c", "d"], references=["a", "b", "x", "y"])["accuracy"] == 0.5
    assert metric.compute(predictions=["a"], references=["a"])["accuracy"] == 1.0
    with pytest.raises(ValueError):
        metric.compute(predictions=[], references=[])


def test_unknown_metric_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="metric 'bleu'"):
        load_metric("bleu", tmp_path)


@pytest.fixture(scope="module")
def eval_rows(tiny_base):
    rows = generate_demo_dataset(seed=2, train_per_intent=4, test_per_intent=2)
    rendered, _, _ = prepare(rows, load_tokenizer(tiny_base), PrepareParams(max_length=384), seed=2)
    return rendered["test"][:12]


def test_same_model_scores_identically_twice(tiny_base, eval_rows):
    first = evaluate_model(tiny_base, eval_rows, 8, REPO)
    second = evaluate_model(tiny_base, eval_rows, 8, REPO)
    assert {k: v for k, v in first[0].items() if "second" not in k} == \
        {k: v for k, v in second[0].items() if "second" not in k}
    assert [p["raw"] for p in first[1]] == [p["raw"] for p in second[1]]


def test_zero_adapter_gives_exactly_the_base_models_answers(tiny_base, eval_rows, tmp_path):
    from peft import get_peft_model

    # A freshly initialised LoRA has B = 0, so it must not change a single generated token.
    model = get_peft_model(load_base(tiny_base), lora_config(LoraParams(r=2, alpha=4)))
    model.save_pretrained(tmp_path / "zero")
    base = evaluate_model(tiny_base, eval_rows, 8, REPO)
    zero = evaluate_model(tiny_base, eval_rows, 8, REPO, adapter_dir=tmp_path / "zero")
    assert [p["raw"] for p in base[1]] == [p["raw"] for p in zero[1]]
    assert base[0]["accuracy"] == zero[0]["accuracy"]
    # Teacher-forced likelihoods too, to the last bit: the zero adapter adds exactly 0.0.
    assert [p["answer_nll"] for p in base[1]] == [p["answer_nll"] for p in zero[1]]
    assert base[0]["perplexity"] == zero[0]["perplexity"] and base[0]["macro_f1"] == zero[0]["macro_f1"]


def test_batch_size_does_not_change_answers(tiny_base, eval_rows):
    one = evaluate_model(tiny_base, eval_rows[:6], 1, REPO)[1]
    six = evaluate_model(tiny_base, eval_rows[:6], 6, REPO)[1]
    assert [p["raw"] for p in one] == [p["raw"] for p in six]
