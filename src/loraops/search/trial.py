"""One search trial: train with the trial's LoRA config through the one trainer, prune on val loss, score.

The objective is accuracy by generation on (a capped slice of) the val split, through the same evaluator
as the ``evaluate`` stage; the trial also records its per-item correctness (``val_correct``, for the paired
bootstrap of the selection) and its retention on the ``dev`` pool of general prompts, whose drop against the
base model (``retention_drop``) decides feasibility. The base model's own val correctness and dev retention
are computed once per study, through the same evaluator, and kept in the study's user attrs
(:func:`base_reference`). While training, the val loss every ``search.eval_steps`` goes to ``trial.report``
(negated: the study maximises) and ``trial.should_prune()`` can stop the trial early. A trial whose rehearsal
share is above 0 trains on the task rows mixed with the rehearsal answers (:func:`loraops.training.mix_rehearsal`).
A worker loads the base once (:class:`loraops.training.ResidentBase`); each trial puts a fresh adapter on it and
takes it off again. A ``lora`` trial is scored as it stands in memory; a ``qlora`` one trained on the 4-bit base
is scored from its saved adapter on the full-precision base, as the evaluate stage scores it.
A completed trial keeps its adapter, record and training inputs (:func:`loraops.training.keep_trial`), so that
the train stage can take the chosen one instead of training it again (:mod:`loraops.training.reuse`).
What a trial cost (its training and its scoring, up to where it ended: completed, pruned or failed) is measured
by the trainer's own meter (:class:`loraops.training.energy.EnergyMeter`) and kept as user attrs
(:data:`loraops.search.study.COST_KEYS`) and as metrics of its MLflow run.
"""

from __future__ import annotations

import gc
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from loraops.config import Params
from loraops.core import ConfigError, Layout
from loraops.core.hashing import HashMemo
from loraops.data import load_labels, load_splits
from loraops.evaluation import run_model
from loraops.modeling import base_info, count_parameters, device
from loraops.search.study import COST_KEYS, budget_state, retention_constraint, seed_of, suggest
from loraops.search.tracking import TrialTracker
from loraops.training import (ResidentBase, keep_trial, load_rehearsal_rows, mix_rehearsal, save_adapter, train,
                               training_inputs)
from loraops.training.energy import EnergyMeter

BASE_ATTR = "base_reference"  # study user attr: the base model's val correctness and dev retention


def search_splits(params: Params, layout: Layout) -> dict[str, list[dict]]:
    """The train split and the capped val slice every trial (and the base reference) uses."""
    splits = load_splits(layout)
    return {"train": splits["train"], "val": splits["val"][: params.search.val_items]}


def require_rehearsal(params: Params, layout: Layout) -> None:
    """A rehearsal share above 0 in the space needs the rehearsal answers: one clear line before any trial."""
    shares = [share for share in params.search.rehearsal_shares if share > 0]
    if shares and not layout.rehearsal_answers.is_file():
        raise ConfigError(f"search.rehearsal_shares has {shares} but {layout.rehearsal_answers} does not exist; "
                          "run the rehearsal stage first, or set search.rehearsal_shares: [0.0]")


def score(params: Params, layout: Layout, rows: list[dict], adapter_dir: Path | None,
          trained_model: Any = None) -> dict[str, Any]:
    """Val accuracy, per-item correctness and dev retention of the base (``adapter_dir=None``) or a trial's
    adapter (saved in ``adapter_dir``, or still in memory on the full-precision base: ``trained_model``),
    through the one evaluator (label answers, accuracy only, retention on the ``dev`` pool)."""
    # Scored as the evaluate stage scores (label answers constrained, the base asked at its best), so that the
    # search decides on what the gates will see; the unconstrained pass only informs the report: skipped.
    eval_params = params.eval.model_copy(update={"task": "label", "metrics": ["accuracy"], "headline": None,
                                                 "retention": True})
    labels = load_labels(layout) if params.eval.task == "label" else None
    result = run_model(layout.base_model_dir, rows, params.eval.batch_size, layout.root, adapter_dir,
                       params=eval_params, labels=labels, shots_from=load_splits(layout)["train"],
                       prepare=params.prepare, retention_pool="dev", unconstrained=False,
                       trained_model=trained_model)
    return {"val_accuracy": float(result["metrics"]["accuracy"]),
            "val_correct": [int(bool(item["correct"])) for item in result["items"]],
            "retention_dev": float(result["metrics"]["retention"])}


def base_reference(params: Params, layout: Layout, study: Any) -> dict[str, Any]:
    """The base model's :func:`score` on the study's val slice, computed once and kept in the study."""
    cached = study.user_attrs.get(BASE_ATTR)
    if cached is not None:
        return cached
    reference = score(params, layout, search_splits(params, layout)["val"], None)
    study.set_user_attr(BASE_ATTR, reference)
    return reference


def _trainer_callback_base() -> type:
    from transformers import TrainerCallback

    return TrainerCallback


def pruning_callback(trial: Any, max_steps: int, tracker: Any) -> Any:
    """A TrainerCallback reporting eval_loss to Optuna (and MLflow) and raising TrialPruned when told."""
    import optuna

    class ReportAndPrune(_trainer_callback_base()):
        def __init__(self) -> None:
            self.reported: set[int] = set()

        def on_train_begin(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
            trainable, total = count_parameters(model)
            trial.set_user_attr("trainable_params", trainable)
            tracker.log_metrics({"trainable_params": trainable, "total_params": total})

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):  # noqa: ANN001
            step = state.global_step
            if step in self.reported or not metrics or "eval_loss" not in metrics:
                return  # the trainer's closing evaluate() repeats the last step
            self.reported.add(step)
            loss = float(metrics["eval_loss"])
            trial.report(-loss, step)
            trial.set_user_attr("steps", step)
            tracker.log_metrics({"val_loss": loss}, step=step)
            # Pruning at the last step would save nothing and throw away a finished trial.
            if step < max_steps and trial.should_prune():
                raise optuna.TrialPruned(f"val loss {loss:.4f} at step {step} is in the pruned share")

    return ReportAndPrune()


def record_cost(trial: Any, meter: EnergyMeter, tracker: Any) -> None:
    """The meter's reading as the trial's user attrs and as metrics (``energy_method`` a tag) of its run."""
    reading = meter.reading
    if reading is None:  # the meter never started: nothing was spent that it could tell
        return
    cost = {key: getattr(reading, key) for key in COST_KEYS}
    for key, value in cost.items():
        trial.set_user_attr(key, value)
    tracker.log_metrics({k: v for k, v in cost.items() if isinstance(v, (int, float))})
    tracker.set_tag("energy_method", reading.energy_method)


def make_objective(params: Params, layout: Layout, study: Any, worker: int = 0) -> Callable[[Any], float]:
    """The objective for ``study.optimize``; each call is one trial and one MLflow run nested in the search's."""
    import optuna

    require_rehearsal(params, layout)
    splits = search_splits(params, layout)
    rehearsal = load_rehearsal_rows(layout)
    base = base_reference(params, layout, study)
    s = params.search
    # Loaded (and for QLoRA quantised) at the first trial, then lent to every trial of this worker.
    resident = ResidentBase(layout.base_model_dir, params.train.method)
    memo = HashMemo(layout.hash_memo)
    base_id = base_info(layout)["id"]

    def objective(trial: optuna.Trial) -> float:
        lora, learning_rate, share = suggest(trial, params)
        trial.set_user_attr("lora", lora.model_dump())
        trial.set_user_attr("learning_rate", learning_rate)
        trial.set_user_attr("rehearsal_share", share)
        trial.set_user_attr("steps", 0)
        trial.set_user_attr("worker", worker)
        # Two workers may both start the last slot: the later trial number steps back (not counted).
        state = budget_state(study, params, exclude=trial.number)
        if state["finished"] + state["running_before"] >= s.n_trials:
            trial.set_user_attr("over_budget", True)
            raise RuntimeError(f"trial {trial.number}: n_trials={s.n_trials} already taken by other workers")
        tracker = TrialTracker(layout, params, study, trial, lora, learning_rate, share)
        layout.search_study_dir.mkdir(parents=True, exist_ok=True)  # absent when the study lives in an RDB
        work = Path(tempfile.mkdtemp(prefix=f"trial-{trial.number}-", dir=layout.search_study_dir))
        train_params = params.train.model_copy(update={
            "max_steps": s.max_steps, "learning_rate": learning_rate, "lora": lora,
            "logging_steps": min(params.train.logging_steps, s.eval_steps), "eval_steps": s.eval_steps,
            # The pruner, not early stopping, ends weak trials; trials write no checkpoints.
            "early_stopping_patience": None, "save_steps": None})
        # Around training and scoring: a pruned (or failed) trial leaves the block by its exception, and the
        # meter still reads what was spent up to there.
        meter = EnergyMeter(cuda=device() == "cuda")
        try:
            with meter:
                data = {"train": mix_rehearsal(splits["train"], rehearsal, share, seed_of(params)),
                        "val": splits["val"]}
                # What decides this trial's weights, asked as the train stage asks (same function, the
                # arguments given to train below); the base's bytes hashed once, then remembered.
                inputs = training_inputs(layout.base_model_dir, data, train_params, seed_of(params),
                                         params.prepare.max_length, lora, hashes=memo)
                memo.save()
                trial.set_user_attr("loaded_base", not resident.loaded)  # False: the base this worker loaded earlier
                model, record, curves = train(layout.base_model_dir, data, train_params, seed_of(params),
                                              params.prepare.max_length, work, lora,
                                              callbacks=[pruning_callback(trial, s.max_steps, tracker)],
                                              checkpoints=False, resident=resident)
                trial.set_user_attr("steps", record.steps)
                # Kept (if the trial completes) for the train stage, saved as that stage saves its adapter.
                save_adapter(model, work / "adapter", base_id)
                if resident.method == "lora":  # trained on the full-precision base: the model evaluate would load
                    scores = score(params, layout, splits["val"], None, trained_model=resident.inference_model())
                else:  # QLoRA's 4-bit training base is not the one evaluate scores on: scored from disk
                    resident.release()
                    del model
                    gc.collect()
                    scores = score(params, layout, splits["val"], work / "adapter")
            record_cost(trial, meter, tracker)
            drop = base["retention_dev"] - scores["retention_dev"]
            for key, value in {**scores, "retention_drop": drop}.items():
                trial.set_user_attr(key, value)
            retention_constraint(trial, drop, params)
            # The train stage takes this adapter for its own when it would train with these same inputs.
            keep_trial(layout.search_trials_dir / study.study_name / str(trial.number), work / "adapter",
                       trial.number, inputs, record, curves.train)
            tracker.finish("COMPLETE", {"val_accuracy": scores["val_accuracy"],
                                        "retention_dev": scores["retention_dev"], "retention_drop": drop,
                                        "steps": record.steps, "train_seconds": record.train_seconds})
            return scores["val_accuracy"]
        except optuna.TrialPruned:
            record_cost(trial, meter, tracker)
            tracker.finish("PRUNED", {"steps": trial.user_attrs.get("steps", 0)})
            raise
        except BaseException as exc:
            record_cost(trial, meter, tracker)
            tracker.finish("FAIL", {"steps": trial.user_attrs.get("steps", 0)}, error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            resident.release()  # the next trial gets the base as loaded, whatever this one did
            shutil.rmtree(work, ignore_errors=True)

    return objective
