"""The MLflow run of one pass through the DAG: its start is the pipeline's start, ``register`` closes it.

A pass is the stages that run in DAG order, whether in one process (the Prefect flow) or in one process
each (``dvc repro``, ``loraops stage NAME``). The first stage of a pass writes ``.loraops/pipeline-run.json``
with the time it started; a stage that does not come later in the DAG than the last one recorded starts a
new pass. The MLflow run is created when a stage first needs it (the search's parent run is nested in it, a
failed validation logs into it, ``register`` logs everything else), with the pass's start as its start time;
the Prefect flow creates it at once so that it shows as running. ``register`` ends it FINISHED and a failing
stage ends it FAILED, so the run's duration in the MLflow UI is the pipeline's own.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

from loraops.core.hashing import sha256_text
from loraops.core.io import atomic_write_text
from loraops.core.layout import Layout
from loraops.core.tracking import RetryPolicy, Tracking, connect

POINTER = "pipeline-run.json"
STAGE_TAG = "loraops.stage"  # the stage a run belongs to; "pipeline" for the pass's own run
FAILED_STAGE_TAG = "loraops.failed_stage"


def _pointer_path(layout: Layout):
    return layout.cache_dir / POINTER


def _read(layout: Layout) -> dict[str, Any] | None:
    path = _pointer_path(layout)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write(layout: Layout, state: dict[str, Any]) -> None:
    atomic_write_text(_pointer_path(layout), json.dumps(state, indent=2) + "\n")


def _store_key(uri: str) -> str:
    """Which tracking store a recorded run lives in, without writing its URL (it may hold a password)."""
    return sha256_text(uri)[:16]


def begin_stage(layout: Layout, policy: RetryPolicy, stage: str, position: int) -> None:
    """Record that ``stage`` (at ``position`` in the DAG) starts; the first stage of a pass starts the pass."""
    state = _read(layout)
    if state is not None and state.get("position", -1) >= position:
        _abandon(layout, policy, state, f"a new pass started at stage {stage} before this one registered")
        state = None
    if state is None:
        state = {"started_ms": int(time.time() * 1000), "stages": [], "run_id": None, "store": None}
    state["stages"].append(stage)
    state["position"] = position
    _write(layout, state)


def start_pass(layout: Layout, policy: RetryPolicy) -> None:
    """A new pass starts now (the Prefect flow's start), whatever was recorded before."""
    state = _read(layout)
    if state is not None:
        _abandon(layout, policy, state, "a new pipeline run started before this one registered")
    _write(layout, {"started_ms": int(time.time() * 1000), "stages": [], "position": -1, "run_id": None,
                    "store": None})


def pipeline_run_id(tracking: Tracking, experiment_id: str, run_name: str) -> str:
    """The id of this pass's MLflow run in ``tracking``'s store, created (started when the pass started)
    on first use. Without a recorded pass (a library call outside any stage) a pass starts now."""
    layout = tracking.layout
    state = _read(layout) or {"started_ms": int(time.time() * 1000), "stages": [], "position": -1}
    store = _store_key(tracking.uri)
    if state.get("run_id") and state.get("store") == store and _is_running(tracking, state["run_id"]):
        return state["run_id"]
    run = tracking.retry(tracking.client.create_run, experiment_id, start_time=state["started_ms"],
                         run_name=run_name, tags={STAGE_TAG: "pipeline", "loraops.pipeline": "true"})
    state.update(run_id=run.info.run_id, store=store)
    _write(layout, state)
    return run.info.run_id


def _is_running(tracking: Tracking, run_id: str) -> bool:
    try:
        return tracking.retry(tracking.client.get_run, run_id).info.status == "RUNNING"
    except Exception:
        return False  # gone (another store, deleted): the pass gets a new run


def end_pipeline_run(tracking: Tracking, run_id: str, status: str) -> None:
    """End the pass's run (FINISHED by ``register``); the next stage starts a new pass."""
    tracking.retry(tracking.client.set_terminated, run_id, status=status)
    state = _read(tracking.layout)
    if state is not None and state.get("run_id") in (run_id, None):
        _pointer_path(tracking.layout).unlink(missing_ok=True)


def forget_pass(layout: Layout, run_id: str) -> None:
    """The pass whose run ``register`` just ended is over; the next stage starts a new one."""
    state = _read(layout)
    if state is not None and state.get("run_id") in (run_id, None):
        _pointer_path(layout).unlink(missing_ok=True)


def fail_pass(layout: Layout, policy: RetryPolicy, stage: str, error: BaseException) -> None:
    """A stage failed: its pass ends, and its MLflow run (if one was made) ends FAILED naming the stage.
    Best effort: an unreachable tracking server must not hide the stage's own error."""
    state = _read(layout)
    _pointer_path(layout).unlink(missing_ok=True)
    if not state or not state.get("run_id"):
        return
    with contextlib.suppress(Exception):
        tracking = connect(layout, policy)
        if state.get("store") == _store_key(tracking.uri) and _is_running(tracking, state["run_id"]):
            first = (str(error).strip().splitlines() or [type(error).__name__])[0][:400]
            tracking.retry(tracking.client.set_tag, state["run_id"], FAILED_STAGE_TAG, f"{stage}: {first}")
            tracking.retry(tracking.client.set_terminated, state["run_id"], status="FAILED")


def _abandon(layout: Layout, policy: RetryPolicy, state: dict[str, Any], why: str) -> None:
    """An earlier pass that never reached ``register``: its run (if any) ends KILLED, saying why."""
    _pointer_path(layout).unlink(missing_ok=True)
    if not state.get("run_id"):
        return
    with contextlib.suppress(Exception):
        tracking = connect(layout, policy)
        if state.get("store") == _store_key(tracking.uri) and _is_running(tracking, state["run_id"]):
            tracking.retry(tracking.client.set_tag, state["run_id"], "loraops.abandoned", why)
            tracking.retry(tracking.client.set_terminated, state["run_id"], status="KILLED")
