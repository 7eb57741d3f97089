"""Training benchmark: QLoRA vs LoRA vs full fine-tuning, and the pipeline's trainer vs a bare PEFT loop.

Each method runs in a fresh subprocess so peak memory is its own. All methods see the same examples in the
same order, with the same batch size and sequence length (rows padded/truncated to ``--seq`` tokens).

    python bench/bench_train.py --base models/base --out bench/results/train_cpu.json
    python bench/bench_train.py --base DIR --init-from-config   # same architecture, random weights (GPU hosts
                                                                # that cannot receive the 540 MB weights)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402


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


def run_one(base: str, method: str, loop: str, steps: int, batch: int, seq: int) -> dict:
    import torch
    from transformers import Trainer, TrainingArguments

    from loraops.config import LoraParams
    from loraops.modeling import compute_dtype, count_parameters, device, load_tokenizer
    from loraops.train import CompletionCollator, build_model, peak_memory_mb

    torch.manual_seed(0)
    tokenizer = load_tokenizer(Path(base))
    data = synthetic_rows(tokenizer, steps * batch, seq)
    lora = None if method == "full" else LoraParams()
    model = build_model(Path(base), "qlora" if method == "qlora" else "lora", lora)
    trainable, total = count_parameters(model)
    collate = CompletionCollator(tokenizer.pad_token_id)
    bf16 = compute_dtype() == torch.bfloat16
    started = time.perf_counter()
    if loop == "pipeline":
        with tempfile.TemporaryDirectory() as work:
            args = TrainingArguments(output_dir=work, max_steps=steps, per_device_train_batch_size=batch,
                                     learning_rate=1e-4, lr_scheduler_type="constant", logging_steps=steps,
                                     save_strategy="no", report_to=[], use_cpu=device() == "cpu", bf16=bf16,
                                     remove_unused_columns=False, disable_tqdm=True, seed=0, data_seed=0)
            # No shuffle difference matters: every row has the same length.
            Trainer(model=model, args=args, train_dataset=data, data_collator=collate).train()
    else:
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        model.train()
        for step in range(steps):
            inputs = {k: v.to(device()) for k, v in collate(data[step * batch:(step + 1) * batch]).items()}
            with torch.autocast(device_type=device(), dtype=torch.bfloat16, enabled=bf16):
                loss = model(**inputs).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    adapter_bytes = None
    if lora is not None:
        with tempfile.TemporaryDirectory() as out:
            model.save_pretrained(out)
            adapter_bytes = sum(p.stat().st_size for p in Path(out).glob("*.safetensors"))
    return {"method": method, "loop": loop, "steps": steps, "batch": batch, "seq": seq, "seconds": seconds,
            "seconds_per_step": seconds / steps, "tokens_per_second": steps * batch * seq / seconds,
            "peak_memory_mb": peak_memory_mb(), "trainable_params": trainable, "total_params": total,
            "adapter_bytes": adapter_bytes, "device": device(), "compute_dtype": str(compute_dtype())}


def init_from_config(base: Path) -> Path:
    """Save a random-weight model of ``base``'s architecture (timings and memory do not depend on values)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out = Path(tempfile.mkdtemp(prefix="bench-base-"))
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base), dtype=torch.float32).save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--init-from-config", action="store_true")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--methods", default="qlora,lora,full")
    parser.add_argument("--loops", default="pipeline,bare")
    parser.add_argument("--out", required=True)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: method:loop, run in this process
    args = parser.parse_args()
    if args.one:
        method, loop = args.one.split(":")
        print(json.dumps(run_one(args.base, method, loop, args.steps, args.batch, args.seq)))
        return
    base = init_from_config(Path(args.base)) if args.init_from_config else Path(args.base)
    results = []
    for method in args.methods.split(","):
        for loop in args.loops.split(",") if method == "qlora" else ["pipeline"]:
            cmd = [sys.executable, __file__, "--base", str(base), "--steps", str(args.steps), "--batch",
                   str(args.batch), "--seq", str(args.seq), "--out", "-", "--one", f"{method}:{loop}"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{method}:{loop} failed:\n{proc.stderr[-3000:]}")
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), flush=True)
    by = {(r["method"], r["loop"]): r for r in results}
    base_bytes = sum(p.stat().st_size for p in base.glob("*.safetensors"))
    summary = {"base_model_bytes": base_bytes,
               "weights": "random init, SmolLM2-135M architecture" if args.init_from_config else "real"}
    if ("qlora", "bare") in by:
        summary["pipeline_vs_bare_throughput"] = (by[("qlora", "pipeline")]["tokens_per_second"]
                                                  / by[("qlora", "bare")]["tokens_per_second"])
    if ("full", "pipeline") in by:
        full = by[("full", "pipeline")]["peak_memory_mb"]
        summary.update({f"{m}_peak_memory_vs_full": by[(m, "pipeline")]["peak_memory_mb"] / full
                        for m in ("qlora", "lora") if (m, "pipeline") in by})
    if ("qlora", "pipeline") in by and by[("qlora", "pipeline")]["adapter_bytes"]:
        summary["adapter_to_base_size"] = by[("qlora", "pipeline")]["adapter_bytes"] / base_bytes
    report = {"benchmark": "train", "machine": machine_info(), "summary": summary, "runs": results}
    text = json.dumps(report, indent=2)
    if args.out == "-":
        print(text)
    else:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
