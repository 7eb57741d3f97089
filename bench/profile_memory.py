"""Where training memory goes: QLoRA, LoRA and full fine-tuning on CPU, phase by phase.

Each method runs in a fresh subprocess. Before every phase the RSS high-water mark is reset
(``/proc/self/clear_refs``), so a phase's ``peak_mb`` is the most RSS the process held during that phase and
``after_mb`` what it held at its end; ``*_over_import_mb`` subtract the RSS with the libraries imported and no
model loaded. The phases are the pipeline's own calls, in the order the train stage makes them:

- ``load``: :func:`loraops.training.training_base` (for QLoRA: load and quantise to NF4, then
  ``prepare_model_for_kbit_training``); ``attach``: a fresh LoRA adapter (:func:`attach_adapter`);
- ``forward``, ``backward``, ``optimizer_step`` of training steps (the pipeline's loss,
  :func:`example_mean_loss`, AdamW as the Trainer builds it), each step's phases measured on their own; the
  report gives the first step (the optimiser state is allocated there) and the largest over the others;
- ``eval``: the validation loss of one batch without gradients; ``merge``: the train stage's merged export
  with its logit check (:func:`loraops.training.export.merge_adapter`), after the training model was freed.

For each training step the tensors autograd saved for backward are counted by dtype
(``saved_for_backward``: bytes of distinct storages), which is where an fp32 copy kept for backward shows.

    flock /work/heavy.lock python -m bench.profile_memory --base models/base --out bench/results/memory_profile_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.machine import machine_info
from loraops.core.allocator import active_allocator, allocator_environment, release_free_memory

METHODS = ("qlora", "lora", "full")


def _phase(record: dict, name: str, fn, after_import: float):
    from loraops.training import current_memory_mb, peak_memory_mb, reset_peak_memory

    reset_peak_memory()
    started = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - started
    peak, now = peak_memory_mb(), current_memory_mb()
    record[name] = {"peak_mb": round(max(peak, now), 1), "after_mb": round(now, 1), "seconds": round(seconds, 3),
                    "peak_over_import_mb": round(max(peak, now) - after_import, 1),
                    "after_over_import_mb": round(now - after_import, 1)}
    return result


class SavedTensors:
    """Bytes of the distinct storages autograd saves for backward during a forward pass, by dtype."""

    def __init__(self):
        self.by_dtype: dict[str, int] = {}
        self._seen: set[int] = set()

    def pack(self, tensor):
        try:
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if key and key not in self._seen:
                self._seen.add(key)
                name = str(tensor.dtype).replace("torch.", "")
                self.by_dtype[name] = self.by_dtype.get(name, 0) + storage.nbytes()
        except (RuntimeError, NotImplementedError):
            pass  # tensors without a plain storage (e.g. sparse) are not counted
        return tensor

    def mb(self) -> dict[str, float]:
        return {k: round(v / 2**20, 1) for k, v in sorted(self.by_dtype.items())}


# glibc read as it starts: every block over 64 KiB in its own mapping, unmapped when freed (so RSS follows the
# live tensors), and heaps trimmed at every free. What the pipeline's allocator retention costs, in memory and time.
MMAP_EVERY_BLOCK = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def profile_one(base: str, method: str, allocator: str, steps: int, batch: int, seq: int) -> dict:
    import bitsandbytes  # noqa: F401
    import peft  # noqa: F401
    import torch

    from loraops.training import current_memory_mb

    after_import = current_memory_mb()
    from bench.bench_train import synthetic_rows
    from loraops.config import LoraParams
    from loraops.modeling import load_tokenizer
    from loraops.training import CompletionCollator, example_mean_loss
    from loraops.training.export import merge_adapter
    from loraops.training.resident import attach_adapter, training_base

    torch.manual_seed(0)
    tokenizer = load_tokenizer(Path(base))
    data = synthetic_rows(tokenizer, (steps + 1) * batch, seq)
    collate = CompletionCollator(tokenizer.pad_token_id)
    phases: dict = {}
    record = {"method": method, "allocator": allocator, "active_allocator": active_allocator(), "steps": steps, "batch": batch, "seq": seq,
              "memory_after_import_mb": after_import, "phases": phases}
    model = _phase(phases, "load", lambda: training_base(Path(base), "qlora" if method == "qlora" else "lora"),
                   after_import)
    if method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
    else:
        model = _phase(phases, "attach", lambda: attach_adapter(model, LoraParams(), seed=0), after_import)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    step_records, saved = [], []
    for step in range(steps):
        inputs = collate(data[step * batch:(step + 1) * batch])
        one: dict = {}
        counter = SavedTensors()
        with torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda t: t):
            loss = _phase(one, "forward", lambda: example_mean_loss(model, inputs), after_import)
        _phase(one, "backward", lambda: loss.backward(), after_import)

        def step_fn():
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        _phase(one, "optimizer_step", step_fn, after_import)
        del loss
        step_records.append(one)
        saved.append(counter.mb())
    phases["first_step"] = step_records[0]
    later = step_records[1:] or step_records
    phases["later_steps_max"] = {name: max((s[name] for s in later), key=lambda r: r["peak_mb"])
                                 for name in ("forward", "backward", "optimizer_step")}
    record["saved_for_backward_mb"] = saved[-1]
    model.eval()
    eval_inputs = collate(data[steps * batch:(steps + 1) * batch])

    def evaluate():
        with torch.no_grad():
            return float(example_mean_loss(model, eval_inputs))

    _phase(phases, "eval", evaluate, after_import)
    if method != "full":
        with tempfile.TemporaryDirectory() as tmp:
            adapter = Path(tmp) / "adapter"
            model.save_pretrained(adapter)
            del model, optimizer
            import gc

            gc.collect()
            release_free_memory()  # as the train stage does before its merge
            rows = [{"prompt": "Where is my parcel?", "completion": " track_order"}] * 4
            _phase(phases, "merge", lambda: merge_adapter(Path(base), adapter, Path(tmp) / "merged", rows, 1e-3),
                   after_import)
    record["peak_over_import_mb"] = round(max(
        [phases[p]["peak_over_import_mb"] for p in ("load", "attach", "eval", "merge") if p in phases]
        + [s[n]["peak_over_import_mb"] for s in step_records for n in s]), 1)
    record["training_peak_over_import_mb"] = round(max(
        s[n]["peak_over_import_mb"] for s in step_records for n in s), 1)
    # Steps 2..N (the first allocates the optimiser state and warms caches).
    record["step_seconds_median"] = round(statistics.median(sum(s[n]["seconds"] for n in s) for s in later), 3)
    return record


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--allocators", default="mimalloc,system",
                        help="mimalloc: as `loraops` runs (loraops.core.allocator); system: glibc's malloc; "
                             "mmap-every-block: glibc, see MMAP_EVERY_BLOCK")
    parser.add_argument("--out", required=True)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        method, allocator = args.one.split(":")
        print(json.dumps(profile_one(args.base, method, allocator, args.steps, args.batch, args.seq)))
        return
    runs = []
    # Interleaved, so a change in the machine's load hits both allocators alike.
    for method in args.methods.split(","):
        for allocator in args.allocators.split(","):
            cmd = [sys.executable, "-m", "bench.profile_memory", "--base", args.base, "--steps", str(args.steps),
                   "--batch", str(args.batch), "--seq", str(args.seq), "--out", "-", "--one", f"{method}:{allocator}"]
            env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "MIMALLOC_"))}
            env = allocator_environment({**env, "LORAOPS_ALLOCATOR": "mimalloc" if allocator == "mimalloc" else "system"})
            if allocator == "mmap-every-block":
                env.update(MMAP_EVERY_BLOCK)
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                raise SystemExit(f"{method}:{allocator} failed:\n{proc.stderr[-3000:]}")
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(json.dumps({k: runs[-1][k] for k in ("method", "allocator", "peak_over_import_mb",
                                                        "step_seconds_median", "saved_for_backward_mb")}), flush=True)
    summary: dict = {}
    for allocator in args.allocators.split(","):
        by = {r["method"]: r for r in runs if r["allocator"] == allocator}
        summary.update({f"{allocator}:{m}_peak_over_import_mb": by[m]["peak_over_import_mb"] for m in by})
        summary.update({f"{allocator}:{m}_step_seconds": by[m]["step_seconds_median"] for m in by})
        if "full" in by:
            for m in ("qlora", "lora"):
                if m in by:
                    summary[f"{allocator}:{m}_peak_over_import_vs_full"] = round(
                        by[m]["training_peak_over_import_mb"] / by["full"]["training_peak_over_import_mb"], 3)
    # The goal's figure: the allocator the pipeline runs on.
    pipeline_allocator = "mimalloc" if "mimalloc" in args.allocators.split(",") else args.allocators.split(",")[0]
    summary["qlora_peak_over_import_vs_full"] = summary.get(f"{pipeline_allocator}:qlora_peak_over_import_vs_full")
    summary["qlora_peak_over_import_vs_full_allocator"] = pipeline_allocator
    report = {"benchmark": "memory_profile", "machine": machine_info(),
              "command": " ".join(["python -m bench.profile_memory"] + sys.argv[1:]),
              "goal": "qlora_peak_over_import_vs_full <= 0.6 (CPU, 135M)", "summary": summary, "runs": runs}
    if args.out != "-":
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
