"""Training benchmark: QLoRA vs LoRA vs full fine-tuning, and the pipeline's trainer vs a bare PEFT loop.

Each method runs in a fresh subprocess so peak memory is its own. All methods see the same examples in the
same order, with the same batch size and sequence length (rows padded/truncated to ``--seq`` tokens). Every run
reports its model FLOPs utilisation (``mfu``: model FLOPs per second over the peak; bench/flops.py has the
formula and how the peak is obtained: a measured matmul rate on CPU, the datasheet on a GPU).

    flock /work/heavy.lock python -m bench.bench_train --base models/base --out bench/results/train_cpu_b8_s128.json
    python -m bench.bench_train --base DIR --init-from-config   # same architecture, random weights (GPU hosts
                                                                # that cannot receive the 540 MB weights)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.flops import matmul_params, model_flops_per_step, peak_flops
from bench.machine import machine_info
from loraops.core.allocator import active_allocator, allocator_environment


def synthetic_rows(tokenizer, n: int, seq: int) -> list[dict]:
    """Real demo-data prompts, each cut/padded to exactly ``seq`` tokens, loss on the last 8 tokens."""
    from loraops.config import PrepareParams
    from loraops.data.demo import generate_demo_dataset
    from loraops.prepare import prepare

    rows = generate_demo_dataset(seed=0, train_per_intent=max(2, n // 14 + 1), test_per_intent=1)
    splits, _, _ = prepare(rows, tokenizer, PrepareParams(max_length=4096), seed=0)
    out = []
    for row in (splits["train"] * 4)[:n]:
        ids = tokenizer(row["prompt"] + row["completion"], add_special_tokens=False)["input_ids"]
        ids = (ids * (seq // len(ids) + 1))[:seq]
        out.append({"input_ids": ids, "labels": [-100] * (seq - 8) + ids[-8:]})
    return out


class StepClock:
    """End time of every optimiser step, so steady-state throughput excludes the one-off first step."""

    def __init__(self):
        self.ends: list[float] = []

    def tick(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())


def run_one(base: str, method: str, loop: str, steps: int, batch: int, seq: int) -> dict:
    """One method in this (fresh) process. ``method`` is qlora, lora or full, with ``-gc`` for activation
    checkpointing. Memory: RSS on CPU (VmHWM, reset after loading), allocated bytes on CUDA."""
    import bitsandbytes  # noqa: F401
    import peft  # noqa: F401
    import torch
    from transformers import TrainerCallback

    from loraops.training import current_memory_mb, peak_memory_mb, reset_peak_memory

    after_import = current_memory_mb()  # the libraries imported, no model loaded yet

    from loraops.config import LoraParams, TrainParams
    from loraops.modeling import compute_dtype, count_parameters, device, load_tokenizer
    from loraops.training import CompletionCollator, answer_loss_trainer, build_model, example_mean_loss, \
        training_arguments

    kind, _, gc = method.partition("-")
    torch.manual_seed(0)
    tokenizer = load_tokenizer(Path(base))
    data = synthetic_rows(tokenizer, steps * batch, seq)
    lora = None if kind == "full" else LoraParams()
    model = build_model(Path(base), "qlora" if kind == "qlora" else "lora", lora)
    trainable, total = count_parameters(model)
    # The full-logits loop applies the output projection at every position, the others at the answer ones.
    logit_positions = steps * batch * seq if loop == "pipeline-full-logits" else sum(
        sum(1 for label in row["labels"][1:] if label != -100) for row in data)
    flops_per_step = model_flops_per_step(matmul_params(model), batch * seq, logit_positions // steps,
                                          full=lora is None)
    load_peak, after_load = peak_memory_mb(), current_memory_mb()
    reset_peak_memory()
    collate = CompletionCollator(tokenizer.pad_token_id)
    bf16 = compute_dtype() == torch.bfloat16
    clock = StepClock()
    started = time.perf_counter()
    if loop in ("pipeline", "pipeline-full-logits"):
        # The pipeline's own TrainingArguments (loraops.training.training_arguments) and loss, no eval and no
        # checkpoints; ``pipeline-full-logits`` computes the logits at every position (the loss is the same).
        params = TrainParams(method="qlora" if kind == "qlora" else "lora", max_steps=steps, batch_size=batch,
                             learning_rate=1e-4, warmup_steps=0, eval_steps=None, early_stopping_patience=None,
                             save_steps=None, progress_bar=False, gradient_checkpointing=gc == "gc")

        class Tick(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                clock.tick()

        with tempfile.TemporaryDirectory() as work:
            args = training_arguments(params, 0, Path(work), evaluate=False, save=False)
            trainer = answer_loss_trainer(answer_only=loop == "pipeline")
            trainer(model=model, args=args, train_dataset=data, data_collator=collate, callbacks=[Tick()]).train()
    else:
        if gc == "gc":
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        model.train()
        ab_seconds: dict[bool, list[float]] = {True: [], False: []}
        for step in range(steps):
            inputs = {k: v.to(device()) for k, v in collate(data[step * batch:(step + 1) * batch]).items()}
            # ``ab-logits``: steps alternate between logits at the answer positions and at every position, in
            # one process on one model, so the machine's load moves both alike (the pair of separate runs
            # pipeline / pipeline-full-logits is the same comparison through the Trainer, minutes apart).
            answer_only = step % 2 == 0 if loop == "ab-logits" else True
            started_step = time.perf_counter()
            with torch.autocast(device_type=device(), dtype=torch.bfloat16, enabled=bf16):
                loss = example_mean_loss(model, inputs, answer_only)  # the pipeline's loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            clock.tick()
            if step >= 2:  # the first pair builds the optimizer state and warms caches
                ab_seconds[answer_only].append(time.perf_counter() - started_step)
    ab = {}
    if loop == "ab-logits":
        import statistics

        ab = {"answer_only_step_seconds": statistics.median(ab_seconds[True]),
              "full_logits_step_seconds": statistics.median(ab_seconds[False]),
              "ab_steps_each": len(ab_seconds[True])}
    seconds = clock.ends[-1] - started
    steady = (clock.ends[-1] - clock.ends[0]) / (len(clock.ends) - 1) if len(clock.ends) > 1 else None
    train_peak = peak_memory_mb()
    adapter_bytes = None
    if lora is not None:
        with tempfile.TemporaryDirectory() as out:
            model.save_pretrained(out)
            adapter_bytes = sum(p.stat().st_size for p in Path(out).glob("*.safetensors"))
    return {"method": method, "loop": loop, "allocator": active_allocator(), "steps": steps, "batch": batch, "seq": seq, "seconds": seconds,
            "seconds_per_step": seconds / steps, "tokens_per_second": steps * batch * seq / seconds,
            "steady_seconds_per_step": steady,
            "steady_tokens_per_second": batch * seq / steady if steady else None,
            "memory_after_import_mb": after_import, "memory_after_load_mb": after_load,
            "peak_memory_loading_mb": load_peak, "peak_memory_mb": max(train_peak, after_load),
            "peak_memory_over_import_mb": max(train_peak, after_load) - after_import,
            "trainable_params": trainable, "total_params": total, "adapter_bytes": adapter_bytes,
            "gradient_checkpointing": gc == "gc", "device": device(), "compute_dtype": str(compute_dtype()),
            "model_flops_per_step": flops_per_step,
            # Steady state where there is one (the first step builds the optimizer and warms caches).
            "achieved_flops_per_second": flops_per_step / (steady or seconds / steps), **ab}


def init_from_config(base: Path) -> Path:
    """Save a random-weight model of ``base``'s architecture (timings and memory do not depend on values)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out = Path(tempfile.mkdtemp(prefix="bench-base-"))
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base), dtype=torch.float32).save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


def ratio(by: dict, key: str, num: tuple, den: tuple) -> float | None:
    if num in by and den in by and by[num][key] and by[den][key]:
        return by[num][key] / by[den][key]
    return None


def ab_speedup(by: dict, method: str) -> float | None:
    """Step time with logits at every position over step time with logits at the answer positions only,
    from the interleaved ``ab-logits`` run of ``method``."""
    run = by.get((method, "ab-logits"))
    return run["full_logits_step_seconds"] / run["answer_only_step_seconds"] if run else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--init-from-config", action="store_true")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--runs", default="qlora:pipeline,qlora:pipeline-full-logits,qlora:bare,qlora:ab-logits,"
                                          "lora:ab-logits,lora:pipeline,"
                                          "full:pipeline,"
                                          "qlora-gc:pipeline,lora-gc:pipeline,full-gc:pipeline",
                        help="method:loop pairs; method qlora|lora|full, '-gc' adds activation checkpointing")
    parser.add_argument("--out", required=True)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: method:loop, run in this process
    args = parser.parse_args()
    if args.one:
        method, loop = args.one.split(":")
        print(json.dumps(run_one(args.base, method, loop, args.steps, args.batch, args.seq)))
        return
    base = init_from_config(Path(args.base)) if args.init_from_config else Path(args.base)
    # Measured once, in this process before the runs, with the torch threads they get.
    import torch

    peak = peak_flops("cuda" if torch.cuda.is_available() else "cpu")
    results = []
    for run in args.runs.split(","):
        # As a module (the cwd is the repository root, as for this process), so `bench.machine` imports.
        cmd = [sys.executable, "-m", "bench.bench_train", "--base", str(base), "--steps", str(args.steps), "--batch",
               str(args.batch), "--seq", str(args.seq), "--out", "-", "--one", run]
        # On the malloc `loraops` runs on (LORAOPS_ALLOCATOR=system: glibc's), so RSS is the pipeline's.
        proc = subprocess.run(cmd, capture_output=True, text=True, env=allocator_environment())
        if proc.returncode != 0:
            raise SystemExit(f"{run} failed:\n{proc.stderr[-3000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result.update(peak_flops_per_second=peak["flops_per_second"], peak_method=peak["method"],
                      mfu=result["achieved_flops_per_second"] / peak["flops_per_second"])
        results.append(result)
        print(json.dumps(results[-1]), flush=True)
    by = {(r["method"], r["loop"]): r for r in results}
    base_bytes = sum(p.stat().st_size for p in base.glob("*.safetensors"))
    summary = {"base_model_bytes": base_bytes,
               "weights": "random init, SmolLM2-135M architecture" if args.init_from_config else "real",
               # Steady state: steps 2..N (the first step builds the optimizer and warms caches in both loops).
               "pipeline_vs_bare_throughput": ratio(by, "steady_tokens_per_second", ("qlora", "pipeline"),
                                                    ("qlora", "bare")),
               "pipeline_vs_bare_throughput_incl_first_step": ratio(by, "tokens_per_second", ("qlora", "pipeline"),
                                                                     ("qlora", "bare")),
               # Same loss, same data: output projection at every position / at the answer positions only.
               "answer_only_step_speedup_separate_runs": ratio(by, "steady_seconds_per_step",
                                                               ("qlora", "pipeline-full-logits"), ("qlora", "pipeline")),
               # The same, steps interleaved in one process (ab-logits): the figure the goal is judged on.
               "answer_only_step_speedup": ab_speedup(by, "qlora"),
               "lora_answer_only_step_speedup": ab_speedup(by, "lora"),
               # Model FLOPs per second over the peak (bench/flops.py: the formula, how the peak was obtained).
               "mfu_qlora_pipeline": by[("qlora", "pipeline")]["mfu"] if ("qlora", "pipeline") in by else None}
    for suffix in ("", "-gc"):
        for method in ("qlora", "lora"):
            for key, name in (("peak_memory_mb", "peak_memory"), ("peak_memory_over_import_mb", "peak_over_import")):
                value = ratio(by, key, (method + suffix, "pipeline"), ("full" + suffix, "pipeline"))
                if value is not None:
                    summary[f"{method}{suffix.replace('-', '_')}_{name}_vs_full{suffix.replace('-', '_')}"] = value
    if ("qlora", "pipeline") in by and by[("qlora", "pipeline")]["adapter_bytes"]:
        summary["adapter_to_base_size"] = by[("qlora", "pipeline")]["adapter_bytes"] / base_bytes
    # The malloc and glibc's malloc settings change CPU RSS a lot (freed buffers kept vs returned): recorded.
    summary["allocator"] = sorted({r["allocator"] for r in results})
    allocator = {k: v for k, v in os.environ.items() if k.startswith(("MALLOC_", "LORAOPS_ALLOCATOR"))}
    report = {"benchmark": "train", "machine": machine_info(), "command": " ".join(sys.argv), "allocator_env": allocator,
              "peak": peak, "summary": summary, "runs": results}
    text = json.dumps(report, indent=2)
    if args.out == "-":
        print(text)
    else:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
