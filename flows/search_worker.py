"""One worker of the rank search as a flow of its own, so a work pool can run it on another machine.

The pipeline's search stage (flows/pipeline.py) starts ``search.n_jobs`` flow runs of this flow's deployment
(``search.workers_deployment``, prefect.yaml's ``search-worker``) when that param is set. They share one
Optuna study through the storage the worker's environment names (``LORAOPS_OPTUNA_STORAGE``: its password
never travels in the flow run's parameters). The flow holds no logic: the library's worker checks that it
reaches the study the pipeline prepared, then runs trials until the study's budget is spent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from loraops import search
from loraops.config import SEARCH_WORKER_FLOW, load_params, parse_params
from loraops.core import Layout


@flow(name=SEARCH_WORKER_FLOW, log_prints=True)
def search_worker(root: str = ".", worker: int = 0, study: str | None = None,
                  params: dict[str, Any] | None = None) -> dict:
    """Run the search's trials in ``root`` as worker ``worker`` (its sampler seed is the search seed plus it)
    until the study's budget is spent. ``params``: the pipeline's params as it ran them (default: the
    project's params.yaml); ``study``: the study the pipeline prepared (default: the one the inputs name)."""
    layout = Layout(Path(root).resolve())
    loaded = (parse_params(params, f"flow run parameter 'params' of {SEARCH_WORKER_FLOW}") if params is not None
              else load_params(layout.params_file))
    result = search.run_shared_worker(loaded, layout, worker, study)
    get_run_logger().info("search worker %d started %d trial(s); the study has %d finished", worker,
                          result["trials_started"], result["finished"])
    return result
