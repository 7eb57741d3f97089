"""Evaluation speed: 500 test items through the evaluator with the real SmolLM2 on this machine (goal <= 180 s).

Items: a seeded sample of 500 CLINC150 test utterances (all domains, 150 intents), rendered exactly as the
``prepare`` stage renders them. The timed span is one :func:`loraops.evaluation.run_model` call without
retention: model load, batched greedy generation (left padding, prompts grouped by length, max new
tokens = longest answer + 2) and the teacher-forced perplexity pass. The retention set (52 prompts) is
timed on its own, since it does not grow with the test set.

    flock /work/heavy.lock python -m bench.bench_eval --base /work/main/models/base [--batch-size 16 32]
        [--adapter DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

from bench.machine import machine_info

REPO = Path(__file__).resolve().parents[1]
CLINC = REPO.parent / "shared" / "datasets" / "clinc150" / "data_full.json"
GOAL_SECONDS = 180.0


def sample_rows(base: Path, items: int, seed: int) -> list[dict]:
    from loraops.config import DataParams, PrepareParams
    from loraops.data import ingest, render_row
    from loraops.modeling import load_tokenizer

    records = ingest(DataParams(source="clinc150", path=str(CLINC)), REPO, seed=seed)
    labels = sorted({r["label"] for r in records if r["split"] == "train"})
    test = [r for r in records if r["split"] == "test"]
    tokenizer = load_tokenizer(base)
    return [render_row(r, labels, tokenizer, PrepareParams()) for r in random.Random(seed).sample(test, items)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=REPO / "models" / "base")
    parser.add_argument("--adapter", type=Path, default=None)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[32])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "eval_speed.json")
    args = parser.parse_args()

    from loraops.config import EvalParams
    from loraops.evaluation import generate_answers, load_model, retention_prompts, run_model

    rows = sample_rows(args.base, args.items, args.seed)
    runs = []
    for batch_size in args.batch_size:
        load_before = os.getloadavg()[0]
        started, cpu_started = time.perf_counter(), time.process_time()
        result = run_model(args.base, rows, batch_size, REPO, adapter_dir=args.adapter,
                           params=EvalParams(batch_size=batch_size, retention=False))
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        metrics = result["metrics"]
        model, tokenizer = load_model(args.base, args.adapter)
        started = time.perf_counter()
        generate_answers(model, tokenizer, retention_prompts(tokenizer), batch_size, max_new_tokens=24)
        retention_s = time.perf_counter() - started
        runs.append({"batch_size": batch_size, "seconds": round(seconds, 2),
                     "items_per_second": round(len(rows) / seconds, 2),
                     "generate_seconds": round(metrics["seconds"], 2), "accuracy": metrics["accuracy"],
                     "perplexity": metrics["perplexity"], "retention_set_seconds": round(retention_s, 2),
                     "within_goal": seconds <= GOAL_SECONDS,
                     # CPU time of this process (all its threads): on an idle machine with T torch threads
                     # the wall time would be about cpu_seconds / T at best.
                     "cpu_seconds": round(cpu_seconds, 2), "torch_threads": __import__("torch").get_num_threads(),
                     "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]})
        print(json.dumps(runs[-1]), flush=True)
    best = min(runs, key=lambda r: r["seconds"])
    result = {
        "benchmark": f"evaluate {len(rows)} CLINC150 test items with the real model ({'adapter' if args.adapter else 'base'})",
        "reproduce": (f"flock /work/heavy.lock python -m bench.bench_eval --base {args.base} --batch-size "
                      + " ".join(map(str, args.batch_size)) + (f" --adapter {args.adapter}" if args.adapter else "")),
        "items": len(rows), "goal_seconds": GOAL_SECONDS, "seconds": best["seconds"],
        "items_per_second": best["items_per_second"], "best_batch_size": best["batch_size"],
        "within_goal": best["within_goal"], "runs": runs,
        "note": "CPU shared with other jobs while measuring: see load_average_1min (2 cores).",
        "machine": machine_info(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
