"""The rank search: an Optuna study over LoRA rank, target modules, learning rate and rehearsal share, whose
pick ``train`` uses: the smallest feasible adapter (retention-dev drop within the gate) as good as the best.

``search_stage`` is the whole stage; ``prepare_search`` / ``run_worker`` / ``finish_search`` are its three
parts, which the Prefect flow runs as separate tasks (``n_jobs`` workers on one study), or as flow runs of a
deployment on other machines (``run_shared_worker``).
"""

from loraops.search.report import read_table
from loraops.search.run import (finish_search, prepare_search, require_shared_storage, run_shared_worker,
                                run_worker, run_worker_isolated, run_workers, search_stage)
from loraops.search.select import (Bootstrap, NoCompletedTrial, NoFeasibleTrial, NoGainOverBase, Selection,
                                   TrialResult, pareto_front, select)
from loraops.search.study import open_study, study_name, trial_results

__all__ = ["Bootstrap", "NoCompletedTrial", "NoFeasibleTrial", "NoGainOverBase", "Selection", "TrialResult",
           "finish_search", "open_study", "pareto_front", "prepare_search", "read_table", "require_shared_storage",
           "run_shared_worker", "run_worker", "run_worker_isolated", "run_workers", "search_stage", "select",
           "study_name", "trial_results"]
