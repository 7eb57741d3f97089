"""The training loss: next-token cross-entropy on the answer tokens, averaged per example.

Two choices, both measured on the demo (README, "Rehearsal"):

- **Each example weighs the same.** The HF default averages over all answer tokens of a batch, so a
  48-token rehearsal answer counts as much as ten 5-token label answers: with half the rows rehearsal,
  about nine tenths of the gradient was rehearsal and the task barely moved. Averaging each example's
  tokens first, then the examples, makes ``train.rehearsal.share`` the share of the gradient it says.
- **Logits only where the loss is.** The output projection (49k-token vocabulary for SmolLM2) is applied to
  the hidden states of the answer positions only, not to every prompt position whose logits would be
  thrown away. The result equals the full computation within float tolerance (tests/model/test_loss.py).
  Models whose logits are not ``lm_head(hidden)`` (final-logit soft-capping or scaling) take the full
  forward pass and the same per-example average, as does training on several processes (DDP).
"""

from __future__ import annotations

from typing import Any

from loraops.core.distributed import world_size

IGNORE = -100  # label of a position outside the loss (prompt, padding)


def causal_parts(model: Any) -> tuple[Any, Any] | None:
    """(decoder, output projection) of a causal LM, PEFT-wrapped or not, or ``None`` when its logits are
    not the projection of the last hidden state (then only the full forward pass is exact)."""
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(causal, "config", None)
    if any(getattr(config, key, None) for key in ("final_logit_softcapping", "logit_scale", "logits_scaling")):
        return None
    get_decoder, get_head = getattr(causal, "get_decoder", None), getattr(causal, "get_output_embeddings", None)
    if get_decoder is None or get_head is None:
        return None
    decoder, head = get_decoder(), get_head()
    if decoder is None or head is None or decoder is causal:
        return None
    return decoder, head


def logits_at(model: Any, inputs: dict[str, Any], rows: Any, cols: Any, only_there: bool = True) -> Any:
    """The logits at positions ``(rows[i], cols[i])`` of a forward pass over ``inputs``: the output projection
    applied at those positions only (``only_there`` and :func:`causal_parts` finds the projection), else taken
    from the logits of every position. Training, validation and the evaluator's answer scoring all use it."""
    parts = causal_parts(model) if only_there else None
    if parts is None:
        return model(**inputs).logits[rows, cols]
    decoder, head = parts
    return head(decoder(**inputs).last_hidden_state[rows, cols])


def per_example_losses(model: Any, batch: dict[str, Any], answer_only: bool = True) -> tuple[Any, Any]:
    """(mean cross-entropy of each example's answer tokens, answer tokens per example) for a collated batch
    (``input_ids``, ``attention_mask``, ``labels`` with :data:`IGNORE` outside the answers)."""
    import torch
    import torch.nn.functional as F

    labels = batch["labels"]
    targets = labels[:, 1:]
    rows, cols = (targets != IGNORE).nonzero(as_tuple=True)
    # Position t predicts token t + 1.
    logits = logits_at(model, {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}, rows,
                       cols, answer_only)
    token_losses = F.cross_entropy(logits.float(), targets[rows, cols], reduction="none")
    counts = torch.zeros(labels.shape[0], dtype=token_losses.dtype, device=token_losses.device)
    counts.index_add_(0, rows, torch.ones_like(token_losses))
    sums = torch.zeros_like(counts).index_add_(0, rows, token_losses)
    return sums / counts.clamp(min=1), counts


def example_mean_loss(model: Any, batch: dict[str, Any], answer_only: bool = True) -> Any:
    """The training loss: the mean over the batch's examples (those with an answer) of
    :func:`per_example_losses`."""
    losses, counts = per_example_losses(model, batch, answer_only)
    has_answer = counts > 0
    if not bool(has_answer.any()):
        raise ValueError("a training batch has no answer tokens: every label is masked")
    return losses[has_answer].mean()


def answer_loss_trainer(answer_only: bool = True) -> type:
    """A ``transformers.Trainer`` whose loss (training and validation) is :func:`example_mean_loss`."""
    from transformers import Trainer

    class AnswerLossTrainer(Trainer):
        # Our loss is a mean per micro-batch: the Trainer divides it by the accumulation steps itself.
        loss_is_scaled_for_ga = False

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            # Under several processes the forward must go through the DDP wrapper, which syncs the gradients;
            # the answer-only path calls the decoder itself. The full forward gives the same loss.
            loss = example_mean_loss(model, inputs, answer_only and world_size() == 1)
            return (loss, {}) if return_outputs else loss  # validation asks for outputs: it needs none

        def evaluate(self, *args, **kwargs):
            # Each validation pass draws from the global RNG (its data loader takes a seed from it): without
            # the fork, how often and on which rows a run validates would move the dropout masks of every later
            # step, and so the weights. With it a search trial (its own val rows and cadence) trains exactly
            # the weights the train stage would (loraops.training.checkpoints.weights_inputs).
            import torch

            devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
            with torch.random.fork_rng(devices=devices):
                return super().evaluate(*args, **kwargs)

    return AnswerLossTrainer
