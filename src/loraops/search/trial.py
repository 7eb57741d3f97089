"""One search trial: train with the trial's LoRA config through the one trainer, prune on val loss, score.

The objective is accuracy by generation on (a capped slice of) the val split, through the same evaluator
as the ``evaluate`` stage. While training, the val loss every ``search.eval_steps`` goes to
``trial.report`` (negated: the study maximises) and ``trial.should_prune()`` can stop the trial early.
"""

from __future__ import annotations

import gc
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from loraops.config import Params
from loraops.core import Layout
from loraops.data import load_splits
from loraops.evaluation import evaluate_model
from loraops.modeling import count_parameters
from loraops.search.study import budget_state, seed_of, suggest
from loraops.search.tracking import TrialTracker
from loraops.training import train


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


def make_objective(params: Params, layout: Layout, study: Any, worker: int = 0) -> Callable[[Any], float]:
    """The objective for ``study.optimize``; each call is one trial and one MLflow run nested in the search's."""
    import optuna

    splits = load_splits(layout)
    splits = {"train": splits["train"], "val": splits["val"][: params.search.val_items]}
    s = params.search

    def objective(trial: optuna.Trial) -> float:
        lora, learning_rate = suggest(trial, params)
        trial.set_user_attr("lora", lora.model_dump())
        trial.set_user_attr("learning_rate", learning_rate)
        trial.set_user_attr("steps", 0)
        trial.set_user_attr("worker", worker)
        # Two workers may both start the last slot: the later trial number steps back (not counted).
        state = budget_state(study, params, exclude=trial.number)
        if state["finished"] + state["running_before"] >= s.n_trials:
            trial.set_user_attr("over_budget", True)
            raise RuntimeError(f"trial {trial.number}: n_trials={s.n_trials} already taken by other workers")
        tracker = TrialTracker(layout, params, study, trial, lora, learning_rate)
        work = Path(tempfile.mkdtemp(prefix=f"trial-{trial.number}-", dir=layout.search_study_dir))
        train_params = params.train.model_copy(update={
            "max_steps": s.max_steps, "learning_rate": learning_rate, "lora": lora,
            "logging_steps": min(params.train.logging_steps, s.eval_steps), "eval_steps": s.eval_steps,
            # The pruner, not early stopping, ends weak trials; trials write no checkpoints.
            "early_stopping_patience": None, "save_steps": None})
        try:
            model, record, _ = train(layout.base_model_dir, splits, train_params, seed_of(params),
                                      params.prepare.max_length, work, lora,
                                      callbacks=[pruning_callback(trial, s.max_steps, tracker)],
                                      checkpoints=False)
            trial.set_user_attr("steps", record.steps)
            model.save_pretrained(work / "adapter", safe_serialization=True)
            del model
            gc.collect()
            scores, _ = evaluate_model(layout.base_model_dir, splits["val"], params.eval.batch_size, layout.root,
                                       work / "adapter")
            tracker.finish("COMPLETE", {"val_accuracy": scores["accuracy"], "steps": record.steps,
                                        "train_seconds": record.train_seconds})
            return scores["accuracy"]
        except optuna.TrialPruned:
            tracker.finish("PRUNED", {"steps": trial.user_attrs.get("steps", 0)})
            raise
        except BaseException as exc:
            tracker.finish("FAIL", {"steps": trial.user_attrs.get("steps", 0)}, error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)

    return objective
