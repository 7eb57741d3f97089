"""The ``train`` and ``baseline`` stages: the one trainer, then the outputs each stage leaves behind."""

from __future__ import annotations

import gc
import shutil

from loraops.config import LoraParams, Params
from loraops.core import Layout, atomic_dir, require, write_json
from loraops.core.allocator import release_free_memory
from loraops.core.hashing import HashMemo
from loraops.core.distributed import is_main
from loraops.data import PROMPT_FILE, load_labels, load_splits, prompt_spec, prompt_template
from loraops.modeling import base_info, load_tokenizer, safetensors_bytes
from loraops.training.curves import write_curve
from loraops.training.export import merge_adapter, save_full_model, write_disabled_marker
from loraops.training.records import BaselineRecord, DisabledBaseline, TrainChoice
from loraops.training.rehearsal import load_rehearsal_rows, mix_rehearsal, rehearsal_count
from loraops.training.checkpoints import weights_fingerprint
from loraops.training.reuse import RECORD_FILE, reuse_decision, save_adapter
from loraops.training.trainer import Curves, train, training_inputs, validation_loss


def training_splits(params: Params, layout: Layout, share: float) -> tuple[dict[str, list[dict]], dict]:
    """The prepared splits with rehearsal pairs (``data/rehearsal/answers.jsonl``) mixed into ``train`` at
    ``share`` (:func:`chosen_config`'s), and what that added (rows, share, answer tokens) for the stage's
    record. Validation (and test) stay the task's own, so val loss and early stopping judge the task only."""
    splits = load_splits(layout)
    added = {"rehearsal_share": share, "rehearsal_rows": rehearsal_count(len(splits["train"]), share),
             "rehearsal_tokens": 0}
    if added["rehearsal_rows"] == 0:
        return splits, added
    mixed = mix_rehearsal(splits["train"], load_rehearsal_rows(layout), share, params.project.seed)
    task_prompts = {row["prompt"] for row in splits["train"]}
    drawn = [row["completion"] for row in mixed if row["prompt"] not in task_prompts]
    tokenizer = load_tokenizer(layout.base_model_dir)
    added["rehearsal_tokens"] = sum(len(ids) for ids in tokenizer(drawn, add_special_tokens=False)["input_ids"])
    return {**splits, "train": mixed}, added


def chosen_config(params: Params, layout: Layout) -> tuple[LoraParams, float, float]:
    """What ``train`` trains with (lora, learning rate, rehearsal share): the search's pick, or (search off)
    train's own ``lora``, ``learning_rate`` and ``rehearsal.share`` as they are now, so an edit to them never
    meets a stale choice. The baseline mixes in the same share, so the comparison stays fair."""
    choice = TrainChoice.read(layout.search_choice)
    if choice.source == "search":
        share = choice.rehearsal_share if choice.rehearsal_share is not None else params.train.rehearsal.share
        return choice.lora, choice.learning_rate, share
    return params.train.lora, params.train.learning_rate, params.train.rehearsal.share


def train_stage(params: Params, layout: Layout) -> dict:
    """``models/adapter`` (safetensors, its prompt spec), ``models/merged``, ``metrics/train.json`` and the
    loss curves, trained with the search's choice (``models/search/chosen.json``, see :func:`chosen_config`).
    When the chosen trial's adapter (``models/search/trained``) had exactly the inputs this training would have
    (:func:`loraops.training.reuse.reuse_decision`), it is taken instead of training again."""
    require(layout.base_model_dir, layout.prepared_dir, layout.search_choice)
    lora, learning_rate, share = chosen_config(params, layout)
    task_splits = load_splits(layout)
    splits, rehearsal = training_splits(params, layout, share)
    train_params = params.train.model_copy(update={"lora": lora, "learning_rate": learning_rate,
                                                   "rehearsal": params.train.rehearsal.model_copy(update={"share": share})})
    memo = HashMemo(layout.hash_memo)
    inputs = training_inputs(layout.base_model_dir, splits, train_params, params.project.seed,
                             params.prepare.max_length, lora, hashes=memo)
    if is_main():  # one writer of the memo under several processes
        memo.save()
    kept, reuse = reuse_decision(params, TrainChoice.read(layout.search_choice), layout.search_trained, inputs)
    # Not wiped: a re-run after a crash resumes from the last complete checkpoint of the same inputs.
    work = layout.work_dir("train")
    model = None
    if kept is None:
        model, record, curves = train(layout.base_model_dir, splits, train_params, params.project.seed,
                                      params.prepare.max_length, work, lora)
        if not is_main():  # several processes trained one model (DDP): rank 0 writes it, the others are done
            return record.to_json()
    with atomic_dir(layout.adapter_dir) as staging:
        if kept is None:
            save_adapter(model, staging, base_info(layout)["id"])
            del model
        else:
            for path in layout.search_trained.iterdir():
                if path.name != RECORD_FILE:
                    shutil.copy2(path, staging / path.name)
            # The trial validated on its own rows; val_loss is the train stage's, on the whole val split.
            val_loss = validation_loss(layout.base_model_dir, staging, splits["val"], train_params,
                                       params.project.seed, params.prepare.max_length, work)
            record = kept.record.model_copy(update={"val_loss": val_loss, "best_val_loss": None,
                                                    "reused_from_trial": kept.trial})
            curves = Curves(train=kept.train_curve, val=[{"step": record.steps, "val_loss": val_loss}])
        labels = load_labels(layout)
        template = prompt_template(labels, load_tokenizer(layout.base_model_dir), params.prepare,
                                   task_splits["train"] + task_splits["val"])
        write_json(staging / PROMPT_FILE, prompt_spec(labels, params.prepare, template))
        adapter_bytes = safetensors_bytes(staging)
        # The training heap goes back before the merge loads a full-precision base beside it (on CPU the merge
        # was the stage's highest point: bench/profile_memory.py).
        gc.collect()
        release_free_memory()
        # Checked before the adapter is put in place: a merge over tolerance leaves the old outputs.
        merge_diff = merge_adapter(layout.base_model_dir, staging, layout.merged_dir, splits["val"],
                                   params.train.merge_tolerance)
    record = record.model_copy(update={
        **rehearsal, "adapter_bytes": adapter_bytes, "merge_max_abs_logit_diff": merge_diff,
        "adapter_to_base_size": adapter_bytes / safetensors_bytes(layout.base_model_dir),
        "weights_fingerprint": weights_fingerprint(inputs), "reuse": reuse})
    write_curve(layout.train_curve, curves.train, "train_loss")
    write_curve(layout.val_curve, curves.val, "val_loss")
    record.write(layout.train_metrics)
    shutil.rmtree(work, ignore_errors=True)  # finished: its checkpoints can never be resumed again
    return record.to_json()


def baseline_stage(params: Params, layout: Layout) -> dict:
    """Full fine-tuning through the same trainer: same data and budget as ``train``, its own learning rate.
    ``models/full`` and ``metrics/baseline.json``; with ``baseline.enabled: false`` an explicit record only."""
    if not params.baseline.enabled:
        disabled = DisabledBaseline(reason="baseline.enabled is false in params.yaml")
        write_disabled_marker(layout.full_model_dir, disabled.reason)
        disabled.write(layout.baseline_metrics)
        return disabled.to_json()
    require(layout.base_model_dir, layout.prepared_dir, layout.search_choice)
    work = layout.work_dir("baseline")
    # The same rehearsal mix as the adapter's (the search's share when it ran), so the comparison stays fair.
    splits, rehearsal = training_splits(params, layout, chosen_config(params, layout)[2])
    model, record, _ = train(layout.base_model_dir, splits, params.train, params.project.seed,
                             params.prepare.max_length, work, None, learning_rate=params.baseline.learning_rate)
    if not is_main():  # as in train_stage: rank 0 writes
        return record.to_json()
    save_full_model(model, layout.base_model_dir, layout.full_model_dir, record.steps)
    baseline = BaselineRecord(**{**record.model_dump(), **rehearsal})
    baseline.write(layout.baseline_metrics)
    shutil.rmtree(work, ignore_errors=True)
    return baseline.to_json()
