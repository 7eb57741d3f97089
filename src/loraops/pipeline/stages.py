"""The DAG: each stage is one function of the package that implements it, taking (params, layout).

``loraops stage NAME`` (what ``dvc.yaml`` runs) and the Prefect flows in ``flows/`` both call
:func:`run_stage`; neither holds step logic of its own, and neither does this table.
"""

from __future__ import annotations

from typing import Callable

from loraops import data, evaluation, modeling, prepare, registry, rehearsal, search, training, validation
from loraops.config import Params
from loraops.core import ConfigError, Layout, StageOrderError
from loraops.core.allocator import release_free_memory
from loraops.core.distributed import is_main, world_size
from loraops.core.pipeline_run import begin_stage, fail_pass, pipeline_run_id, start_pass
from loraops.core.tracking import connect


def preflight(params: Params, layout: Layout) -> None:
    """Checks that need no heavy work, run before anything starts, so bad input fails at once."""
    modeling.classify_reference(params.model, layout.root)
    if params.data.source != "demo":
        data.source_file(params.data, layout.root)


# What ``accelerate launch`` / ``torchrun`` may run on several processes: one model trained with DDP, written
# by rank 0 (loraops.training). Every other stage would run once per process and race on its outputs.
MULTI_PROCESS_STAGES = ("train", "baseline")

# The DAG, in order. dvc.yaml and the Prefect flow follow this order (tests check both).
STAGES: dict[str, Callable[[Params, Layout], dict]] = {
    "base_model": modeling.base_model_stage, "ingest": data.ingest_stage, "validate": validation.validate_stage,
    # After prepare: bad data fails in seconds, before the base model spends minutes answering the prompts.
    "prepare": prepare.prepare_stage, "rehearsal": rehearsal.rehearsal_stage, "search": search.search_stage,
    "train": training.train_stage,
    "baseline": training.baseline_stage, "evaluate": evaluation.evaluate_stage, "register": registry.register_stage,
}
PIPELINE = tuple(STAGES)


def run_stage(name: str, params: Params, layout: Layout) -> dict:
    """Run one stage as part of the current pass through the DAG (its MLflow run: core.pipeline_run)."""
    if name not in STAGES:
        raise StageOrderError(f"unknown stage {name!r}; stages are {', '.join(PIPELINE)}")
    if world_size() > 1 and name not in MULTI_PROCESS_STAGES:
        raise ConfigError(f"stage {name} runs in one process; only {' and '.join(MULTI_PROCESS_STAGES)} run "
                          f"under a launcher ({world_size()} processes here)")
    preflight(params, layout)
    try:
        if not is_main():  # the pass's record (and its MLflow run) is rank 0's
            return STAGES[name](params, layout)
        begin_stage(layout, params.registry, name, PIPELINE.index(name))
        try:
            return STAGES[name](params, layout)
        except BaseException as exc:
            fail_pass(layout, params.registry, name, exc)
            raise
    finally:
        # Every way of running a stage (CLI, dvc repro, the Prefect flows) comes through here: what the stage
        # freed goes back to the system, so the next stage in this process does not start on top of it.
        release_free_memory()


def open_pipeline_run(params: Params, layout: Layout) -> str:
    """The Prefect flow's first step: a new pass whose MLflow run exists, and shows as running, from now on."""
    start_pass(layout, params.registry)
    tracking = connect(layout, params.registry)
    return pipeline_run_id(tracking, tracking.experiment_id(params.registry.experiment), params.project.name)
