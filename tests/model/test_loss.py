"""The training loss: answer-only logits equal the full computation; every example weighs the same."""

import pytest

from loraops.config import LoraParams
from loraops.modeling import load_base
from loraops.training import IGNORE, CompletionCollator, answer_loss_trainer, example_mean_loss, per_example_losses


def _batch():
    # A long answer (6 tokens) and a short one (1 token), prompts of different lengths, right padding.
    return CompletionCollator(pad_token_id=0)([
        {"input_ids": [11, 12, 13, 14, 15, 16, 17, 18, 19], "labels": [IGNORE] * 3 + [14, 15, 16, 17, 18, 19]},
        {"input_ids": [21, 22, 23, 24, 25], "labels": [IGNORE] * 4 + [25]},
    ])


def _reference(model, batch):
    """Per-example means computed the plain way: every position's logits, then the answer positions."""
    import torch.nn.functional as F

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    targets = batch["labels"][:, 1:]
    means = []
    for row in range(targets.shape[0]):
        keep = targets[row] != IGNORE
        means.append(F.cross_entropy(logits[row][keep].float(), targets[row][keep]))
    return means


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("wrap", ["full", "lora"])
def test_answer_only_loss_and_gradients_equal_full_computation(tiny_base, wrap):
    import torch
    from peft import get_peft_model

    from loraops.modeling import lora_config

    model = load_base(tiny_base)
    if wrap == "lora":
        model = get_peft_model(model, lora_config(LoraParams(r=4, alpha=8, dropout=0.0, target_modules="all-linear")))
        for name, p in model.named_parameters():  # LoRA B starts at zero: give it values so its grads mean something
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.02)
    model.train()
    batch = _batch()
    reference = _reference(model, batch)
    expected = (reference[0] + reference[1]) / 2
    expected.backward()
    want = _grads(model)
    model.zero_grad()

    losses, counts = per_example_losses(model, batch)
    assert counts.tolist() == [6.0, 1.0]
    assert torch.allclose(losses, torch.stack(reference).detach(), atol=1e-5)
    example_mean_loss(model, batch).backward()
    got = _grads(model)
    assert want.keys() == got.keys() and want
    for name in want:
        assert torch.allclose(want[name], got[name], atol=1e-6, rtol=1e-4), name
    # The full-forward path (models whose logits are not the head of the hidden state) gives the same.
    assert torch.allclose(per_example_losses(model, batch, answer_only=False)[0], losses, atol=1e-5)


def test_each_example_weighs_the_same_not_each_token(tiny_base, tmp_path):
    from transformers import TrainingArguments

    model = load_base(tiny_base)
    batch = _batch()
    with __import__("torch").no_grad():
        long, short = _reference(model, batch)
        trainer = answer_loss_trainer()(model=model, args=TrainingArguments(output_dir=str(tmp_path), report_to=[],
                                                                              use_cpu=True))
        loss = trainer.compute_loss(model, batch)
        token_mean = (6 * long + short) / 7  # the HF default, dominated by the long answer
    assert abs(float(loss) - float((long + short) / 2)) < 1e-5
    assert abs(float(loss) - float(token_mean)) > 1e-3


def test_a_batch_without_answer_tokens_is_an_error(tiny_base):
    model = load_base(tiny_base)
    batch = CompletionCollator(pad_token_id=0)([{"input_ids": [1, 2, 3], "labels": [IGNORE] * 3}])
    with pytest.raises(ValueError, match="no answer tokens"):
        example_mean_loss(model, batch)
