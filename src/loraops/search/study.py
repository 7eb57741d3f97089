"""The search's Optuna study: storage, name (its fingerprint), sampler and pruner, space, and budget.

Resuming: the study lives in a database outside every DVC output (SQLite under ``.loraops/search/`` unless
``search.storage`` or ``LORAOPS_OPTUNA_STORAGE`` names one) under a name derived from a fingerprint of the
inputs, so a re-run continues the same study and never re-runs a finished trial, and a changed input starts
a new one. Workers send heartbeats (:mod:`loraops.search.heartbeat`); a RUNNING trial whose worker died
(SIGKILL) is marked FAIL and re-queued with the same params (Optuna's RetryHeartbeatStaleTrialCallback), and
a live worker's trial never is. Such re-queued failures do not count against ``n_trials``.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from loraops.config import LoraParams, Params
from loraops.core import Layout
from loraops.core.hashing import HashMemo, sha256_file, sha256_json, tree_sha256
from loraops.data.general_prompts import POOLS
from loraops.search.select import TrialResult

STORAGE_ENV = "LORAOPS_OPTUNA_STORAGE"
PARENT_RUN_ATTR = "mlflow_parent_run_id"
# Search params that change how the study runs but not what a trial computes: not in the fingerprint.
RUNTIME_KEYS = ("n_jobs", "storage", "heartbeat_seconds", "enabled", "workers_deployment")
# Trial user attrs (and trials.csv columns): what the trial cost, as loraops.training.energy names them.
COST_KEYS = ("wall_seconds", "cpu_seconds", "gpu_seconds", "energy_joules", "energy_method")


def study_fingerprint(params: Params, layout: Layout) -> str:
    """What a trial's result depends on, so a study resumes only on a match: the bytes of the prepared train
    and val splits and of every file of the base model (weights, config, tokenizer, loraops_base.json), the
    search params but the runtime ones (``n_jobs``, ``storage``, ``heartbeat_seconds``, ``enabled``,
    ``workers_deployment``), the train
    settings a trial keeps (method, batch size, gradient accumulation, warmup, learning-rate schedule), the
    search seed, ``prepare.max_length``, the dev pool and how trials are scored (``eval.constrained``,
    ``eval.base_shots``, the system prompt)."""
    files = {path.name: sha256_file(path) if path.is_file() else None
             for path in (layout.prepared_dir / "train.jsonl", layout.prepared_dir / "val.jsonl")}
    if any(share > 0 for share in params.search.rehearsal_shares):  # trials mix these rows in
        answers = layout.rehearsal_answers
        files["rehearsal"] = sha256_file(answers) if answers.is_file() else None
    if layout.base_model_dir.is_dir():  # large weights: hashed once, then remembered by their file stamp
        memo = HashMemo(layout.hash_memo)
        files["base"] = tree_sha256(layout.base_model_dir, memo)
        memo.save()
    search = {k: v for k, v in params.search.model_dump().items() if k not in RUNTIME_KEYS}
    train = params.train.model_dump(include={"method", "batch_size", "gradient_accumulation_steps", "warmup_steps",
                                             "lr_scheduler"})
    # Each trial's retention-dev score depends on the pool's items and on how long its answers may be.
    retention = {"dev_pool": sha256_json([list(item) for item in POOLS["dev"]]),
                 "max_new_tokens": params.eval.retention_max_new_tokens}
    # Trials and the base reference are scored as the evaluate stage scores (labels, shots, the constraint).
    scoring = {"constrained": params.eval.constrained, "base_shots": params.eval.base_shots,
               "system_prompt": params.prepare.system_prompt}
    settings = {"search": search, "train": train, "seed": seed_of(params), "max_length": params.prepare.max_length,
                "retention": retention, "scoring": scoring}
    return sha256_json({"files": files, "settings": settings})[:16]


def seed_of(params: Params) -> int:
    return params.project.seed if params.search.seed is None else params.search.seed


def storage_url(params: Params, layout: Layout) -> str:
    url = os.environ.get(STORAGE_ENV) or params.search.storage
    if url:
        return url
    layout.search_study_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{layout.search_study_dir / 'optuna.db'}"


def study_name(params: Params, layout: Layout) -> str:
    return f"loraops-search-{study_fingerprint(params, layout)}"


def engine_kwargs(url: str) -> dict[str, Any]:
    # SQLite serialises writers; several workers and heartbeats wait for the lock instead of failing.
    return {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}


def open_study(params: Params, layout: Layout, worker: int = 0) -> Any:
    """The study (created on first use) with a sampler and pruner built from ``search`` params. Its storage
    has Optuna's own heartbeat off: the workers beat and judge staleness themselves (search.heartbeat)."""
    import optuna
    from optuna.storages import RDBStorage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage_url(params, layout)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = RDBStorage(url, engine_kwargs=engine_kwargs(url))
        return _create_study(params, layout, worker, storage)


def _create_study(params: Params, layout: Layout, worker: int, storage: Any) -> Any:
    import optuna

    s = params.search
    # Each worker gets its own sampler seed so parallel workers do not draw the same configurations.
    seed = seed_of(params) + worker
    # TPE: a start-up that fits a small budget and the joint (multivariate) density of the space; trials that
    # forgot more than the promotion gate allows are steered away from by the constraint each trial sets
    # (:func:`retention_constraint`).
    sampler = {"tpe": lambda: optuna.samplers.TPESampler(
                   seed=seed, n_startup_trials=s.startup_trials(), multivariate=True),
               "random": lambda: optuna.samplers.RandomSampler(seed=seed),
               "bruteforce": lambda: _grid_sampler()(seed=seed)}[s.sampler]()
    # Pruning works on steps; the intermediate value is -val_loss so that "higher is better" as for accuracy.
    pruner = {"successive_halving": lambda: optuna.pruners.SuccessiveHalvingPruner(
                  min_resource=s.eval_steps, reduction_factor=s.reduction_factor),
              "hyperband": lambda: optuna.pruners.HyperbandPruner(
                  min_resource=s.eval_steps, max_resource=s.max_steps, reduction_factor=s.reduction_factor),
              "none": lambda: optuna.pruners.NopPruner()}[s.pruner]()
    return optuna.create_study(storage=storage, study_name=study_name(params, layout), direction="maximize",
                               sampler=sampler, pruner=pruner, load_if_exists=True)


def retention_constraint(trial: Any, drop: float, params: Params) -> None:
    """Tell the sampler how far the trial's retention-dev drop is over the gate's bound (<= 0: feasible);
    Optuna 5's per-trial constraint, which its samplers read in place of a ``constraints_func``."""
    trial.set_constraint("retention_drop", float(drop) - params.promote.max_retention_drop)


def _grid_sampler() -> type:
    """Optuna's BruteForceSampler for ask/tell trials. Once every configuration is done it ends the study from
    ``after_trial`` with ``Study.stop()``, which Optuna allows only inside ``optimize`` (a RuntimeError after
    the trial was stored); the search's own budget (``n_trials``) ends the search instead."""
    import optuna

    class GridSampler(optuna.samplers.BruteForceSampler):
        def after_trial(self, study, trial, state, values):
            try:
                super().after_trial(study, trial, state, values)
            except RuntimeError as exc:
                if "Study.stop" not in str(exc):
                    raise

    return GridSampler


def suggest(trial: Any, params: Params) -> tuple[LoraParams, float, float]:
    """The trial's LoRA config, learning rate and rehearsal share from the search space."""
    s = params.search
    r = trial.suggest_categorical("r", list(s.ranks))
    targets = trial.suggest_categorical("target_modules", list(s.target_modules))
    low, high = s.learning_rate
    learning_rate = trial.suggest_float("learning_rate", low, high, log=True) if low < high else low
    share = float(trial.suggest_categorical("rehearsal_share", list(s.rehearsal_shares)))
    alpha = s.alpha if s.rslora else max(1, round(s.alpha_multiple * r))
    lora = LoraParams(r=r, alpha=alpha, dropout=s.dropout, target_modules=targets, use_rslora=s.rslora)
    return lora, learning_rate, share


def trial_results(study: Any) -> list[TrialResult]:
    """Every finished trial that counts (re-queued stale failures and over-budget starts left out)."""
    from optuna.trial import TrialState

    results = []
    for t in _counted(study.get_trials(deepcopy=False)):
        if not t.state.is_finished():
            continue
        lora = t.user_attrs.get("lora") or {}
        correct = t.user_attrs.get("val_correct")
        results.append(TrialResult(
            number=t.number, state=t.state.name,
            params={**lora, "learning_rate": t.user_attrs.get("learning_rate"),
                    "rehearsal_share": t.user_attrs.get("rehearsal_share", 0.0)},
            trainable_params=t.user_attrs.get("trainable_params"), steps=int(t.user_attrs.get("steps", 0)),
            metric=t.value if t.state == TrialState.COMPLETE else None,
            retention=t.user_attrs.get("retention_dev"), retention_drop=t.user_attrs.get("retention_drop"),
            correct=tuple(int(c) for c in correct) if correct is not None else None,
            **{key: t.user_attrs.get(key) for key in COST_KEYS}))
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


