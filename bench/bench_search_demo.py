"""Time the search stage on the demo with the real SmolLM2 (2 trials x 20 steps, no pruning, no rehearsal).

Prints the seconds per stage, the choice (or the one-line failure), the base reference and each trial's
user attrs (val accuracy, retention-dev drop, ...); the numbers in README's *Rank search* come from it.
Run under the shared lock: ``flock /work/heavy.lock python bench/bench_search_demo.py``.
"""

import json
import shutil
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    from loraops.config import load_params
    from loraops.core import Layout
    from loraops.pipeline import run_stage
    from loraops.search import open_study

    root = REPO / "bench" / "work" / "demo_search"
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "evals", root / "evals", dirs_exist_ok=True)
    (root / "src/loraops/data").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "src/loraops/data/demo.py", root / "src/loraops/data/demo.py")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["search"].update({"n_trials": 2, "pruner": "none", "rehearsal_shares": [0.0]})
    params["registry"]["experiment"] = "bench-search-demo"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    layout, loaded = Layout(root), load_params(root / "params.yaml")
    seconds = {}
    for name in ("base_model", "ingest", "validate", "prepare"):
        started = time.perf_counter()
        run_stage(name, loaded, layout)
        seconds[name] = time.perf_counter() - started
    started = time.perf_counter()
    try:
        choice = run_stage("search", loaded, layout)
    except Exception as exc:  # noqa: BLE001 - the one-line failure is a result too
        choice = {"error": str(exc)}
    seconds["search"] = time.perf_counter() - started
    study = open_study(loaded, layout)
    trials = [{"n": t.number, "state": t.state.name, "start": t.datetime_start.isoformat(),
               "end": t.datetime_complete.isoformat() if t.datetime_complete else None,
               **{k: v for k, v in t.user_attrs.items() if k != "val_correct"}} for t in study.get_trials()]
    base = {k: v for k, v in study.user_attrs.get("base_reference", {}).items() if k != "val_correct"}
    print(json.dumps({"seconds": seconds, "choice": choice, "base": base, "trials": trials}, indent=1, default=str))


if __name__ == "__main__":
    main()
