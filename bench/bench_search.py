"""Search benchmark: the shipped search (TPE + successive halving) against the exhaustive grid it searches.

1. **Grid, measured.** Every configuration of the space (ranks x target modules, learning rate and
   rehearsal share fixed) is trained and scored once by the real search code (``loraops.search``, Optuna's
   BruteForceSampler, no pruner) on a project whose ``prepare`` and ``rehearsal`` stages have run: val loss
   at every rung, val accuracy with per-item correctness, retention-dev drop.
2. **Search, replayed.** For each seed, a study built exactly as the search stage builds it (the shipped
   sampler and pruner, :func:`loraops.search.study._create_study`) runs under the search's own budget rule
   (:func:`loraops.search.study.has_room`) with half the grid's steps; each trial replays the measured grid
   trial of the configuration it draws (its rung losses go to the pruner, so a pruned trial costs only the
   steps it reached) and the pick is made by the search's own rule (:func:`loraops.search.select`).
   Training is deterministic for a configuration (same seed, same data), so a replayed trial is what a
   fresh one would measure; what the replay measures is the search algorithm: how many steps it spends and
   how far its pick is from the grid's (a tabular benchmark, as HPO benchmarks do).

Summary: ``configurations``, ``seeds``, ``search_steps_share_of_grid`` (mean over seeds; goal <= 0.5) and
``mean_regret`` (the grid's best feasible val accuracy minus that of the configuration the search picked,
mean over seeds; goal <= 0.01), plus the regret against the grid's own pick by the same rule.

    flock /work/heavy.lock python -m bench.bench_search --project /work/exp --out bench/results/search_demo.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench.machine import machine_info

REPO = Path(__file__).resolve().parents[1]


def space(args: argparse.Namespace) -> list[str]:
    values = {"enabled": True, "ranks": args.ranks, "target_modules": args.targets,
              "learning_rate": [args.lr, args.lr], "rehearsal_shares": [args.share], "max_steps": args.steps,
              "eval_steps": args.eval_steps, "val_items": args.val_items, "total_steps": None}
    return [f"search.{k}={json.dumps(v)}" for k, v in values.items()]


def run_grid(layout, params) -> dict:
    """The real search over every configuration (bruteforce, no pruner); resumes an interrupted grid."""
    from loraops.search import trial_results
    from loraops.search.run import prepare_search, run_workers
    from loraops.search.study import open_study
    from loraops.search.trial import BASE_ATTR

    started = time.perf_counter()
    prepare_search(params, layout)
    run_workers(params, layout)
    study = open_study(params, layout)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    results = trial_results(study)
    return {"seconds": time.perf_counter() - started, "results": results,
            "rungs": {r.number: dict(trials[r.number].intermediate_values) for r in results},
            "base": study.user_attrs.get(BASE_ATTR)}


def config_key(params: dict) -> tuple:
    return int(params["r"]), str(params["target_modules"])


def replay(params, layout, grid: dict, seed: int) -> dict:
    """One search with ``seed`` whose trials replay the grid's measurements (module docstring)."""
    import optuna
    from optuna.storages import InMemoryStorage

    from loraops.search import study as study_mod
    from loraops.search import trial_results

    by_config = {config_key(r.params): r for r in grid["results"] if r.state == "COMPLETE"}
    search_params = params.model_copy(update={"project": params.project.model_copy(update={"seed": seed}),
                                              "search": params.search.model_copy(update={"seed": seed})})
    study = study_mod._create_study(search_params, layout, 0, InMemoryStorage())

    def objective(trial):
        lora, learning_rate, share = study_mod.suggest(trial, search_params)
        measured = by_config[(lora.r, str(lora.target_modules))]
        trial.set_user_attr("lora", lora.model_dump())
        trial.set_user_attr("learning_rate", learning_rate)
        trial.set_user_attr("rehearsal_share", share)
        trial.set_user_attr("trainable_params", measured.trainable_params)
        for step, value in sorted(grid["rungs"][measured.number].items()):
            trial.set_user_attr("steps", int(step))
            trial.report(value, int(step))
            if trial.should_prune():
                raise optuna.TrialPruned()
        trial.set_user_attr("steps", measured.steps)
        trial.set_user_attr("val_correct", list(measured.correct))
        trial.set_user_attr("retention_dev", measured.retention)
        trial.set_user_attr("retention_drop", measured.retention_drop)
        study_mod.retention_constraint(trial, measured.retention_drop, search_params)
        return measured.metric

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    while study_mod.has_room(study_mod.budget_state(study, search_params), search_params):
        study.optimize(objective, n_trials=1)
    return {"seed": seed, "results": trial_results(study)}


def pick(results, params, base) -> dict:
    from loraops.core import LoraopsError
    from loraops.search import select
    from loraops.search.select import Bootstrap

    e = params.eval
    try:
        chosen = select(results, params.promote.max_retention_drop,
                        base["val_correct"] if params.search.beat_base and base else None,
                        Bootstrap(e.bootstrap_samples, e.confidence, e.bootstrap_seed)).chosen
    except LoraopsError as exc:
        return {"error": str(exc)}
    return {"trial": chosen.number, "r": chosen.params["r"], "target_modules": chosen.params["target_modules"],
            "val_accuracy": chosen.metric, "trainable_params": chosen.trainable_params,
            "retention_drop": chosen.retention_drop}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True, help="a project folder after prepare + rehearsal")
    parser.add_argument("--ranks", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--targets", nargs="+", default=["attention", "mlp", "all-linear"])
    parser.add_argument("--lr", type=float, default=None, help="default: train.learning_rate")
    parser.add_argument("--share", type=float, default=None, help="default: train.rehearsal.share")
    parser.add_argument("--steps", type=int, default=30, help="training steps per configuration")
    parser.add_argument("--eval-steps", type=int, default=10)
    parser.add_argument("--val-items", type=int, default=48)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "search_demo.json")
    args = parser.parse_args()

    from loraops.config import load_params
    from loraops.core import Layout

    layout = Layout(args.project.resolve())
    shipped = load_params(layout.params_file)
    args.lr = shipped.train.learning_rate if args.lr is None else args.lr
    args.share = shipped.train.rehearsal.share if args.share is None else args.share
    configs = len(args.ranks) * len(args.targets)
    common = space(args)
    grid_params = load_params(layout.params_file, common + [f"search.n_trials={configs}", "search.sampler=bruteforce",
                                                            "search.pruner=none"])
    grid = run_grid(layout, grid_params)
    done = [r for r in grid["results"] if r.state == "COMPLETE"]
    if len(done) < configs:
        raise SystemExit(f"grid: {len(done)} of {configs} configurations completed; rerun to resume")
    grid_steps = sum(r.steps for r in done)
    feasible = [r for r in done if r.retention_drop is not None
                and r.retention_drop <= shipped.promote.max_retention_drop + 1e-9]
    grid_best = max((r.metric for r in feasible), default=None)
    grid_pick = pick(grid["results"], grid_params, grid["base"])
    # The shipped sampler and pruner; the search may use half the grid's steps and at most one trial per config.
    search_params = load_params(layout.params_file, common + [f"search.n_trials={configs}",
                                                              f"search.total_steps={grid_steps // 2}"])
    runs = []
    for seed in args.seeds:
        out = replay(search_params, layout, grid, seed)
        steps = sum(r.steps for r in out["results"])
        chosen = pick(out["results"], search_params, grid["base"])
        regret = (grid_best - chosen["val_accuracy"]) if grid_best is not None and "val_accuracy" in chosen else None
        runs.append({"seed": seed, "steps": steps, "steps_share_of_grid": steps / grid_steps, "pick": chosen,
                     "regret": regret,
                     "regret_vs_grid_pick": (grid_pick["val_accuracy"] - chosen["val_accuracy"])
                     if "val_accuracy" in grid_pick and "val_accuracy" in chosen else None,
                     "trials": [{"number": r.number, "state": r.state, "r": r.params.get("r"),
                                 "target_modules": r.params.get("target_modules"), "steps": r.steps,
                                 "val_accuracy": r.metric} for r in out["results"]]})
    regrets = [r["regret"] for r in runs if r["regret"] is not None]
    summary = {"configurations": configs, "seeds": len(args.seeds), "sampler": search_params.search.sampler,
               "pruner": search_params.search.pruner, "steps_per_configuration": args.steps,
               "grid_total_steps": grid_steps,
               "search_steps_share_of_grid": sum(r["steps_share_of_grid"] for r in runs) / len(runs),
               "mean_regret": sum(regrets) / len(regrets) if len(regrets) == len(runs) else None,
               "grid_best_feasible_val_accuracy": grid_best, "grid_feasible_configurations": len(feasible),
               "grid_pick_by_rule": grid_pick, "grid_seconds": grid["seconds"]}
    summary["goals_met"] = (summary["search_steps_share_of_grid"] <= 0.5 and summary["mean_regret"] is not None
                            and summary["mean_regret"] <= 0.01 + 1e-9)
    result = {"benchmark": "search (grid measured, search replayed)", "machine": machine_info(),
              "project": str(layout.root), "settings": {k: str(v) if isinstance(v, Path) else v
                                                        for k, v in vars(args).items()},
              "base_val": {k: v for k, v in (grid["base"] or {}).items() if k != "val_correct"},
              "summary": summary, "runs": runs,
              "grid": [{"number": r.number, "r": r.params.get("r"), "target_modules": r.params.get("target_modules"),
                        "val_accuracy": r.metric, "retention_drop": r.retention_drop, "steps": r.steps,
                        "trainable_params": r.trainable_params, "rungs": grid["rungs"][r.number]}
                       for r in grid["results"]]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
