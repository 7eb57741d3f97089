"""Search benchmark: Optuna search (successive halving, half the grid's steps) vs an exhaustive grid.

Both run the same library code (``loraops.search.search_stage``) on the same prepared CLINC150 domain with the
real base model, the same space and the same per-configuration step budget; the grid is the search with
Optuna's BruteForceSampler, no pruner and room for every configuration. Reported: total training steps,
each winner's val accuracy and rank, and whether the goal holds (search pick within 1 point of the grid's
best using at most half of the grid's steps).

    flock /work/heavy.lock python -m bench.bench_search --base /work/main/models/base \\
        --data /work/shared/datasets/clinc150/data_full.json --domain banking \\
        --out bench/results/search_clinc150.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from bench.machine import machine_info

REPO = Path(__file__).resolve().parents[1]


def space(args: argparse.Namespace) -> dict:
    return {"ranks": args.ranks, "target_modules": args.targets, "learning_rate": [args.lr, args.lr],
            "max_steps": args.steps, "eval_steps": args.eval_steps, "val_items": args.val_items,
            "rehearsal_shares": [0.0], "heartbeat_seconds": 30, "enabled": True}


def project(args: argparse.Namespace) -> Path:
    """A loraops project over one CLINC150 domain, run up to ``prepare`` through the library stages."""
    import yaml

    from loraops.config import load_params
    from loraops.core import Layout
    from loraops.pipeline import run_stage

    root = Path(args.work).resolve()
    if args.fresh:
        shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "evals", root / "evals", dirs_exist_ok=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"]["base"] = str(Path(args.base).resolve())
    params["data"].update({"source": "clinc150", "path": str(Path(args.data).resolve()),
                           "clinc150_domains": [args.domain]})
    params["train"].update({"method": args.method, "batch_size": args.batch, "warmup_steps": 2})
    params["eval"]["batch_size"] = 16
    params["registry"].update({"experiment": "bench-search", "model_name": "bench-search"})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    layout, loaded = Layout(root), load_params(root / "params.yaml")
    for name in ("base_model", "ingest", "validate", "prepare"):
        if name == "base_model" and (layout.base_model_dir / "config.json").is_file():
            continue
        run_stage(name, loaded, layout)
    return root


def run(root: Path, overrides: list[str], label: str) -> dict:
    from loraops.config import load_params
    from loraops.core import Layout, read_json
    from loraops.search import open_study, search_stage, trial_results

    params = load_params(root / "params.yaml", overrides)
    started = time.perf_counter()
    choice = search_stage(params, Layout(root))
    seconds = time.perf_counter() - started
    trials = trial_results(open_study(params, Layout(root)))
    shutil.copy(root / "models" / "search" / "trials.csv", root / f"trials-{label}.csv")
    return {"choice": choice, "seconds": seconds, "trials": [t.__dict__ for t in trials],
            "chosen_copy": read_json(Layout(root).search_choice)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--domain", default="banking")
    parser.add_argument("--work", default=str(REPO / "bench" / "work" / "search_clinc150"))
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "search_clinc150.json"))
    parser.add_argument("--ranks", type=int, nargs="+", default=[2, 8, 32])
    parser.add_argument("--targets", nargs="+", default=["attention", "all-linear"])
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--steps", type=int, default=20, help="training steps per configuration")
    parser.add_argument("--eval-steps", type=int, default=10)
    parser.add_argument("--val-items", type=int, default=48)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--method", default="qlora")
    parser.add_argument("--reduction-factor", type=int, default=2)
    # BruteForce draws each configuration at most once (random order); TPE's first draws are random and may
    # repeat a configuration, which a 6-point space cannot afford.
    parser.add_argument("--search-sampler", default="bruteforce", choices=["bruteforce", "tpe", "random"])
    parser.add_argument("--fresh", action="store_true", help="start from an empty work folder")
    args = parser.parse_args()

    root = project(args)
    configs = len(args.ranks) * len(args.targets)
    grid_steps_budget = configs * args.steps
    common = [f"search.{k}={json.dumps(v)}" for k, v in space(args).items()]
    search = run(root, common + [f"search.n_trials={configs}", f"search.total_steps={grid_steps_budget // 2}",
                                 f"search.sampler={args.search_sampler}", "search.pruner=successive_halving",
                                 f"search.reduction_factor={args.reduction_factor}"], "search")
    grid = run(root, common + [f"search.n_trials={configs}", "search.total_steps=null",
                               "search.sampler=bruteforce", "search.pruner=none"], "grid")
    grid_best = max(t["metric"] for t in grid["trials"] if t["state"] == "COMPLETE")
    s_choice, g_choice = search["choice"], grid["choice"]
    summary = {
        "configurations": configs, "steps_per_configuration": args.steps,
        "search_total_steps": s_choice["total_steps"], "grid_total_steps": g_choice["total_steps"],
        "search_steps_share_of_grid": s_choice["total_steps"] / g_choice["total_steps"],
        "search_pick": {"metric": s_choice["metric"], "r": s_choice["lora"]["r"],
                        "target_modules": s_choice["lora"]["target_modules"],
                        "trainable_params": s_choice["trainable_params"], "trial": s_choice["trial"]},
        "grid_pick_by_rule": {"metric": g_choice["metric"], "r": g_choice["lora"]["r"],
                              "target_modules": g_choice["lora"]["target_modules"],
                              "trainable_params": g_choice["trainable_params"]},
        "grid_best_metric": grid_best,
        "search_trials": s_choice["trials"], "grid_trials": g_choice["trials"],
        "search_seconds": search["seconds"], "grid_seconds": grid["seconds"],
    }
    summary["goal_within_1_point"] = s_choice["metric"] >= grid_best - 0.01 - 1e-9
    summary["goal_half_steps"] = s_choice["total_steps"] <= g_choice["total_steps"] / 2
    summary["goal_holds"] = summary["goal_within_1_point"] and summary["goal_half_steps"]
    result = {"benchmark": "search", "machine": machine_info(), "task": f"clinc150/{args.domain}",
              "settings": {**vars(args), "metric": "val accuracy by generation on the first val_items val rows"},
              "summary": summary, "search": search, "grid": grid}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
