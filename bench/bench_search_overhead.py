"""Search trial overhead: every trial loading (for QLoRA quantising) its own base, as before, vs the worker's
resident base (``loraops.training.ResidentBase``), as the search runs now.

Per trial, through the pipeline's ``train``: ``to_first_step_s``, seconds from the trial's start to the start of
its first training step (tokenizer, base or adapter, Trainer set-up); ``model_s``, the model part of it (load +
quantise + adapter before, adapter only after); ``scoring_model_s``, getting the model the trial is scored with
(before: adapter saved, base + adapter loaded by the evaluator; after: ``lora`` scores the adapter in memory,
``qlora`` still saves it and the evaluator loads the full-precision base). Generation itself is unchanged and
not timed. Each (method, mode) runs in a fresh process; trial 1 also pays the process's first imports and, on
the resident base, its one load, so ``steady`` is the median of trials 2..N.

    nice -n 10 python -m bench.bench_search_overhead --base DIR --methods qlora,lora --trials 4 --steps 2 \\
        --out bench/results/search_trial_overhead.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.machine import machine_info

CONFIGS = [{"r": 2, "target_modules": "attention"}, {"r": 8, "target_modules": "mlp"},
           {"r": 4, "target_modules": "attention"}, {"r": 16, "target_modules": "mlp"}]


def run_mode(base: Path, method: str, mode: str, trials: int, steps: int) -> dict:
    """``trials`` trials of ``method`` in this process; ``mode`` is ``reload`` (before) or ``resident`` (now)."""
    import gc

    from transformers import TrainerCallback

    import loraops.training.trainer as trainer_module
    from loraops.config import LoraParams, PrepareParams, TrainParams
    from loraops.data.demo import generate_demo_dataset
    from loraops.evaluation.evaluator import load_model
    from loraops.modeling import load_tokenizer
    from loraops.prepare import prepare
    from loraops.training import ResidentBase, current_memory_mb, peak_memory_mb, train

    rows = generate_demo_dataset(seed=0, train_per_intent=2, test_per_intent=1)
    rendered, _, _ = prepare(rows, load_tokenizer(base), PrepareParams(max_length=384), seed=0)
    splits = {"train": rendered["train"], "val": rendered["val"][:4]}
    params = TrainParams(method=method, max_steps=steps, batch_size=4, warmup_steps=0, logging_steps=1,
                         eval_steps=None, early_stopping_patience=None, save_steps=None, progress_bar=False)
    resident = ResidentBase(base, method) if mode == "resident" else None
    timer = {"model_s": 0.0}

    def timed(fn):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                timer["model_s"] += time.perf_counter() - started
        return wrapper

    # Instrumentation only: the same functions run, with a clock around them.
    trainer_module.build_model = timed(trainer_module.build_model)
    if resident is not None:
        resident.attach = timed(resident.attach)

    class FirstStep(TrainerCallback):
        def __init__(self):
            self.at = None

        def on_step_begin(self, args, state, control, **kwargs):
            if self.at is None:
                self.at = time.perf_counter()

    out = []
    for number in range(trials):
        config = CONFIGS[number % len(CONFIGS)]
        lora = LoraParams(r=config["r"], alpha=8, target_modules=config["target_modules"], use_rslora=True)
        timer["model_s"] = 0.0
        first = FirstStep()
        with tempfile.TemporaryDirectory() as work:
            started = time.perf_counter()
            model, record, _ = train(base, splits, params, 7, 384, Path(work), lora, callbacks=[first],
                                     checkpoints=False, resident=resident)
            trained = time.perf_counter()
            scoring_started = time.perf_counter()
            if resident is not None and method == "lora":
                scoring = resident.inference_model()
            else:
                model.save_pretrained(Path(work) / "adapter", safe_serialization=True)
                if resident is not None:
                    resident.release()
                del model
                gc.collect()
                scoring, _ = load_model(base, Path(work) / "adapter")
            scoring_s = time.perf_counter() - scoring_started
            del scoring
            if resident is not None:
                resident.release()
            gc.collect()
        out.append({"trial": number + 1, **config, "to_first_step_s": first.at - started,
                    "model_s": timer["model_s"], "train_s": trained - first.at, "scoring_model_s": scoring_s,
                    "steps": record.steps})
    steady = out[1:] or out
    return {"method": method, "mode": mode, "trials": out, "peak_rss_mb": peak_memory_mb(),
            "rss_after_mb": current_memory_mb(),
            "steady": {key: statistics.median(t[key] for t in steady)
                       for key in ("to_first_step_s", "model_s", "scoring_model_s")}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--label", help="name of the base in the summary (default: the folder name)")
    parser.add_argument("--methods", default="qlora,lora")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--out", required=True)
    parser.add_argument("--merge", action="store_true", help="add to the runs already in --out")
    parser.add_argument("--note", help="conditions worth keeping with the numbers (e.g. other load)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: method:mode, run in this process
    args = parser.parse_args()
    if args.one:
        method, mode = args.one.split(":")
        print(json.dumps(run_mode(Path(args.base), method, mode, args.trials, args.steps)))
        return
    label = args.label or Path(args.base).name
    out = Path(args.out)
    report = json.loads(out.read_text()) if args.merge and out.is_file() else {
        "benchmark": "search_trial_overhead", "machine": machine_info(), "runs": [], "summary": {}}
    report.setdefault("commands", []).append(" ".join(["python -m bench.bench_search_overhead", *sys.argv[1:]]))
    if args.note:
        report.setdefault("notes", []).append(args.note)
    for method in args.methods.split(","):
        pair = {}
        for mode in ("reload", "resident"):
            cmd = [sys.executable, "-m", "bench.bench_search_overhead", "--base", args.base, "--trials",
                   str(args.trials), "--steps", str(args.steps), "--out", "-", "--one", f"{method}:{mode}"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{method}:{mode} failed:\n{proc.stderr[-3000:]}")
            run = {"base": label, **json.loads(proc.stdout.strip().splitlines()[-1])}
            report["runs"].append(run)
            pair[mode] = run
            print(json.dumps(run), flush=True)
        before, after = pair["reload"]["steady"], pair["resident"]["steady"]
        report["summary"][f"{label}_{method}"] = {
            "trials": args.trials, "steps_per_trial": args.steps,
            "to_first_step_s_before": before["to_first_step_s"], "to_first_step_s_after": after["to_first_step_s"],
            "model_s_before": before["model_s"], "model_s_after": after["model_s"],
            "scoring_model_s_before": before["scoring_model_s"], "scoring_model_s_after": after["scoring_model_s"],
            "overhead_saved_per_trial_s": (before["to_first_step_s"] + before["scoring_model_s"])
                                          - (after["to_first_step_s"] + after["scoring_model_s"]),
            "first_trial_to_first_step_s_after": pair["resident"]["trials"][0]["to_first_step_s"],
            "peak_rss_mb_before": pair["reload"]["peak_rss_mb"], "peak_rss_mb_after": pair["resident"]["peak_rss_mb"]}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["summary"], indent=2))


if __name__ == "__main__":
    main()
