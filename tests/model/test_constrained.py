"""Decoding constrained to the label set, and the base model asked at its best, on the tiny model."""

import pytest

from loraops.config import EvalParams, PrepareParams
from loraops.data import choose_shots, normalise_answer, render_base_row
from loraops.data.demo import generate_demo_dataset
from loraops.evaluation import generate_answers, run_model
from loraops.evaluation.constrained import LabelConstraint
from loraops.modeling import load_for_inference, load_tokenizer
from loraops.prepare import prepare
from tests.helpers.projects import REPO


@pytest.fixture(scope="module")
def prepared(tiny_base):
    rows = generate_demo_dataset(seed=2, train_per_intent=4, test_per_intent=2)
    splits, labels, _ = prepare(rows, load_tokenizer(tiny_base), PrepareParams(max_length=384), seed=2)
    return splits, labels


@pytest.fixture(scope="module")
def model(tiny_base):
    return load_for_inference(tiny_base, None)


def test_constrained_answers_are_always_labels_where_the_untrained_model_babbles(model, prepared):
    splits, labels = prepared
    prompts = [r["prompt"] for r in splits["test"][:12]]
    free = generate_answers(*model, prompts, 4, 8)
    assert any(answer not in labels for answer in free)  # the untrained model says anything...
    constrained = generate_answers(*model, prompts, 4, 8, labels=labels)
    assert all(answer in labels for answer in constrained)  # ...unless it may only say a label


def test_without_labels_answers_are_plain_greedy_decoding(model, prepared):
    import torch

    net, tokenizer = model
    prompts = [r["prompt"] for r in prepared[0]["test"][:4]]
    expected = []
    for prompt in prompts:  # one prompt at a time, no padding, no constraint: plain generate
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = net.generate(**ids, max_new_tokens=6, do_sample=False, num_beams=1,
                               pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        expected.append(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
    assert generate_answers(net, tokenizer, prompts, 4, 6) == generate_answers(net, tokenizer, prompts, 4, 6,
                                                                               labels=None) == expected


def test_left_padded_batches_of_different_prompt_lengths_still_yield_labels(model, prepared):
    splits, labels = prepared
    rows = splits["test"][:6]
    # Prompts of very different lengths in one batch: the short ones are left-padded a lot.
    prompts = [r["prompt"] if i % 2 else r["prompt"].replace(r["text"], r["text"] * 4) for i, r in enumerate(rows)]
    assert len({len(p) for p in prompts}) > 3
    batched = generate_answers(*model, prompts, 6, 8, labels=labels)
    one_by_one = generate_answers(*model, prompts, 1, 8, labels=labels)
    assert all(answer in labels for answer in batched) and batched == one_by_one


def test_label_tree_allows_a_label_that_is_a_prefix_of_another_and_ends_each_with_eos(tiny_base):
    tokenizer = load_tokenizer(tiny_base)
    constraint = LabelConstraint(tokenizer, ["order", "order_status", "refund"])
    eos = tokenizer.eos_token_id
    order = constraint.sequences["order"]
    assert order[-1] == eos and constraint.longest == max(len(s) for s in constraint.sequences.values())
    after_order = constraint.allowed(order[:-1])
    assert eos in after_order and len(after_order) >= 2  # end here, or go on to order_status
    assert set(constraint.allowed([])) == {s[0] for s in constraint.sequences.values()}
    assert constraint.allowed(order) == [eos]  # finished


def test_base_prompt_lists_the_labels_and_shots_and_never_a_test_request(tiny_base, prepared):
    splits, labels = prepared
    tokenizer = load_tokenizer(tiny_base)
    test = splits["test"][0]
    train = [dict(test), *splits["train"]]  # a train row that repeats a test request must not become a shot
    shots = choose_shots(train, labels, 8, {r["text"] for r in splits["test"]})
    assert len(shots) == 8 and len({s["label"] for s in shots}) == 8
    assert not {s["text"] for s in shots} & {r["text"] for r in splits["test"]}
    prompt = render_base_row(test, labels, tokenizer, PrepareParams(), shots)["prompt"]
    assert all(label in prompt for label in labels)
    for shot in shots:  # each shot as a user turn followed by its label as the assistant's answer
        assert shot["text"] in prompt and f"<|im_start|>assistant\n{shot['label']}<|im_end|>" in prompt
    assert prompt.rindex(test["text"]) > max(prompt.index(s["text"]) for s in shots)
    assert prompt.endswith("<|im_start|>assistant\n")
    assert choose_shots(splits["train"], labels, 0) == []
    assert len(choose_shots(splits["train"], labels[:3], 7)) == 7  # fewer labels than shots: a second round


def test_run_model_scores_the_base_at_its_best_constrained_with_the_free_accuracy_beside(tiny_base, prepared):
    splits, labels = prepared
    rows = splits["test"][:10]
    params = EvalParams(retention=False, base_shots=3)
    result = run_model(tiny_base, rows, 8, REPO, params=params, labels=labels, shots_from=splits["train"])
    assert result["prompting"] == {"labels_listed": True, "shots": 3, "constrained": True}
    assert all(item["prediction"] in {normalise_answer(x) for x in labels} for item in result["items"])
    free = result["metrics"]["accuracy_unconstrained"]
    assert 0 <= free <= 1 and free == sum(i["unconstrained"] == i["label"] for i in result["items"]) / len(rows)
    plain = run_model(tiny_base, rows, 8, REPO, params=params.model_copy(update={"constrained": False}),
                      labels=labels, shots_from=splits["train"])
    assert "accuracy_unconstrained" not in plain["metrics"]
    assert [i["prediction"] for i in plain["items"]] == [i["unconstrained"] for i in result["items"]]
