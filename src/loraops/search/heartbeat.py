"""Liveness of search trials: heartbeats a busy trial cannot starve, and a stale rule that never fails a live one.

Optuna's own mechanism (``RDBStorage(heartbeat_interval=...)``) beats from a thread that shares the trial's
database session and fails any RUNNING trial whose last beat is older than ``2 x heartbeat_interval``, at
the start of every trial of every worker. Under CPU load a live worker's beat comes late, a peer fails its
trial, and the live worker then crashes telling the result of a FAIL trial. Here instead:

- :class:`Heartbeat` beats from a daemon thread with a connection of its own (its own engine), so it waits
  neither for the trial's session nor for the trial's Python code;
- a RUNNING trial counts as stale only when its last beat is older than :func:`stale_after` seconds
  (``2 x search.heartbeat_seconds`` plus a margin of :data:`MARGIN_SECONDS`), judged by the database's clock,
  and never while the process that runs it is alive on this host (its identity is a system attr of the
  trial, :data:`WORKER_ATTR`). A worker process of this host that is gone is stale at once;
- :func:`fail_stale_trials` fails stale trials and re-queues each with the same params
  (Optuna's ``RetryHeartbeatStaleTrialCallback``), as Optuna's does;
- :func:`run_trial` is one trial (ask, beat, objective, tell): a trial failed under a live worker anyway
  (a peer on another host lost sight of it) is ended cleanly, its result dropped with a warning, and the
  worker goes on.

The study's own storage has Optuna's heartbeat off, so Optuna never fails trials on its own rule.
"""

from __future__ import annotations

import copy
import gc
import logging
import threading
from typing import Any, Callable

from loraops.core.process import is_alive_here, is_dead, process_identity

WORKER_ATTR = "loraops:worker"  # trial system attr: the process identity of the worker running it
MARGIN_SECONDS = 60  # beyond 2 heartbeats, before a trial of a worker on another host counts as stale
MAX_RETRIES = 3  # re-queues of one stale trial (Optuna's RetryHeartbeatStaleTrialCallback)
log = logging.getLogger(__name__)


def stale_after(heartbeat_seconds: int) -> int:
    """Seconds without a beat after which a RUNNING trial of a worker not known alive counts as stale."""
    return 2 * heartbeat_seconds + MARGIN_SECONDS


def beat_storage(url: str, engine_kwargs: dict, heartbeat_seconds: int) -> Any:
    """An RDBStorage with heartbeats on, used only to beat and to find stale trials (its own engine)."""
    import warnings

    import optuna
    from optuna.storages import RDBStorage

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(url, engine_kwargs=engine_kwargs, skip_compatibility_check=True,
                          heartbeat_interval=heartbeat_seconds, grace_period=stale_after(heartbeat_seconds))


class Heartbeat:
    """Beats for one trial every ``heartbeat_seconds`` from a daemon thread, while the block runs."""

    def __init__(self, storage: Any, trial_id: int, heartbeat_seconds: int):
        self.storage, self.trial_id, self.interval = storage, trial_id, heartbeat_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat trial {trial_id}", daemon=True)

    def _loop(self) -> None:
        while True:
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception as exc:  # noqa: BLE001 - a busy database: beat again next period
                log.warning("heartbeat of trial %d failed: %s", self.trial_id, str(exc).splitlines()[0][:200])
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=max(30, 2 * self.interval))


def fail_stale_trials(study: Any, beats: Any) -> list[int]:
    """Fail the study's stale RUNNING trials (module docstring) and re-queue them; returns their numbers."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    storage = study._storage
    stale = set(beats._get_stale_trial_ids(study._study_id))
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.system_attrs.get(WORKER_ATTR)
        if trial._trial_id in stale:
            if is_alive_here(worker):
                continue  # late beats, but its process on this host is alive: never failed by a peer
        elif not is_dead(worker):
            continue
        try:
            if storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                failed.append(trial._trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another worker failed (or its own worker finished) it first
    retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)
    numbers = []
    for trial_id in failed:
        frozen = copy.deepcopy(storage.get_trial(trial_id))
        retry(study, frozen)
        numbers.append(frozen.number)
        log.warning("trial %d: its worker stopped sending heartbeats (gone); failed and re-queued", frozen.number)
    return numbers


def run_trial(study: Any, objective: Callable[[Any], float], beats: Any, heartbeat_seconds: int) -> Any:
    """One trial: ask, beat while ``objective`` runs, tell. A failing objective is recorded as FAIL and a
    pruned one as PRUNED (the search goes on); a trial a peer failed meanwhile keeps that state."""
    import optuna
    from optuna.trial import TrialState

    trial = study.ask()
    study._storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR, process_identity())
    value, state, error = None, TrialState.COMPLETE, None
    try:
        with Heartbeat(beats, trial._trial_id, heartbeat_seconds):
            try:
                value = objective(trial)
            except optuna.TrialPruned:
                state = TrialState.PRUNED
            except Exception as exc:  # noqa: BLE001 - a failing trial is recorded, the others go on
                state, error = TrialState.FAIL, exc
            except BaseException:
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                raise
        if error is not None:
            log.warning("trial %d failed: %s: %s", trial.number, type(error).__name__, error)
        # Read from the database itself (the study's storage caches): did a peer fail it meanwhile?
        if not beats.get_trial(trial._trial_id).state.is_finished():
            try:
                return study.tell(trial, value if state == TrialState.COMPLETE else None, state=state,
                                  skip_if_finished=True)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # failed by a peer between the read and the tell
        log.warning("trial %d was failed by another worker while it ran (its heartbeats were late); its result "
                    "is dropped and it was re-queued", trial.number)
        return beats.get_trial(trial._trial_id)
    finally:
        gc.collect()
