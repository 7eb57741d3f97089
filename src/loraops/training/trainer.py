"""The one trainer: supervised fine-tuning on prompt -> completion pairs with the HF Trainer.

``lora=None`` means full fine-tuning through the same code, so adapters and the full fine-tune differ
only in what is trainable. The loss covers the answer tokens only (the prompt is masked with -100), each
example weighing the same (:mod:`loraops.training.loss`).
Checkpoints (see :mod:`loraops.training.checkpoints`) make a re-run after a crash resume where it stopped.
Under ``accelerate launch`` / ``torchrun`` (several processes, DDP) ``train.batch_size`` stays the global batch:
each process takes its share, and only rank 0 writes (checkpoint folders, manifests; the stages' outputs).
The ``train`` stage, the ``baseline`` stage and every search trial call :func:`train`; a search worker loads the
base once and lends it to its trials (:class:`loraops.training.ResidentBase`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from loraops.config import LoraParams, TrainParams
from loraops.core import ConfigError
from loraops.core.allocator import active_allocator
from loraops.core.distributed import from_main, is_main, sharded_engine, world_size
from loraops.modeling import compute_dtype, count_parameters, device, load_base, load_tokenizer
from loraops.core.hashing import sha256_file
from loraops.training.checkpoints import (checkpoint_key, manifest_callback, prepare_run_dir, run_dir_for, step_of,
                                         weights_inputs)
from loraops.training.energy import EnergyMeter
from loraops.training.loss import IGNORE, answer_loss_trainer
from loraops.training.memory import current_memory_mb, peak_memory_mb, reset_peak_memory
from loraops.training.records import TrainRecord
from loraops.training.resident import ResidentBase, attach_adapter, training_base


@dataclass
class Curves:
    """The loss series of a run: ``{step, train_loss}`` rows and ``{step, val_loss}`` rows."""

    train: list[dict[str, float]] = field(default_factory=list)
    val: list[dict[str, float]] = field(default_factory=list)


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


def build_model(base_dir: Path, method: str, lora: LoraParams | None, seed: int | None = None) -> Any:
    """QLoRA (4-bit base + LoRA), LoRA (full-precision base + LoRA) or, with ``lora=None``, full fine-tuning."""
    if lora is None:
        return load_base(base_dir)
    return attach_adapter(training_base(base_dir, method), lora, seed)


def per_device_batch(batch_size: int, processes: int) -> int:
    """Each process's share of the global ``train.batch_size``, so N processes take the same optimiser steps
    (same examples per step, same number of steps) as one."""
    if batch_size % processes:
        raise ConfigError(f"train.batch_size={batch_size} does not divide among {processes} processes; "
                          f"use a multiple of {processes}")
    return batch_size // processes


def training_arguments(params: TrainParams, seed: int, output_dir: Path, evaluate: bool, save: bool,
                       learning_rate: float | None = None) -> Any:
    """The pipeline's Trainer configuration (the benchmark times exactly this)."""
    import torch
    from transformers import TrainingArguments

    engine = sharded_engine()
    if engine is not None:
        raise ConfigError(f"{engine} is not supported: the adapter is saved by rank 0, which under {engine} holds "
                          f"a shard only; launch plain DDP (accelerate launch --multi_gpu, or torchrun)")
    batch = per_device_batch(params.batch_size, world_size())
    steps = {"max_steps": params.max_steps} if params.max_steps else {"num_train_epochs": params.epochs}
    eval_every = evaluate and params.eval_steps is not None
    return TrainingArguments(
        output_dir=str(output_dir), **steps, per_device_train_batch_size=batch,
        per_device_eval_batch_size=batch, gradient_accumulation_steps=params.gradient_accumulation_steps,
        learning_rate=learning_rate or params.learning_rate, warmup_steps=params.warmup_steps,
        lr_scheduler_type=params.lr_scheduler, logging_steps=params.logging_steps,
        eval_strategy="steps" if eval_every else "no", eval_steps=params.eval_steps if eval_every else None,
        save_strategy="steps" if save else "no", save_steps=params.save_steps if save else None,
        save_total_limit=params.save_total_limit, restore_callback_states_from_checkpoint=save,
        metric_for_best_model="eval_loss" if eval_every else None, greater_is_better=False,
        load_best_model_at_end=False, report_to=[], seed=seed, data_seed=seed, use_cpu=device() != "cuda",
        bf16=compute_dtype() == torch.bfloat16, activation_checkpointing=params.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False}, remove_unused_columns=False,
        # The NaN filter checks the loss every step (a device sync on GPU) and hides divergence; off.
        logging_nan_inf_filter=False, dataloader_num_workers=0, disable_tqdm=not params.progress_bar,
        # Under DDP: every trainable parameter (LoRA, or all of them) takes part in every forward, so the
        # search for unused ones the Trainer turns on for PEFT models is an extra graph walk per step.
        ddp_find_unused_parameters=False,
        # Validation needs the loss only: gathering every position's logits cost vocabulary x tokens of memory.
        prediction_loss_only=True)


def training_inputs(base_dir: Path, splits: dict[str, list[dict]], params: TrainParams, seed: int, max_length: int,
                    lora: LoraParams | None, learning_rate: float | None = None,
                    hashes: Callable[[Path], str] = sha256_file) -> dict[str, Any]:
    """What decides the weights :func:`train` called with the same arguments ends with, on this machine
    (:func:`loraops.training.checkpoints.weights_inputs`); a search trial and the train stage both ask here."""
    return weights_inputs(base_dir, splits, params, seed, max_length, lora, learning_rate, device(), world_size(),
                          hashes)


def validation_loss(base_dir: Path, adapter_dir: Path, rows: list[dict], params: TrainParams, seed: int,
                    max_length: int, work_dir: Path) -> float:
    """The validation loss on ``rows`` that :func:`train`'s closing evaluation reports for the adapter saved in
    ``adapter_dir``: the adapter on the training base (4-bit for QLoRA), through the same Trainer evaluation."""
    from peft import PeftModel

    tokenizer = load_tokenizer(base_dir)
    model = PeftModel.from_pretrained(training_base(base_dir, params.method), adapter_dir, is_trainable=False)
    args = training_arguments(params, seed, work_dir, evaluate=False, save=False)
    encoded = [encode_example(tokenizer, r["prompt"], r["completion"], max_length) for r in rows]
    trainer = answer_loss_trainer()(model=model, args=args, eval_dataset=encoded,
                                    data_collator=CompletionCollator(tokenizer.pad_token_id))
    return float(trainer.evaluate()["eval_loss"])


def train(base_dir: Path, splits: dict[str, list[dict]], params: TrainParams, seed: int, max_length: int,
          work_dir: Path, lora: LoraParams | None, *, callbacks: list[Any] | None = None,
          checkpoints: bool = True, resume: bool = True,
          learning_rate: float | None = None,
          resident: ResidentBase | None = None) -> tuple[Any, TrainRecord, Curves]:
    """Train and return (model, its record, its loss curves).

    With ``checkpoints`` (and ``params.save_steps``) checkpoints go to ``work_dir/run-<fingerprint>/`` and,
    with ``resume``, a re-run continues from the last complete one. ``callbacks`` are extra
    ``transformers.TrainerCallback`` objects (e.g. pruning on ``on_evaluate``'s ``eval_loss``).
    ``learning_rate`` overrides ``params.learning_rate`` (the baseline's own rate).
    ``resident``: a :class:`loraops.training.ResidentBase` (a search worker's) whose base, loaded once, gets
    the fresh adapter instead of a base loaded for this run; the caller releases it after the run.
    """
    import torch
    from transformers import EarlyStoppingCallback, set_seed

    if resident is not None:
        if lora is None:
            raise ValueError("full fine-tuning (lora=None) changes the base weights: it loads its own copy, "
                             "not a resident base")
        if resident.method != params.method or resident.base_dir != Path(base_dir):
            raise ValueError(f"the resident base is {resident.method} of {resident.base_dir}, the run wants "
                             f"{params.method} of {base_dir}")
    save = checkpoints and params.save_steps is not None
    output_dir = Path(work_dir)
    if save:  # every process hashes the same inputs to the same folder; only rank 0 changes it (below)
        output_dir = run_dir_for(output_dir, checkpoint_key(base_dir, splits, params, seed, max_length, lora,
                                                             learning_rate, device(), world_size()))
    # Before the model loads: a batch that does not divide among the processes fails at once. Under a
    # launcher this also joins the process group that the barrier and broadcast below use.
    args = training_arguments(params, seed, output_dir, evaluate=True, save=save, learning_rate=learning_rate)
    resume_from = None
    if save and is_main():
        resume_from = prepare_run_dir(output_dir, resume)
    resume_from = from_main(resume_from)  # the others wait here until rank 0 has cleaned and chosen
    reset_peak_memory()
    memory_before = current_memory_mb()
    set_seed(seed)
    tokenizer = load_tokenizer(base_dir) if resident is None else resident.tokenizer
    encode = lambda rows: [encode_example(tokenizer, r["prompt"], r["completion"], max_length) for r in rows]  # noqa: E731
    train_set, val_set = encode(splits["train"]), encode(splits["val"])
    model = build_model(base_dir, params.method, lora, seed) if resident is None else resident.attach(lora, seed)
    trainable, total = count_parameters(model)
    extra = [manifest_callback()] if save else []
    if params.early_stopping_patience is not None:
        extra.append(EarlyStoppingCallback(params.early_stopping_patience, params.early_stopping_min_delta))
    trainer = answer_loss_trainer()(model=model, args=args, train_dataset=train_set, eval_dataset=val_set,
                      data_collator=CompletionCollator(tokenizer.pad_token_id), callbacks=extra + list(callbacks or []))
    start_step = step_of(resume_from) if resume_from else 0
    with EnergyMeter(cuda=device() == "cuda") as meter:
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    cost = meter.reading
    wall = cost.wall_seconds
    val_loss = trainer.evaluate()["eval_loss"]
    state = trainer.state
    steps_now = state.global_step - start_step
    mean_len = sum(len(x["input_ids"]) for x in train_set) / len(train_set)
    seen = steps_now * params.batch_size * params.gradient_accumulation_steps
    curves = Curves(train=[{"step": h["step"], "train_loss": h["loss"]} for h in state.log_history if "loss" in h],
                    val=[{"step": s, "val_loss": v} for s, v in sorted(
                        {h["step"]: h["eval_loss"] for h in state.log_history if "eval_loss" in h}.items())])
    record = TrainRecord(
        method="full" if lora is None else params.method, train_loss=result.training_loss, val_loss=val_loss,
        best_val_loss=state.best_metric, steps=state.global_step, planned_steps=state.max_steps,
        stopped_early=state.global_step < state.max_steps, resumed_from_step=start_step,
        trainable_params=trainable, total_params=total, trainable_share=trainable / total,
        learning_rate=learning_rate or params.learning_rate, train_seconds=wall,
        tokens_per_second=seen * mean_len / wall if steps_now else None, peak_memory_mb=peak_memory_mb(),
        memory_before_train_mb=memory_before, allocator=active_allocator(), device=device(), processes=world_size(),
        torch_threads=torch.get_num_threads(),
        cpu_seconds=cost.cpu_seconds, gpu_seconds=cost.gpu_seconds, energy_joules=cost.energy_joules,
        cpu_energy_joules=cost.cpu_energy_joules, gpu_energy_joules=cost.gpu_energy_joules,
        energy_method=cost.energy_method)
    return model, record, curves
