"""CLINC150 (one domain) with the real SmolLM2: base vs QLoRA adapter vs full fine-tune, with intervals.

Builds a project under ``bench/work/clinc150_<domain>`` (models/base is a symlink to the real base model),
runs ingest -> validate -> prepare -> search (off: it records train's own LoRA params) -> train (QLoRA,
params as shipped) through ``loraops.pipeline.run_stage``, trains the full fine-tune on the same budget
with ``loraops.training.train(..., lora=None)`` (what issue 4's ``baseline`` stage does), then runs the
``evaluate`` stage and copies its verdict into the result JSON.
Every phase is skipped when its output already exists, so an interrupted run continues.

    flock /work/heavy.lock python -m bench.bench_eval_clinc150 --base /work/main/models/base \\
        [--domain banking] [--steps 60] [--full-lr 5e-5] [--full-steps N] [--max-items N] [--until train]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from bench.machine import machine_info

REPO = Path(__file__).resolve().parents[1]
CLINC = REPO.parent / "shared" / "datasets" / "clinc150" / "data_full.json"
# train() ends with a val-loss pass; on a shared 2-core CPU the full val split costs ~10 min, so the
# full fine-tune's val_loss is measured on its first rows only (it is not used by the comparison).
FULL_VAL_ROWS = 40


def make_project(root: Path, base: Path, domain: str, steps: int, max_items: int | None) -> None:
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "models" / "base").exists():
        (root / "models").mkdir(exist_ok=True)
        (root / "models" / "base").symlink_to(base.resolve())
    if not (root / "evals").exists():
        (root / "evals").symlink_to(REPO / "evals")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"]["base"] = "models/base"
    params["data"].update({"source": "clinc150", "path": str(CLINC), "clinc150_domains": [domain]})
    params["train"]["max_steps"] = steps
    # No rank search: the search stage only records train's own lora/learning_rate (models/search/chosen.json).
    params["search"]["enabled"] = False
    params["eval"]["max_items"] = max_items
    params["project"]["name"] = f"clinc150-{domain}"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def train_full(layout, params, lr: float, steps: int) -> None:
    """The full fine-tune with the adapter's batch and seed, its own learning rate and ``steps``."""
    from loraops.data import load_splits
    from loraops.training import BaselineRecord, train
    from loraops.training.export import save_full_model

    train_params = params.train.model_copy(update={"learning_rate": lr, "max_steps": steps,
                                                   "warmup_steps": min(params.train.warmup_steps, steps // 4)})
    splits = load_splits(layout)
    splits["val"] = splits["val"][:FULL_VAL_ROWS]
    model, record, _ = train(layout.base_model_dir, splits, train_params, params.project.seed,
                             params.prepare.max_length, layout.cache_dir / "work" / "full", None)
    # As the baseline stage saves and records it (the record's learning_rate is ``lr``; it has no field for
    # the val rows, which the result JSON reports as full_val_rows_for_val_loss).
    save_full_model(model, layout.base_model_dir, layout.full_model_dir, record.steps)
    BaselineRecord(**record.model_dump()).write(layout.baseline_metrics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=REPO / "models" / "base")
    parser.add_argument("--domain", default="banking")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--full-lr", type=float, default=5e-5)
    # Same as --steps unless given: a smaller full fine-tune budget is reported as such in the result.
    parser.add_argument("--full-steps", type=int, default=None)
    parser.add_argument("--max-items", type=int, default=None, help="eval.max_items (default: whole test split)")
    parser.add_argument("--until", choices=["train", "evaluate"], default="evaluate")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or REPO / "bench" / "results" / f"eval_clinc150_{args.domain}.json"

    from loraops.config import load_params
    from loraops.core import Layout, read_json
    from loraops.pipeline import run_stage

    root = REPO / "bench" / "work" / f"clinc150_{args.domain}"
    full_steps = args.steps if args.full_steps is None else args.full_steps  # 0: no full fine-tune
    make_project(root, args.base, args.domain, args.steps, args.max_items)
    layout = Layout(root)
    params = load_params(layout.params_file)
    timings = {}
    for name, done in (("ingest", layout.raw_data), ("validate", layout.validation_profile),
                       ("prepare", layout.prepared_dir / "test.jsonl"), ("search", layout.search_choice),
                       ("train", layout.train_metrics)):
        if not done.exists():
            started = time.perf_counter()
            run_stage(name, params, layout)
            timings[name] = time.perf_counter() - started
            print(f"{name}: {timings[name]:.1f} s", flush=True)
    if full_steps and not layout.baseline_metrics.exists():
        started = time.perf_counter()
        train_full(layout, params, args.full_lr, full_steps)
        timings["full_fine_tune"] = time.perf_counter() - started
        print(f"full fine-tune: {timings['full_fine_tune']:.1f} s", flush=True)
    if args.until == "train":
        return
    started = time.perf_counter()
    run_stage("evaluate", params, layout)
    timings["evaluate"] = time.perf_counter() - started
    verdict = read_json(layout.eval_metrics)
    result = {
        "benchmark": f"evaluate: base vs QLoRA adapter vs full fine-tune on CLINC150 domain {args.domain}",
        "reproduce": (f"flock /work/heavy.lock python -m bench.bench_eval_clinc150 --base {args.base} "
                      f"--domain {args.domain} --steps {args.steps} --full-lr {args.full_lr} "
                      f"--full-steps {full_steps}" + (f" --max-items {args.max_items}" if args.max_items else "")),
        "train_steps": args.steps, "full_train_steps": full_steps, "adapter_learning_rate": params.train.learning_rate,
        "full_learning_rate": args.full_lr, "full_val_rows_for_val_loss": FULL_VAL_ROWS if full_steps else None,
        "stage_seconds_this_invocation": timings,
        "eval": verdict, "train": read_json(layout.train_metrics), "baseline": read_json(layout.baseline_metrics) if layout.baseline_metrics.is_file() else None,
        "report_md": (root / "reports" / "eval" / "report.md").read_text()
        if (root / "reports" / "eval" / "report.md").is_file() else None,
        "machine": machine_info(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(verdict, indent=2)[:4000])


if __name__ == "__main__":
    main()
