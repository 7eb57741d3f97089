"""The ``train`` stage: supervised fine-tuning on prompt -> completion pairs with the HF Trainer.

``lora=None`` means full fine-tuning through the same code, so adapters and the full fine-tune differ
only in what is trainable. The loss covers the answer tokens only: the prompt is masked with -100.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import Any

from loraops.config import LoraParams, TrainParams
from loraops.modeling import compute_dtype, count_parameters, device, load_base, load_tokenizer, lora_config

IGNORE = -100


def encode_example(tokenizer: Any, prompt: str, completion: str, max_length: int) -> dict[str, list[int]]:
    """Token ids with the prompt masked; a prompt that is too long loses its start, never the answer."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if len(answer_ids) >= max_length:
        raise ValueError(f"answer of {len(answer_ids)} tokens does not fit max_length={max_length}")
    prompt_ids = prompt_ids[-(max_length - len(answer_ids)):]
    return {"input_ids": prompt_ids + answer_ids, "labels": [IGNORE] * len(prompt_ids) + answer_ids}


class CompletionCollator:
    """Right-pads a batch; padded positions are masked out of attention and loss."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, batch: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(item["input_ids"]) for item in batch)
        ids, labels, mask = [], [], []
        for item in batch:
            pad = width - len(item["input_ids"])
            ids.append(item["input_ids"] + [self.pad_token_id] * pad)
            labels.append(item["labels"] + [IGNORE] * pad)
            mask.append([1] * len(item["input_ids"]) + [0] * pad)
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "attention_mask": torch.tensor(mask)}


def peak_memory_mb() -> float:
    """Peak RSS of this process on CPU, or peak allocated CUDA memory on a GPU."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def build_model(base_dir: Path, method: str, lora: LoraParams | None) -> Any:
    """QLoRA (4-bit base + LoRA), LoRA (full-precision base + LoRA) or, with ``lora=None``, full fine-tuning."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    quantized = lora is not None and method == "qlora"
    model = load_base(base_dir, quantize_4bit=quantized)
    if lora is None:
        return model
    if quantized:
        # Casts norms to fp32 and enables input grads so LoRA gradients flow through frozen 4-bit layers;
        # gradient checkpointing costs ~30 % speed and is not needed at these sizes.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return get_peft_model(model, lora_config(lora))


def train(base_dir: Path, splits: dict[str, list[dict]], params: TrainParams, seed: int, max_length: int,
          work_dir: Path, lora: LoraParams | None, callbacks: list[Any] | None = None,
          eval_steps: int | None = None) -> tuple[Any, dict[str, Any], list[dict[str, float]]]:
    """Train and return (model, metrics, loss curve rows). Nothing is checkpointed (``save_strategy='no'``).

    ``callbacks`` go to the HF Trainer; with ``eval_steps`` it evaluates on the val split every N steps,
    so a callback's ``on_evaluate`` sees ``metrics['eval_loss']`` (the search prunes on it).
    """
    import torch
    from transformers import Trainer, TrainingArguments, set_seed

    set_seed(seed)
    tokenizer = load_tokenizer(base_dir)
    encode = lambda rows: [encode_example(tokenizer, r["prompt"], r["completion"], max_length) for r in rows]  # noqa: E731
    train_set, val_set = encode(splits["train"]), encode(splits["val"])
    model = build_model(base_dir, params.method, lora)
    trainable, total = count_parameters(model)
    on_gpu = device() == "cuda"
    args = TrainingArguments(
        output_dir=str(work_dir), max_steps=params.max_steps, per_device_train_batch_size=params.batch_size,
        per_device_eval_batch_size=params.batch_size, gradient_accumulation_steps=params.gradient_accumulation_steps,
        learning_rate=params.learning_rate, warmup_steps=params.warmup_steps, lr_scheduler_type="cosine",
        logging_steps=params.logging_steps, save_strategy="no",
        eval_strategy="steps" if eval_steps else "no", eval_steps=eval_steps, report_to=[],
        seed=seed, data_seed=seed, use_cpu=not on_gpu, bf16=compute_dtype() == torch.bfloat16,
        remove_unused_columns=False, dataloader_num_workers=0, disable_tqdm=False)
    trainer = Trainer(model=model, args=args, train_dataset=train_set, eval_dataset=val_set,
                      data_collator=CompletionCollator(tokenizer.pad_token_id), callbacks=callbacks)
    started = time.perf_counter()
    result = trainer.train()
    wall = time.perf_counter() - started
    val_loss = trainer.evaluate()["eval_loss"]
    seen = params.max_steps * params.batch_size * params.gradient_accumulation_steps
    mean_len = sum(len(x["input_ids"]) for x in train_set) / len(train_set)
    curve = [{"step": h["step"], "train_loss": h["loss"]} for h in trainer.state.log_history if "loss" in h]
    metrics = {
        "train_loss": result.training_loss, "val_loss": val_loss, "steps": trainer.state.global_step,
        "trainable_params": trainable, "total_params": total, "trainable_share": trainable / total,
        "train_seconds": wall, "tokens_per_second": seen * mean_len / wall, "peak_memory_mb": peak_memory_mb(),
        "method": "full" if lora is None else params.method, "device": device(),
        "torch_threads": torch.get_num_threads(),
    }
    return model, metrics, curve

