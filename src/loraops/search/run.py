"""The ``search`` stage: an Optuna study that picks the smallest feasible LoRA adapter as good as the best.

Three library calls make the stage, and both ``loraops stage search`` (DVC) and the Prefect flow use them:
:func:`prepare_search` (open the study, its MLflow parent run), :func:`run_worker` (run trials until the
budget is spent; several may run at once against one storage) and :func:`finish_search` (select and write
the outputs). Trials train through :func:`loraops.training.train` (the one trainer) without checkpoints.
Workers on other machines (``search.workers_deployment``: flow runs on a Prefect work pool) go through
:func:`run_shared_worker`, which first checks that they reach the study the pipeline prepared.
"""

from __future__ import annotations

import logging
import shutil
import time
from typing import Any

from loraops.config import LoraParams, Params
from loraops.core import ConfigError, Layout, LoraopsError, require
from loraops.core.tracking import redact_url
from loraops.search.report import SEARCH_OFF, search_cost, write_reports
from loraops.search.select import Bootstrap, select
from loraops.search import heartbeat
from loraops.search.study import (PARENT_RUN_ATTR, budget_state, engine_kwargs, has_room, open_study, storage_url,
                                  study_fingerprint, study_name, trial_results)
from loraops.search.tracking import close_parent_run, ensure_parent_run, fail_parent_run
from loraops.training import TrainChoice, publish_trial
from loraops.search.trial import base_reference, make_objective, require_rehearsal

log = logging.getLogger(__name__)


def prepare_search(params: Params, layout: Layout) -> dict[str, Any]:
    """Open (or resume) the study and its MLflow parent run; call once before the workers start."""
    require(layout.base_model_dir / "config.json", layout.prepared_dir / "train.jsonl")
    require_rehearsal(params, layout)
    study = open_study(params, layout)
    base_reference(params, layout, study)  # once per study, before the workers need it
    parent = ensure_parent_run(layout, params, study)
    return {"study_name": study.study_name, "storage": redact_url(storage_url(params, layout)),
            "mlflow_run_id": parent, **budget_state(study, params)}


def run_worker(params: Params, layout: Layout, worker: int = 0) -> dict[str, Any]:
    """Run trials until ``n_trials`` have finished or the step budget is spent; safe to run in parallel."""
    study = open_study(params, layout, worker)
    objective = make_objective(params, layout, study, worker)
    url = storage_url(params, layout)
    beats = heartbeat.beat_storage(url, engine_kwargs(url), params.search.heartbeat_seconds)
    ran = 0
    while True:
        heartbeat.fail_stale_trials(study, beats)
        state = budget_state(study, params)
        if not has_room(state, params):
            if state["running"] == 0:
                break
            # Another worker's trial (or a dead one not yet stale) may still be pruned or fail: wait for it.
            time.sleep(min(params.search.heartbeat_seconds, 5))
            continue
        # A failing trial is recorded as FAIL and the search goes on (heartbeat.run_trial).
        heartbeat.run_trial(study, objective, beats, params.search.heartbeat_seconds)
        ran += 1
    return {"worker": worker, "trials_started": ran, **budget_state(study, params)}


def require_shared_storage(params: Params, layout: Layout) -> str:
    """The study's storage URL, redacted, when workers on other machines are to share it: a SQLite file (the
    default, or a ``sqlite://`` URL) lives on this machine's disk, and a worker elsewhere would silently
    open a study of its own there and spend the whole budget again."""
    url = storage_url(params, layout)
    if url.startswith("sqlite"):
        raise ConfigError(f"search.workers_deployment {params.search.workers_deployment!r} runs the workers on "
                          f"other machines, which cannot reach the study's SQLite file ({redact_url(url)}): set "
                          "LORAOPS_OPTUNA_STORAGE (or search.storage) to a PostgreSQL URL every worker can reach")
    return redact_url(url)


def run_shared_worker(params: Params, layout: Layout, worker: int, study: str | None = None) -> dict[str, Any]:
    """:func:`run_worker` on another machine (a flow run of ``search.workers_deployment``): only on a shared
    storage, only on the study the pipeline prepared (``study``; None: the one this project's inputs name),
    and only when this machine's inputs (prepared data, base model, params) give that same study."""
    import optuna

    url = storage_url(params, layout)
    if url.startswith("sqlite"):
        raise ConfigError(f"search worker {worker}: no shared study storage here (LORAOPS_OPTUNA_STORAGE is unset "
                          f"and search.storage null, so the study would be a SQLite file of this machine's, "
                          f"{redact_url(url)}): set LORAOPS_OPTUNA_STORAGE in the work pool's environment")
    here = study_name(params, layout)
    if study is not None and here != study:
        raise ConfigError(f"search worker {worker}: the inputs in {layout.root} name study {here}, the pipeline "
                          f"prepared {study}: this machine's prepared data, base model or params differ")
    if here not in optuna.get_all_study_names(storage=url):
        raise ConfigError(f"search worker {worker}: {redact_url(url)} holds no study {here}; the pipeline's search "
                          "stage prepares it (is this worker's LORAOPS_OPTUNA_STORAGE the pipeline's?)")
    return run_worker(params, layout, worker)


def run_workers(params: Params, layout: Layout) -> list[dict[str, Any]]:
    """``search.n_jobs`` workers: in this process for one, in spawned processes (one trainer each) for more."""
    if params.search.n_jobs == 1:
        return [run_worker(params, layout, 0)]
    with _spawn_pool(params.search.n_jobs) as pool:
        futures = [pool.submit(run_worker, params, layout, i) for i in range(params.search.n_jobs)]
        return [f.result() for f in futures]


def run_worker_isolated(params: Params, layout: Layout, worker: int = 0) -> dict[str, Any]:
    """:func:`run_worker` in a fresh process when several run at once: the Prefect flow's worker tasks share
    one process (threads), and two trainers must not share torch's global state (seeds, threads)."""
    if params.search.n_jobs == 1:
        return run_worker(params, layout, worker)
    with _spawn_pool(1) as pool:
        return pool.submit(run_worker, params, layout, worker).result()


def _spawn_pool(workers: int) -> Any:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def finish_search(params: Params, layout: Layout) -> dict[str, Any]:
    """Select the configuration and write chosen.json, the trials table, the plots and the MLflow artifacts.
    A search that found nothing worth training (no completed, no feasible trial, none beating the base) fails
    with one line and leaves no chosen.json, so nothing is trained or registered."""
    study = open_study(params, layout)
    results = trial_results(study)
    limit = params.promote.max_retention_drop
    write_reports(layout, results, max_retention_drop=limit)  # before selecting: a failed search keeps its table
    layout.search_choice.unlink(missing_ok=True)  # an older choice must not outlive a failed selection
    shutil.rmtree(layout.search_trained, ignore_errors=True)  # nor an older choice's adapter
    base = base_reference(params, layout, study)
    bootstrap = Bootstrap(params.eval.bootstrap_samples, params.eval.confidence, params.eval.bootstrap_seed)
    parent = study.user_attrs.get(PARENT_RUN_ATTR)
    cost = search_cost(results)
    try:
        picked = select(results, limit, base["val_correct"] if params.search.beat_base else None, bootstrap)
    except LoraopsError as exc:
        fail_parent_run(layout, params, parent, str(exc), cost)
        raise
    chosen, best = picked.chosen, picked.best
    counts = {state: sum(1 for r in results if r.state == state) for state in ("COMPLETE", "PRUNED", "FAIL")}
    lora_keys = ("r", "alpha", "dropout", "target_modules", "use_rslora")
    choice = TrainChoice(
        source="search", lora=LoraParams(**{k: chosen.params[k] for k in lora_keys if k in chosen.params}),
        learning_rate=chosen.params["learning_rate"], rehearsal_share=chosen.params.get("rehearsal_share", 0.0),
        trial=chosen.number, metric_name="val_accuracy", metric=chosen.metric,
        trainable_params=chosen.trainable_params, best_trial=best.number, best_metric=best.metric,
        retention_drop=chosen.retention_drop, max_retention_drop=limit, base_metric=base["val_accuracy"],
        base_retention=base["retention_dev"],
        gain_over_base_low=picked.versus_base["low"] if picked.versus_base else None,
        versus_best_high=picked.versus_best["high"], feasible_trials=picked.feasible,
        trials={k.lower(): v for k, v in counts.items()}, total_steps=sum(r.steps for r in results),
        study_name=study.study_name, storage=redact_url(storage_url(params, layout)),
        fingerprint=study_fingerprint(params, layout), mlflow_run_id=parent, **cost)
    # The chosen trial's adapter into the stage's out (the train stage may take it); the others' removed.
    publish_trial(layout.search_trials_dir / study.study_name, chosen.number, layout.search_trained)
    choice.write(layout.search_choice)
    close_parent_run(layout, params, parent, choice)
    return choice.to_json()


def search_stage(params: Params, layout: Layout) -> dict[str, Any]:
    """The whole stage as one call (what ``loraops stage search`` runs); off, it records train's own params."""
    if not params.search.enabled:
        write_reports(layout, [], note=SEARCH_OFF)
        shutil.rmtree(layout.search_trained, ignore_errors=True)
        choice = TrainChoice(source="params", lora=params.train.lora, learning_rate=params.train.learning_rate)
        # train reads its own train.rehearsal.share then (chosen_config), so the choice never goes stale.
        choice.write(layout.search_choice)
        return choice.to_json()
    require(layout.base_model_dir, layout.prepared_dir)
    if params.search.workers_deployment:
        # The deployment's flow runs are started by the Prefect flows; this (DVC's) path has no Prefect.
        log.warning("search.workers_deployment %s is used by `loraops run` and the retrain flow; this stage runs "
                    "its %d worker(s) here", params.search.workers_deployment, params.search.n_jobs)
    prepare_search(params, layout)
    run_workers(params, layout)
    return finish_search(params, layout)
