"""How each cost grows with its input: validation against rows, evaluation against batch size and test-set
size, and the search against ``n_trials``. Writes ``bench/results/scaling.json``.

    flock /work/heavy.lock python -m bench.scaling --base models/base [--parts validation evaluation search]

* **validation**: :func:`loraops.validation.validate_dataset` (frames, every GX suite, checkpoints, Data Docs,
  the token check with the base's tokenizer when ``--base`` is given) on 15k, 150k and 1.5M rows made from
  CLINC150's utterances with seeded variation (each row: an utterance with a few words added or swapped from a
  fixed word list, and a number, so that rows are distinct as real data mostly is; splits 80/10/10). Each size
  runs in a fresh process, so its time includes importing great_expectations and its peak RSS is its own.
  Goal: 1.5M rows in at most 60 s and 4 GB.
* **evaluation**: :func:`loraops.evaluation.run_model` (generation with constrained decoding and the NLL pass)
  with the real base on CLINC150 test rows, rendered as the prepare stage renders them: items/s against the
  batch size at a fixed test-set size, and against the test-set size at a fixed batch size.
* **search**: the search stage's library calls on the tests' tiny Llama (plain LoRA, no pruning, a fixed number
  of steps per trial) for several ``n_trials``: seconds per trial and the search's own seconds (study, MLflow,
  selection) outside the trials.

Each cost is fitted as ``seconds = a + b * n`` by least squares; ``linear`` in the result is the largest
relative deviation of a point from that line, and the ratio of the last to the first per-unit cost
(1.0 = perfectly linear; a quadratic step would make the largest input's per-unit cost grow with n).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.machine import machine_info

REPO = Path(__file__).resolve().parents[1]
CLINC = REPO.parent / "shared" / "datasets" / "clinc150" / "data_full.json"
VALIDATION_ROWS = (15_000, 150_000, 1_500_000)
VALIDATION_GOAL = {"rows": 1_500_000, "seconds": 60.0, "peak_rss_mb": 4096.0}
# Words a user might add to an utterance; the variation keeps the text's meaning and label.
FILLERS = ("please", "now", "today", "quickly", "again", "for me", "if possible", "thanks", "right away", "asap",
           "kindly", "urgently", "tonight", "this week", "by tomorrow", "when you can", "real quick", "btw")
OPENERS = ("", "", "hey", "hi", "hello", "ok", "so", "um", "excuse me", "can you tell me", "i need to know")


def expanded_records(rows: int, seed: int) -> list[dict]:
    """``rows`` loraops records from CLINC150's utterances (all splits, in-scope), each varied with a seeded
    opener, filler and number, split 80/10/10 at random."""
    data = json.loads(CLINC.read_text())
    pool = [(text, label) for key in ("train", "val", "test") for text, label in data[key]]
    rng = random.Random(seed)
    out = []
    for _ in range(rows):
        text, label = pool[rng.randrange(len(pool))]
        opener = rng.choice(OPENERS)
        words = text.split()
        words.insert(rng.randrange(len(words) + 1), rng.choice(FILLERS))
        varied = " ".join(([opener] if opener else []) + words + [f"#{rng.randrange(10**6)}"])
        draw = rng.random()
        out.append({"text": varied, "label": label, "split": "train" if draw < 0.8 else "val" if draw < 0.9 else "test"})
    return out


def _peak_rss_mb() -> float:
    """This process's resident high-water mark (VmHWM). Not ru_maxrss: Linux carries that over exec from the
    parent, so a child of a large process would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def validate_once(rows: int, base: Path | None, seed: int) -> dict:
    """One validation of ``rows`` rows in this (fresh) process: phase seconds and the peak RSS."""
    started = time.perf_counter()
    records = expanded_records(rows, seed)
    make_s = time.perf_counter() - started
    rss_records = _peak_rss_mb()
    started = time.perf_counter()
    from loraops.config import ValidateParams
    from loraops.validation import validate_dataset

    import_s = time.perf_counter() - started
    token_lengths, tokenizer_s = None, None
    if base is not None:
        from loraops.modeling import load_tokenizer, token_counter

        started = time.perf_counter()
        token_lengths = token_counter(load_tokenizer(base))
        tokenizer_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        report = validate_dataset(records, ValidateParams(), Path(work), token_lengths=token_lengths)
        validate_s = time.perf_counter() - started
    return {"rows": rows, "token_check": token_lengths is not None,
            # What a `validate` stage pays for this data: the import, the tokenizer and the validation itself
            # (making the synthetic records is the benchmark's, not the stage's).
            "seconds": round(import_s + (tokenizer_s or 0.0) + validate_s, 2),
            "validate_seconds": round(validate_s, 2), "import_seconds": round(import_s, 2),
            "tokenizer_load_seconds": None if tokenizer_s is None else round(tokenizer_s, 2),
            "make_records_seconds": round(make_s, 2),
            "peak_rss_mb": round(_peak_rss_mb(), 1),
            # The token count's child interpreter (see loraops.modeling.token_counter), when one ran: its own
            # peak; the two overlap in time, so their sum bounds what the validation holds at once.
            "child_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
            "rss_after_records_mb": round(rss_records, 1),
            "success": report.success, "failures": [f"{f.severity}: {f.check}: {f.rows} rows" for f in report.failures]}


def fit(points: list[tuple[float, float]]) -> dict:
    """Least-squares line through (n, seconds); how far the points are from it; per-unit cost last/first."""
    n = len(points)
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
    intercept = my - slope * mx
    deviation = max(abs(y - (intercept + slope * x)) / y for x, y in points if y)
    per_unit = [(y - intercept) / x for x, y in points if x]
    return {"intercept_seconds": round(intercept, 3), "seconds_per_unit": slope,
            "max_relative_deviation_from_line": round(deviation, 3),
            "per_unit_cost_last_over_first": round(per_unit[-1] / per_unit[0], 3) if per_unit and per_unit[0] else None}


def validation_part(base: Path | None, seed: int) -> dict:
    runs = []
    for rows in VALIDATION_ROWS:
        cmd = [sys.executable, "-m", "bench.scaling", "--validate-rows", str(rows), "--seed", str(seed)]
        if base is not None:
            cmd += ["--base", str(base)]
        out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(runs[-1]), flush=True)
    largest = runs[-1]
    return {"runs": runs, "fit": fit([(r["rows"], r["validate_seconds"]) for r in runs]), "goal": VALIDATION_GOAL,
            "within_goal": largest["rows"] == VALIDATION_GOAL["rows"]
            and largest["seconds"] <= VALIDATION_GOAL["seconds"]
            and largest["peak_rss_mb"] + largest.get("child_peak_rss_mb", 0.0) <= VALIDATION_GOAL["peak_rss_mb"]}


def evaluation_part(base: Path, seed: int, batch_sizes: list[int], sizes: list[int], fixed_items: int,
                    fixed_batch: int, prepared: Path | None) -> dict:
    from bench.bench_eval import sample_rows
    from loraops.config import EvalParams
    from loraops.core import read_jsonl
    from loraops.evaluation import run_model

    needed = max([*sizes, fixed_items])
    if prepared is not None:  # a project's prepared test rows, repeated in order as far as the sizes need
        own = read_jsonl(prepared)
        rows = [own[i % len(own)] for i in range(needed)]
    else:
        rows = sample_rows(base, needed, seed)

    def timed(items: int, batch: int) -> dict:
        started = time.perf_counter()
        result = run_model(base, rows[:items], batch, REPO, params=EvalParams(batch_size=batch, retention=False))
        seconds = time.perf_counter() - started
        point = {"items": items, "batch_size": batch, "seconds": round(seconds, 2),
                 "items_per_second": round(items / seconds, 3), "accuracy": result["metrics"]["accuracy"],
                 "load_1m": round(os.getloadavg()[0], 2)}
        print(json.dumps(point), flush=True)
        return point

    timed(min(sizes), fixed_batch)  # warm-up: the first call pays torch's one-time kernel setup
    by_batch = [timed(fixed_items, b) for b in batch_sizes]
    by_size = [timed(n, fixed_batch) for n in sizes]
    return {"model": str(base), "rows": str(prepared) if prepared else "CLINC150 test rows (150 labels), rendered",
            "by_batch_size": by_batch, "by_test_set_size": by_size,
            "fit_test_set_size": fit([(p["items"], p["seconds"]) for p in by_size]),
            "note": "the base model on zero-shot prompts, constrained decoding and the NLL pass; each call "
                    "includes loading the model (a few seconds)"}


def search_part(trials: list[int], steps: int) -> dict:
    import shutil

    from loraops.config import load_params
    from loraops.core import Layout
    from loraops.search import finish_search, prepare_search, run_worker
    from tests.helpers.projects import new_project, prepared_from_library
    from tests.helpers.tiny_model import build_tiny_model

    from loraops.config import PrepareParams
    from loraops.data import user_message
    from loraops.data.demo import generate_demo_dataset

    points = []
    with tempfile.TemporaryDirectory() as work:
        demo = generate_demo_dataset(seed=0, train_per_intent=20, test_per_intent=5)
        labels = sorted({r["label"] for r in demo})
        corpus = [r["text"] for r in demo] + labels + [user_message("", labels, PrepareParams()),
                                                       PrepareParams().system_prompt]
        base = build_tiny_model(Path(work) / "base", corpus * 3)
        search = {"enabled": True, "max_steps": steps, "eval_steps": steps, "ranks": [2, 4, 8],
                  "target_modules": ["attention"], "val_items": 8, "pruner": "none", "sampler": "tpe",
                  "beat_base": False, "rehearsal_shares": [0.0]}
        template = new_project(Path(work) / "template", base, search=search, train={"method": "lora"})
        prepared_from_library(template)
        for n in trials:
            root = Path(work) / f"n{n}"
            shutil.copytree(template.root, root, ignore=shutil.ignore_patterns("mlflow.db", "mlartifacts", ".loraops"))
            layout = Layout(root)
            params = load_params(layout.params_file, [f"search.n_trials={n}"])
            started = time.perf_counter()
            prepare_search(params, layout)
            prepared = time.perf_counter()
            state = run_worker(params, layout)
            ran = time.perf_counter()
            finish_search(params, layout)
            done = time.perf_counter()
            point = {"n_trials": n, "seconds": round(done - started, 2), "trials_seconds": round(ran - prepared, 2),
                     "seconds_per_trial": round((ran - prepared) / n, 3),
                     "outside_trials_seconds": round((prepared - started) + (done - ran), 2),
                     "finished": state.get("finished"), "steps": state.get("steps")}
            points.append(point)
            print(json.dumps(point), flush=True)
    return {"model": "tests' tiny Llama (2 layers), LoRA", "steps_per_trial": steps, "runs": points,
            "fit": fit([(p["n_trials"], p["seconds"]) for p in points])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=None, help="the real base model folder (tokenizer, evaluation)")
    parser.add_argument("--parts", nargs="+", default=["validation", "evaluation", "search"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-rows", type=Path, default=None,
                        help="a prepared test.jsonl (default: CLINC150 test rows rendered with 150 labels)")
    parser.add_argument("--eval-batch-sizes", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--eval-sizes", type=int, nargs="+", default=[28, 56, 112])
    parser.add_argument("--eval-fixed-items", type=int, default=32)
    parser.add_argument("--eval-fixed-batch", type=int, default=16)
    parser.add_argument("--search-trials", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--search-steps", type=int, default=6)
    parser.add_argument("--validate-rows", type=int, default=None, help=argparse.SUPPRESS)  # one size, this process
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "scaling.json")
    args = parser.parse_args()
    if args.validate_rows is not None:
        print(json.dumps(validate_once(args.validate_rows, args.base, args.seed)))
        return

    result = json.loads(args.out.read_text()) if args.out.is_file() else {}
    result.update({"benchmark": "scaling", "machine": machine_info(),
                   "reproduce": "python -m bench.scaling " + " ".join(sys.argv[1:])})
    if "evaluation" in args.parts and args.base is None:
        raise SystemExit("error: --base is needed for the evaluation part")
    parts = {"validation": lambda: validation_part(args.base, args.seed),
             "search": lambda: search_part(args.search_trials, args.search_steps),
             "evaluation": lambda: evaluation_part(args.base, args.seed, args.eval_batch_sizes, args.eval_sizes,
                                                   args.eval_fixed_items, args.eval_fixed_batch, args.eval_rows)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.parts:  # each part is written as soon as it is measured
        result[name] = {**parts[name](), "load_average_1m_at_end": round(os.getloadavg()[0], 2)}
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
