"""The base model's few-shot evaluation with and without the shared prefix cache, on a finished demo project.

Each prompt of the base model at its best repeats one long beginning (system prompt, label list, the
``eval.base_shots`` shot turns); :mod:`loraops.evaluation.prefix` computes it once per call. This times the
passes the evaluate stage runs for the base model, each without the cache (``share_prefix=False``, the former
path) and then with it, on the same loaded model and the same prompts: constrained answers, unconstrained
answers, the teacher-forced NLL and the retention set. It also checks the two give the same answers and NLL.

    flock /work/heavy.lock nice -n 19 python -m bench.bench_eval_prefix --project /work/exp [--items 40]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from bench.machine import machine_info

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True, help="a project whose prepare stage has run")
    parser.add_argument("--base", type=Path, default=None, help="default: the project's models/base")
    parser.add_argument("--adapter", type=Path, default=None,
                        help="time this adapter on the prepared prompts instead of the base at its best")
    parser.add_argument("--items", type=int, default=None, help="first N test rows (default: all)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "eval_base_prefix_cache.json")
    args = parser.parse_args()

    import torch

    from loraops.config import load_params
    from loraops.core import read_json, read_jsonl
    from loraops.evaluation import answer_nll, generate_answers, load_model, retention_prompts
    from loraops.evaluation.evaluator import base_prompts
    from loraops.evaluation.prefix import common_prefix_length

    base = args.base or args.project / "models" / "base"
    params = load_params(args.project / "params.yaml")
    prepared = args.project / "data" / "prepared"
    rows = read_jsonl(prepared / "test.jsonl")[:args.items]
    labels = read_json(prepared / "labels.json")
    model, tokenizer = load_model(base, args.adapter)
    if args.adapter is None:
        prompts, prompting = base_prompts(rows, labels, tokenizer, params.eval, params.prepare,
                                          read_jsonl(prepared / "train.jsonl"))
    else:  # as run_model asks an adapter: the prepared prompts
        prompts, prompting = [r["prompt"] for r in rows], {"shots": 0}
    batch_size = params.eval.batch_size
    longest = max(len(tokenizer(r["completion"], add_special_tokens=False)["input_ids"]) for r in rows)
    max_new_tokens = params.eval.max_new_tokens or longest + 2
    general = retention_prompts(tokenizer, "test")

    passes = {
        "constrained": lambda share: generate_answers(model, tokenizer, prompts, batch_size, max_new_tokens,
                                                      labels=labels, share_prefix=share),
        "unconstrained": lambda share: generate_answers(model, tokenizer, prompts, batch_size, max_new_tokens,
                                                        share_prefix=share),
        "answer_nll": lambda share: answer_nll(model, tokenizer, prompts, [r["completion"] for r in rows],
                                               batch_size, share_prefix=share),
        "retention": lambda share: generate_answers(model, tokenizer, general, batch_size,
                                                    params.eval.retention_max_new_tokens, share_prefix=share),
    }
    results = {}
    for name, run in passes.items():
        timed = {}
        for share in (False, True):  # the former path first, then the cached one, back to back
            load = os.getloadavg()[0]
            started = time.perf_counter()
            out = run(share)
            timed[share] = (time.perf_counter() - started, out, load)
        (before, plain, load_before), (after, cached, load_after) = timed[False], timed[True]
        entry = {"seconds_before": round(before, 2), "seconds_after": round(after, 2),
                 "speedup": round(before / after, 2), "load_average_1min": [round(load_before, 2), round(load_after, 2)]}
        if name == "answer_nll":
            entry["max_abs_nll_difference"] = max(abs(a[0] - b[0]) for a, b in zip(plain, cached))
            entry["token_counts_equal"] = [n for _, n in plain] == [n for _, n in cached]
        else:
            entry["answers_differing"] = sum(a != b for a, b in zip(plain, cached))
        if name == "constrained":
            entry["accuracy"] = sum(a.strip() == r["label"] for a, r in zip(cached, rows)) / len(rows)
        results[name] = entry
        print(name, json.dumps(entry), flush=True)

    encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    shared = common_prefix_length(encoded)
    total_before = sum(r["seconds_before"] for r in results.values())
    total_after = sum(r["seconds_after"] for r in results.values())
    report = {
        "benchmark": (f"base model {prompting['shots']}-shot" if args.adapter is None else "adapter")
                     + f" evaluation passes on {len(rows)} demo test rows, without and with the shared prefix cache",
        "reproduce": f"flock /work/heavy.lock nice -n 19 python -m bench.bench_eval_prefix --project {args.project}"
                     + (f" --base {args.base}" if args.base else "")
                     + (f" --adapter {args.adapter}" if args.adapter else "") + (f" --items {args.items}" if args.items else ""),
        "items": len(rows), "batch_size": batch_size, "max_new_tokens": max_new_tokens,
        "prompt_tokens_mean": round(sum(map(len, encoded)) / len(encoded), 1), "shared_prefix_tokens": shared,
        "suffix_tokens_mean": round(sum(len(ids) - shared for ids in encoded) / len(encoded), 1),
        "retention_shared_prefix_tokens": common_prefix_length(
            tokenizer(general, add_special_tokens=False)["input_ids"]),
        "passes": results, "seconds_before": round(total_before, 2), "seconds_after": round(total_after, 2),
        "torch_threads": torch.get_num_threads(),
        "note": "same process, same loaded model, each pass without the cache then with it; 2-core machine, "
                "see load_average_1min for other load while measuring",
        "machine": machine_info(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("seconds_before", "seconds_after", "shared_prefix_tokens")}))


if __name__ == "__main__":
    main()
