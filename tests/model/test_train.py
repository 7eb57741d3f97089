"""Training on the tiny model through the real transformers / PEFT / bitsandbytes code paths."""

import pytest

from loraops.config import LoraParams, PrepareParams, TrainParams
from loraops.data.demo import generate_demo_dataset
from loraops.modeling import load_tokenizer
from loraops.prepare import prepare
from loraops.training import IGNORE, CompletionCollator, encode_example, train
from loraops.training.energy import CPU_WATTS_PER_CORE, ESTIMATE_METHOD


@pytest.fixture(scope="module")
def splits(tiny_base):
    rows = generate_demo_dataset(seed=1, train_per_intent=6, test_per_intent=2)
    rendered, _, _ = prepare(rows, load_tokenizer(tiny_base), PrepareParams(max_length=384), seed=1)
    return rendered


def test_prompt_tokens_are_masked_and_answer_kept(tiny_base):
    tokenizer = load_tokenizer(tiny_base)
    example = encode_example(tokenizer, "a long prompt " * 10, "cancel_order<|im_end|>", max_length=12)
    answer = tokenizer("cancel_order<|im_end|>", add_special_tokens=False)["input_ids"]
    assert len(example["input_ids"]) == 12
    assert example["input_ids"][-len(answer):] == answer  # truncation cut the prompt, not the answer
    assert example["labels"][-len(answer):] == answer
    assert set(example["labels"][:-len(answer)]) == {IGNORE}
    with pytest.raises(ValueError, match="does not fit"):
        encode_example(tokenizer, "p", "x " * 40, max_length=4)


def test_collator_pads_right_and_masks_padding():
    batch = CompletionCollator(pad_token_id=0)([{"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7]},
                                               {"input_ids": [8], "labels": [8]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [8, IGNORE, IGNORE]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_qlora_quantises_base_trains_only_lora_and_lowers_loss(tiny_base, splits, tmp_path):
    import bitsandbytes as bnb

    params = TrainParams(max_steps=12, batch_size=4, learning_rate=1e-2, warmup_steps=0, logging_steps=1)
    model, record, curves = train(tiny_base, splits, params, 0, 384, tmp_path, LoraParams(r=4, alpha=8))
    curve = curves.train
    quantised = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert quantised, "QLoRA base layers must be 4-bit"
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    assert 0 < record.trainable_share < 0.2 and record.steps == 12
    assert len(curve) == 12
    first, last = curve[0]["train_loss"], sum(r["train_loss"] for r in curve[-3:]) / 3
    assert last < first - 0.2, (first, last)  # from ~ln(vocab) on a random model


def test_lora_none_is_full_fine_tuning_through_the_same_code(tiny_base, splits, tmp_path):
    params = TrainParams(max_steps=2, batch_size=4, warmup_steps=0, logging_steps=1)
    _, record, _ = train(tiny_base, splits, params, 0, 384, tmp_path, None)
    assert record.method == "full" and record.trainable_share == 1.0
    # What it cost is on record: CPU seconds of the loop and an energy figure that says how it was measured.
    assert record.cpu_seconds > 0 and record.energy_joules > 0
    assert record.energy_method in ("rapl", ESTIMATE_METHOD)
    if record.energy_method == ESTIMATE_METHOD:
        assert record.energy_joules == pytest.approx(record.cpu_seconds * CPU_WATTS_PER_CORE)
    assert record.gpu_seconds is None  # CPU run


def test_same_seed_gives_the_same_loss(tiny_base, splits, tmp_path):
    params = TrainParams(method="lora", max_steps=4, batch_size=4, warmup_steps=0, logging_steps=1, eval_steps=2)
    runs = [train(tiny_base, splits, params, 5, 384, tmp_path / str(i), LoraParams(r=2, alpha=4)) for i in range(2)]
    assert runs[0][2].train == runs[1][2].train  # train losses, step by step
    assert runs[0][2].val == runs[1][2].val and len(runs[0][2].val) == 2


def test_eval_every_n_steps_reaches_callbacks_and_early_stopping_stops(tiny_base, splits, tmp_path):
    from transformers import TrainerCallback

    class Seen(TrainerCallback):  # what a search trial's pruning callback receives
        losses: list = []

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            self.losses.append((state.global_step, metrics["eval_loss"]))

    # An improvement must beat 10 nats to count, so the second evaluation already exhausts patience 1.
    params = TrainParams(method="lora", max_steps=20, batch_size=4, warmup_steps=0, logging_steps=1, eval_steps=2,
                         early_stopping_patience=1, early_stopping_min_delta=10.0, save_steps=None)
    _, record, curves = train(tiny_base, splits, params, 0, 384, tmp_path, LoraParams(r=2, alpha=4),
                              callbacks=[Seen()])
    assert record.steps == 4 and record.planned_steps == 20 and record.stopped_early
    assert [s for s, _ in Seen.losses] == [2, 4, 4]  # every 2 steps, then the final evaluation
    assert [r["step"] for r in curves.val] == [2, 4]
    assert record.val_loss == pytest.approx(Seen.losses[-1][1])
    assert not list(tmp_path.glob("run-*"))  # save_steps null: no checkpoints written


def test_epochs_budget_and_scheduler(tiny_base, splits, tmp_path):
    params = TrainParams(method="lora", max_steps=None, epochs=1, batch_size=16, lr_scheduler="linear",
                         warmup_steps=0, logging_steps=1, eval_steps=None, early_stopping_patience=None,
                         save_steps=None)
    _, record, _ = train(tiny_base, splits, params, 0, 384, tmp_path, LoraParams(r=2, alpha=4))
    assert record.steps == -(-len(splits["train"]) // 16)  # one pass over the data
    with pytest.raises(ValueError, match="exactly one of train.max_steps and train.epochs"):
        TrainParams(max_steps=10, epochs=1)


def test_qlora_gradients_are_the_same_after_a_validation_pass(tiny_base):
    # bitsandbytes may rewrite 4-bit layers at the first no-grad forward (CPUs with AVX512-BF16) into a layout
    # whose backward passes no gradient to the layer input: a validation step changed every later LoRA gradient.
    import torch

    from loraops.training import build_model

    torch.manual_seed(0)
    model = build_model(tiny_base, "qlora", LoraParams(r=4, alpha=8, dropout=0.0))
    for name, param in model.named_parameters():
        if "lora_B" in name:  # zero at init, which would hide the gradient through the layers above
            torch.nn.init.normal_(param, std=0.05)
    ids = torch.randint(0, 500, (2, 12), generator=torch.Generator().manual_seed(0))

    def gradients():
        model.train()
        model.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    before = gradients()
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)  # what a validation step does
    after = gradients()
    assert before.keys() == after.keys() and all(torch.equal(before[n], after[n]) for n in before)
