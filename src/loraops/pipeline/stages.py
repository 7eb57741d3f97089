"""The DAG: each stage is one function of the package that implements it, taking (params, layout).

``loraops stage NAME`` (what ``dvc.yaml`` runs) and the Prefect flows in ``flows/`` both call
:func:`run_stage`; neither holds step logic of its own, and neither does this table.
"""

from __future__ import annotations

from typing import Callable

from loraops import data, evaluation, modeling, prepare, registry, search, training, validation
from loraops.config import Params
from loraops.core import Layout, StageOrderError


def preflight(params: Params, layout: Layout) -> None:
    """Checks that need no heavy work, run before anything starts, so bad input fails at once."""
    modeling.classify_reference(params.model, layout.root)
    if params.data.source != "demo":
        data.source_file(params.data, layout.root)


# The DAG, in order. dvc.yaml and the Prefect flow follow this order (tests check both).
STAGES: dict[str, Callable[[Params, Layout], dict]] = {
    "base_model": modeling.base_model_stage, "ingest": data.ingest_stage, "validate": validation.validate_stage,
    "prepare": prepare.prepare_stage, "search": search.search_stage, "train": training.train_stage,
    "baseline": training.baseline_stage, "evaluate": evaluation.evaluate_stage, "register": registry.register_stage,
}
PIPELINE = tuple(STAGES)


def run_stage(name: str, params: Params, layout: Layout) -> dict:
    if name not in STAGES:
        raise StageOrderError(f"unknown stage {name!r}; stages are {', '.join(PIPELINE)}")
    preflight(params, layout)
    return STAGES[name](params, layout)
