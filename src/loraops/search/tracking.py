"""MLflow records of the search: one parent run per study, one nested run per trial.

Written with ``MlflowClient`` (explicit run ids, no fluent active-run state), so workers in several
processes log into the same parent. The parent's id is kept in the study (a user attr), so a resumed
search keeps logging under the same parent run.
"""

from __future__ import annotations

from typing import Any

from loraops.config import LoraParams, Params, portable
from loraops.core import Layout
from loraops.core.pipeline_run import pipeline_run_id
from loraops.core.tracking import Tracking, connect
from loraops.search.study import PARENT_RUN_ATTR, storage_url
from loraops.training import TrainChoice

STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


def _connect(layout: Layout, params: Params) -> tuple[Tracking, str]:
    tracking = connect(layout, params.registry)
    return tracking, tracking.experiment_id(params.registry.experiment)


def ensure_parent_run(layout: Layout, params: Params, study: Any) -> str:
    """The study's parent run: created once, found again on resume (if this tracking store still has it).
    It is nested in the pipeline run of the pass that started the study (loraops.core.pipeline_run)."""
    from mlflow.exceptions import MlflowException

    tracking, experiment_id = _connect(layout, params)
    existing = study.user_attrs.get(PARENT_RUN_ATTR)
    if existing:
        try:
            tracking.retry(tracking.client.get_run, existing)
            return existing
        except MlflowException:
            pass  # the tracking store was reset: start a new parent for this study
    pipeline = pipeline_run_id(tracking, experiment_id, params.project.name)
    run = tracking.retry(tracking.client.create_run, experiment_id, run_name="search",
                         tags={"loraops.stage": "search", "search.study_name": study.study_name,
                               "search.storage": portable(storage_url(params, layout), layout.root),
                               "mlflow.parentRunId": pipeline})
    flat = {f"search.{k}": str(v) for k, v in params.search.model_dump().items() if k != "storage"}
    for key, value in flat.items():
        tracking.retry(tracking.client.log_param, run.info.run_id, key, value)
    study.set_user_attr(PARENT_RUN_ATTR, run.info.run_id)
    return run.info.run_id


class TrialTracker:
    """The nested MLflow run of one trial: params at the start, val-loss curve as it trains, state at the end
    (with val accuracy, retention on the dev pool and its drop against the base when it completed)."""

    def __init__(self, layout: Layout, params: Params, study: Any, trial: Any, lora: LoraParams,
                 learning_rate: float, rehearsal_share: float = 0.0) -> None:
        self.tracking, experiment_id = _connect(layout, params)
        self.client, self.retry = self.tracking.client, self.tracking.retry
        parent = study.user_attrs.get(PARENT_RUN_ATTR)
        tags = {"loraops.stage": "search.trial", "search.trial_number": str(trial.number),
                "search.study_name": study.study_name}
        if parent:
            tags["mlflow.parentRunId"] = parent
        # A re-queued stale trial carries the original's number in its system attrs (storage-side only).
        retried = study._storage.get_trial(trial._trial_id).system_attrs.get("failed_trial")
        if retried is not None:
            tags["search.retry_of_trial"] = str(retried)
        self.run_id = self.retry(self.client.create_run, experiment_id, run_name=f"trial-{trial.number}",
                                 tags=tags).info.run_id
        trial.set_user_attr("mlflow_run_id", self.run_id)
        for key, value in {**{f"lora.{k}": v for k, v in lora.model_dump().items()},
                           "learning_rate": learning_rate, "rehearsal_share": rehearsal_share,
                           "max_steps": params.search.max_steps}.items():
            self.retry(self.client.log_param, self.run_id, key, str(value))

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        for key, value in metrics.items():
            self.retry(self.client.log_metric, self.run_id, key, float(value), step=step)

    def set_tag(self, key: str, value: str) -> None:
        self.retry(self.client.set_tag, self.run_id, key, value)

    def finish(self, state: str, metrics: dict[str, float], error: str | None = None) -> None:
        """Record the final state (complete/pruned/failed) as a tag and as the run's status."""
        self.log_metrics(metrics)
        self.retry(self.client.set_tag, self.run_id, "search.state", state.lower())
        if error:
            self.retry(self.client.set_tag, self.run_id, "search.error", error[:4000])
        self.retry(self.client.set_terminated, self.run_id, status=STATUS[state])


# TrainChoice's totals of what the search's trials cost (search.report.search_cost).
COST_TOTALS = ("costed_trials", "total_wall_seconds", "total_cpu_seconds", "total_gpu_seconds",
               "total_energy_joules", "energy_method")


def log_search_cost(tracking: Tracking, parent: str, cost: dict[str, Any]) -> None:
    """The search's totals on its parent run: numbers as ``search.<name>`` metrics, the methods as a tag."""
    for key in COST_TOTALS:
        value = cost.get(key)
        if value is None:
            continue
        if key == "energy_method":
            tracking.retry(tracking.client.set_tag, parent, "search.energy_method", value)
        else:
            tracking.retry(tracking.client.log_metric, parent, f"search.{key}", float(value))


def close_parent_run(layout: Layout, params: Params, parent: str | None, choice: TrainChoice) -> None:
    """The choice, the trials table and the Pareto plot on the parent run, which then ends."""
    if not parent:
        return
    tracking, _ = _connect(layout, params)
    client, retry = tracking.client, tracking.retry
    retry(client.log_dict, parent, choice.to_json(), "search/chosen.json")
    for path in sorted(layout.search_dir.iterdir()):
        if path.is_file() and path.name != "chosen.json":
            retry(client.log_artifact, parent, str(path), artifact_path="search")
    for key in ("metric", "best_metric", "trainable_params", "total_steps", "retention_drop", "base_metric",
                "base_retention", "gain_over_base_low", "rehearsal_share"):
        value = getattr(choice, key)
        if value is not None:
            retry(client.log_metric, parent, f"search.{key}", float(value))
    for state, count in (choice.trials or {}).items():
        retry(client.log_metric, parent, f"search.trials_{state}", float(count))
    log_search_cost(tracking, parent, choice.model_dump(include=set(COST_TOTALS)))
    retry(client.set_tag, parent, "search.chosen_trial", str(choice.trial))
    retry(client.set_terminated, parent, status="FINISHED")


def fail_parent_run(layout: Layout, params: Params, parent: str | None, reason: str,
                    cost: dict[str, Any] | None = None) -> None:
    """A search that chose nothing: its table, what it cost and the reason on the parent run, which ends as
    failed."""
    if not parent:
        return
    tracking, _ = _connect(layout, params)
    client, retry = tracking.client, tracking.retry
    log_search_cost(tracking, parent, cost or {})
    for path in sorted(layout.search_dir.iterdir()):
        if path.is_file():
            retry(client.log_artifact, parent, str(path), artifact_path="search")
    retry(client.set_tag, parent, "search.failure", reason[:4000])
    retry(client.set_terminated, parent, status="FAILED")
