"""The ``search`` stage: an Optuna study that picks the smallest LoRA adapter as good as the best.

Three library calls make the stage, and both ``loraops stage search`` (DVC) and the Prefect flow use them:
:func:`prepare_search` (open the study, its MLflow parent run), :func:`run_worker` (run trials until the
budget is spent; several may run at once against one storage) and :func:`finish_search` (select and write
the outputs). Trials train through :func:`loraops.train.train` (the one trainer) without checkpoints.

Resuming: the study lives in a database outside every DVC output (SQLite under ``.loraops/search/`` unless
``search.storage`` or ``LORAOPS_OPTUNA_STORAGE`` names one) under a name derived from a fingerprint of the
inputs, so a re-run continues the same study and never re-runs a finished trial, and a changed input starts
a new one. Workers send heartbeats; a RUNNING trial whose worker died (SIGKILL) goes stale after
2 x ``search.heartbeat_seconds``, is marked FAIL and re-queued with the same params (Optuna's
RetryHeartbeatStaleTrialCallback). Such re-queued failures do not count against ``n_trials``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

from loraops.config import LoraParams, Params
from loraops.project import Layout, read_json, write_json
from loraops.search_select import TrialResult, select

STORAGE_ENV = "LORAOPS_OPTUNA_STORAGE"
PARENT_RUN_ATTR = "mlflow_parent_run_id"
# Search params that change how the study runs but not what a trial computes: not in the fingerprint.
RUNTIME_KEYS = ("n_jobs", "storage", "heartbeat_seconds", "enabled")


def _file_digest(digest: Any, path: Path) -> None:
    digest.update(path.name.encode())
    digest.update(path.read_bytes() if path.is_file() else b"<missing>")


def fingerprint(params: Params, layout: Layout) -> str:
    """Hash of what a trial's result depends on: data, base model, search space and training settings."""
    from loraops.base_model import INFO_FILE

    digest = hashlib.sha256()
    for path in (layout.prepared_dir / "train.jsonl", layout.prepared_dir / "val.jsonl",
                 layout.base_model_dir / "config.json", layout.base_model_dir / INFO_FILE):
        _file_digest(digest, path)
    search = {k: v for k, v in params.search.model_dump().items() if k not in RUNTIME_KEYS}
    train = params.train.model_dump(include={"method", "batch_size", "gradient_accumulation_steps", "warmup_steps"})
    settings = {"search": search, "train": train, "seed": seed_of(params), "max_length": params.prepare.max_length}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def seed_of(params: Params) -> int:
    return params.project.seed if params.search.seed is None else params.search.seed


def storage_url(params: Params, layout: Layout) -> str:
    url = os.environ.get(STORAGE_ENV) or params.search.storage
    if url:
        return url
    layout.search_study_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{layout.search_study_dir / 'optuna.db'}"


def redacted(url: str) -> str:
    """The storage URL without its password, for outputs and logs."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def study_name(params: Params, layout: Layout) -> str:
    return f"loraops-search-{fingerprint(params, layout)}"


def open_study(params: Params, layout: Layout, worker: int = 0) -> Any:
    """The study (created on first use) with a sampler and pruner built from ``search`` params."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage_url(params, layout)
    # SQLite serialises writers; several workers and heartbeats wait for the lock instead of failing.
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = RDBStorage(url, engine_kwargs=engine, heartbeat_interval=params.search.heartbeat_seconds,
                             heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3))
    s = params.search
    # Each worker gets its own sampler seed so parallel workers do not draw the same configurations.
    seed = seed_of(params) + worker
    sampler = {"tpe": lambda: optuna.samplers.TPESampler(seed=seed),
               "random": lambda: optuna.samplers.RandomSampler(seed=seed),
               "bruteforce": lambda: optuna.samplers.BruteForceSampler(seed=seed)}[s.sampler]()
    # Pruning works on steps; the intermediate value is -val_loss so that "higher is better" as for accuracy.
    pruner = {"successive_halving": lambda: optuna.pruners.SuccessiveHalvingPruner(
                  min_resource=s.eval_steps, reduction_factor=s.reduction_factor),
              "hyperband": lambda: optuna.pruners.HyperbandPruner(
                  min_resource=s.eval_steps, max_resource=s.max_steps, reduction_factor=s.reduction_factor),
              "none": lambda: optuna.pruners.NopPruner()}[s.pruner]()
    return optuna.create_study(storage=storage, study_name=study_name(params, layout), direction="maximize",
                               sampler=sampler, pruner=pruner, load_if_exists=True)


def suggest(trial: Any, params: Params) -> tuple[LoraParams, float]:
    """The trial's LoRA config and learning rate from the search space."""
    s = params.search
    r = trial.suggest_categorical("r", list(s.ranks))
    targets = trial.suggest_categorical("target_modules", list(s.target_modules))
    low, high = s.learning_rate
    learning_rate = trial.suggest_float("learning_rate", low, high, log=True) if low < high else low
    lora = LoraParams(r=r, alpha=max(1, round(s.alpha_multiple * r)), dropout=s.dropout, target_modules=targets)
    return lora, learning_rate


def trial_results(study: Any) -> list[TrialResult]:
    """Every finished trial that counts (re-queued stale failures and over-budget starts left out)."""
    from optuna.trial import TrialState

    results = []
    for t in _counted(study.get_trials(deepcopy=False)):
        if not t.state.is_finished():
            continue
        lora = t.user_attrs.get("lora") or {}
        results.append(TrialResult(
            number=t.number, state=t.state.name, params={**lora, "learning_rate": t.user_attrs.get("learning_rate")},
            trainable_params=t.user_attrs.get("trainable_params"), steps=int(t.user_attrs.get("steps", 0)),
            metric=t.value if t.state == TrialState.COMPLETE else None))
    return results


def _counted(trials: list[Any]) -> list[Any]:
    from optuna.trial import TrialState

    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return [t for t in trials if not (t.state == TrialState.FAIL and (t.number in retried
                                                                       or t.user_attrs.get("over_budget")))]


def budget_state(study: Any, params: Params, exclude: int | None = None) -> dict[str, int]:
    """Finished and running trials that count, and the steps they used or (running) may still use."""
    from optuna.trial import TrialState

    trials = [t for t in _counted(study.get_trials(deepcopy=False)) if t.number != exclude]
    finished = [t for t in trials if t.state.is_finished()]
    running = [t for t in trials if t.state == TrialState.RUNNING]
    steps = sum(int(t.user_attrs.get("steps", 0)) for t in finished) + len(running) * params.search.max_steps
    return {"finished": len(finished), "running": len(running), "steps": steps,
            "running_before": sum(1 for t in running if exclude is not None and t.number < exclude)}


def total_steps(params: Params) -> int:
    s = params.search
    return s.total_steps if s.total_steps is not None else s.n_trials * s.max_steps


def has_room(state: dict[str, int], params: Params) -> bool:
    """Another trial may start: under n_trials, and its full max_steps fits in the step budget."""
    return (state["finished"] + state["running"] < params.search.n_trials
            and state["steps"] + params.search.max_steps <= total_steps(params))


def prepare_search(params: Params, layout: Layout) -> dict[str, Any]:
    """Open (or resume) the study and its MLflow parent run; call once before the workers start."""
    from loraops.errors import StageOrderError
    from loraops.search_tracking import ensure_parent_run

    for path in (layout.base_model_dir / "config.json", layout.prepared_dir / "train.jsonl"):
        if not path.is_file():
            raise StageOrderError(f"{path}: missing input; run the stage that produces it first")
    study = open_study(params, layout)
    parent = ensure_parent_run(layout, params, study)
    return {"study_name": study.study_name, "storage": redacted(storage_url(params, layout)),
            "mlflow_run_id": parent, **budget_state(study, params)}


def run_worker(params: Params, layout: Layout, worker: int = 0) -> dict[str, Any]:
    """Run trials until ``n_trials`` have finished or the step budget is spent; safe to run in parallel."""
    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import fail_stale_trials

    from loraops.search_trial import make_objective

    study = open_study(params, layout, worker)
    objective = make_objective(params, layout, study, worker)
    ran = 0
    while True:
        with warnings.catch_warnings():  # fail_stale_trials is flagged "experimental" since Optuna 2.9
            warnings.simplefilter("ignore", ExperimentalWarning)
            fail_stale_trials(study)
        state = budget_state(study, params)
        if not has_room(state, params):
            if state["running"] == 0:
                break
            # Another worker's trial (or a dead one not yet stale) may still be pruned or fail: wait for it.
            time.sleep(min(params.search.heartbeat_seconds, 5))
            continue
        # catch=Exception: a failing trial is recorded as FAIL and the search goes on.
        study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
        ran += 1
    return {"worker": worker, "trials_started": ran, **budget_state(study, params)}


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


def params_choice(params: Params) -> dict[str, Any]:
    """The train group's own choice, used when the search is disabled (the train stage then reads its own
    params, so this record of them never goes stale)."""
    return {"lora": params.train.lora.model_dump(), "learning_rate": params.train.learning_rate, "source": "params"}


def finish_search(params: Params, layout: Layout) -> dict[str, Any]:
    """Select the configuration and write chosen.json, the trials table, the plots and the MLflow artifacts."""
    from loraops.search_report import write_reports
    from loraops.search_tracking import close_parent_run

    study = open_study(params, layout)
    results = trial_results(study)
    write_reports(layout, results)  # before selecting, so an all-failed search still leaves its table
    chosen = select(results, params.search.tolerance)
    best = max((r for r in results if r.state == "COMPLETE"), key=lambda r: r.metric)
    parent = study.user_attrs.get(PARENT_RUN_ATTR)
    counts = {state: sum(1 for r in results if r.state == state) for state in ("COMPLETE", "PRUNED", "FAIL")}
    choice = {
        "lora": {k: chosen.params[k] for k in ("r", "alpha", "dropout", "target_modules")},
        "learning_rate": chosen.params["learning_rate"], "source": "search", "trial": chosen.number,
        "metric_name": "val_accuracy", "metric": chosen.metric, "trainable_params": chosen.trainable_params,
        "best_trial": best.number, "best_metric": best.metric, "tolerance": params.search.tolerance,
        "trials": {k.lower(): v for k, v in counts.items()}, "total_steps": sum(r.steps for r in results),
        "study_name": study.study_name, "storage": redacted(storage_url(params, layout)),
        "fingerprint": fingerprint(params, layout), "mlflow_run_id": parent,
    }
    write_json(layout.search_choice, choice)
    close_parent_run(layout, params, parent, choice)
    return choice


def run_search(params: Params, layout: Layout) -> dict[str, Any]:
    """The whole stage as one call (what ``loraops stage search`` runs)."""
    if not params.search.enabled:
        from loraops.search_report import write_reports

        write_reports(layout, [])
        choice = params_choice(params)
        write_json(layout.search_choice, choice)
        return choice
    prepare_search(params, layout)
    run_workers(params, layout)
    return finish_search(params, layout)


def read_choice(layout: Layout) -> dict[str, Any] | None:
    return read_json(layout.search_choice) if layout.search_choice.is_file() else None
