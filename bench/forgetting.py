"""Forgetting with and without rehearsal: the same training steps, scored on test accuracy and retention.

Works on a project whose ``prepare`` and ``rehearsal`` stages have run (``loraops stage prepare`` and
``loraops stage rehearsal`` in a clone of this repo; for CLINC150 banking, a clone whose ``params.yaml`` sets
``data.source: clinc150``, ``data.path: ../shared/datasets/clinc150/data_full.json`` and
``data.clinc150_domains: [banking]``). Each ``--run`` is one QLoRA adapter trained through the pipeline's own
trainer on the task's train split mixed with rehearsal pairs (``loraops.training.mix_rehearsal``) and
scored through the evaluator (constrained labels, retention on the test pool): ``accuracy`` with its
bootstrap interval, ``retention_drop`` (base retention - adapter retention) with a paired-bootstrap
interval, ``train_seconds``. Results are appended as each run finishes, so an interrupted run keeps its rows.

    flock /work/heavy.lock python -m bench.forgetting --project /work/exp --dataset demo \\
        --run share=0.0,steps=60 --run share=0.5,steps=60 --out bench/results/forgetting.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from bench.machine import machine_info

REPO = Path(__file__).resolve().parents[1]
RUN_KEYS = {"share": float, "steps": int, "lr": float, "r": int, "targets": str, "warmup": int, "seed": int}


def parse_run(text: str) -> dict:
    run = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key not in RUN_KEYS:
            raise SystemExit(f"--run {text}: unknown key {key!r} (known: {', '.join(RUN_KEYS)})")
        run[key] = RUN_KEYS[key](value)
    return run


def score_run(layout, params, run: dict, base_retained: list[int], work: Path) -> dict:
    from loraops.data import load_labels, load_splits
    from loraops.evaluation import run_model
    from loraops.evaluation.uncertainty import mean_interval, paired_difference
    from loraops.training import load_rehearsal_rows, mix_rehearsal, train

    lora = params.train.lora.model_copy(update={k2: run[k1] for k1, k2 in (("r", "r"), ("targets", "target_modules"))
                                                 if k1 in run})
    train_params = params.train.model_copy(update={
        "lora": lora, "max_steps": run.get("steps", params.train.max_steps),
        "learning_rate": run.get("lr", params.train.learning_rate),
        "warmup_steps": run.get("warmup", params.train.warmup_steps), "save_steps": None,
        "early_stopping_patience": None, "eval_steps": None, "progress_bar": False})
    seed = run.get("seed", params.project.seed)
    splits = load_splits(layout)
    share = run.get("share", params.train.rehearsal.share)
    train_rows = mix_rehearsal(splits["train"], load_rehearsal_rows(layout), share, seed)
    model, record, _ = train(layout.base_model_dir, {"train": train_rows, "val": splits["val"][:16]}, train_params,
                             seed, params.prepare.max_length, work / "run", lora, checkpoints=False)
    adapter = work / "adapter"
    shutil.rmtree(adapter, ignore_errors=True)
    model.save_pretrained(adapter, safe_serialization=True)
    del model
    ev = params.eval
    result = run_model(layout.base_model_dir, splits["test"], ev.batch_size, layout.root, adapter, params=ev,
                       labels=load_labels(layout), unconstrained=False)
    correct = [int(bool(i["correct"])) for i in result["items"]]
    retained = [int(bool(i["retained"])) for i in result["retention_items"]]
    boot = (ev.bootstrap_samples, ev.confidence, ev.bootstrap_seed)
    return {**run, "rehearsal_share": share, "steps": record.steps, "learning_rate": record.learning_rate,
            "r": lora.r, "target_modules": lora.target_modules,
            "rehearsal_rows": len(train_rows) - len(splits["train"]),
            "accuracy": mean_interval(correct, *boot), "retention": sum(retained) / len(retained),
            "retention_drop": paired_difference(base_retained, retained, *boot),
            "train_seconds": record.train_seconds, "train_loss": record.train_loss}


def base_retention(layout, params) -> list[int]:
    from loraops.evaluation import generate_answers, retention_prompts, score_retention
    from loraops.evaluation.evaluator import load_model

    model, tokenizer = load_model(layout.base_model_dir)
    answers = generate_answers(model, tokenizer, retention_prompts(tokenizer, "test"), params.eval.batch_size,
                               max_new_tokens=params.eval.retention_max_new_tokens)
    return [int(bool(i["retained"])) for i in score_retention(answers, "test")[1]]


GOAL_MAX_DROP = 0.05
GOAL_MAX_ACCURACY_COST = 0.02


def summarise(runs: list[dict]) -> dict:
    """Each rehearsal run against the run without rehearsal on the same dataset, steps, rank, targets and lr.

    The goal is a retention drop of at most 0.05 at an accuracy within 2 points of the run without it.
    """
    def same_budget(row: dict) -> tuple:
        return row["dataset"], row["steps"], row.get("r"), row.get("target_modules"), row.get("learning_rate")

    without = {same_budget(row): row for row in runs if row["rehearsal_share"] == 0.0}
    pairs = []
    for row in runs:
        plain = without.get(same_budget(row))
        if row["rehearsal_share"] == 0.0 or plain is None:
            continue
        cost = plain["accuracy"]["mean"] - row["accuracy"]["mean"]
        drop = row["retention_drop"]["mean"]
        pairs.append({
            "dataset": row["dataset"], "steps": row["steps"], "r": row.get("r"),
            "target_modules": row.get("target_modules"), "learning_rate": row.get("learning_rate"),
            "rehearsal_share": row["rehearsal_share"],
            "retention_drop_without": plain["retention_drop"]["mean"], "retention_drop": drop,
            "accuracy_without": plain["accuracy"]["mean"], "accuracy": row["accuracy"]["mean"],
            "accuracy_cost": cost,
            "goal_met": drop <= GOAL_MAX_DROP and cost <= GOAL_MAX_ACCURACY_COST,
        })
    return {"goal": f"retention drop <= {GOAL_MAX_DROP} with accuracy within {GOAL_MAX_ACCURACY_COST} of the run "
                    "without rehearsal", "pairs": pairs, "goal_met_by_any": any(p["goal_met"] for p in pairs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True, help="a project folder after prepare + rehearsal")
    parser.add_argument("--dataset", required=True, help="name written in each row (demo, clinc150-banking, ...)")
    parser.add_argument("--run", action="append", required=True, type=parse_run,
                        help="share=S,steps=N[,lr=X,r=R,targets=T,warmup=W,seed=K]; unset keys take params.yaml's")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "forgetting.json")
    args = parser.parse_args()

    from loraops.config import load_params
    from loraops.core import Layout

    layout = Layout(args.project.resolve())
    params = load_params(layout.params_file)
    out = json.loads(args.out.read_text()) if args.out.is_file() else {"benchmark": "forgetting", "runs": []}
    work = layout.cache_dir / "bench-forgetting"
    started = time.perf_counter()
    base = base_retained = None
    for run in args.run:
        if base_retained is None:
            base_retained = base_retention(layout, params)
            base = sum(base_retained) / len(base_retained)
        row = {"dataset": args.dataset, "base_retention": base, **score_run(layout, params, run, base_retained, work)}
        out["runs"].append(row)
        out["machine"] = machine_info()
        out["summary"] = summarise(out["runs"])
        out["reproduce"] = "python -m bench.forgetting --project DIR --dataset NAME --run ... (module docstring)"
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")
        print(json.dumps({k: row[k] for k in ("dataset", "rehearsal_share", "steps", "learning_rate", "r",
                                              "target_modules", "accuracy", "retention_drop", "train_seconds")}),
              flush=True)
    print(f"{len(args.run)} runs in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
