"""The ``evaluate`` stage: one evaluator for every model (``adapter_dir=None`` is the base model).

Base model, adapter and (later) full fine-tune go through the same prompts, batching, greedy decoding
and answer normalisation, so their scores differ only because the models differ.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from loraops.modeling import device, load_for_inference

_EDGE_PUNCT = re.compile(r"^[\s\"'`.,:;!?()\[\]]+|[\s\"'`.,:;!?()\[\]]+$")


def normalise_answer(text: str) -> str:
    """First line, lower case, surrounding punctuation dropped, inner spaces/hyphens as '_'."""
    first = text.strip().split("\n", 1)[0] if text.strip() else ""
    return re.sub(r"[\s\-]+", "_", _EDGE_PUNCT.sub("", first.lower()))


def generate_answers(model: Any, tokenizer: Any, prompts: list[str], batch_size: int,
                     max_new_tokens: int) -> list[str]:
    """Greedy answers for ``prompts`` in batches (left padding so generation continues each prompt)."""
    import torch
    from tqdm.auto import tqdm

    answers: list[str] = []
    for start in tqdm(range(0, len(prompts), batch_size), desc="generate", unit="batch"):
        batch = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True,
                          add_special_tokens=False).to(device())
        with torch.inference_mode():
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        new_tokens = out[:, batch["input_ids"].shape[1]:]
        answers += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return answers


def load_metric(name: str, root: Path) -> Any:
    """A metric from the project's ``evals/`` folder, loaded by path (never from the hub)."""
    import evaluate

    os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
    for folder in (root / "evals", Path(__file__).resolve().parents[2] / "evals"):
        if (folder / name / f"{name}.py").is_file():
            return evaluate.load(str(folder / name))
    raise FileNotFoundError(f"metric {name!r}: no evals/{name}/{name}.py in {root} or the loraops source tree")


def evaluate_model(base_dir: Path, rows: list[dict], batch_size: int, root: Path,
                   adapter_dir: Path | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score one model on prepared ``rows``; returns (metrics, per-item predictions)."""
    model, tokenizer = load_for_inference(base_dir, adapter_dir)
    references = [normalise_answer(r["label"]) for r in rows]
    longest = max(len(tokenizer(r["completion"], add_special_tokens=False)["input_ids"]) for r in rows)
    started = time.perf_counter()
    raw = generate_answers(model, tokenizer, [r["prompt"] for r in rows], batch_size, max_new_tokens=longest + 2)
    seconds = time.perf_counter() - started
    predictions = [normalise_answer(a) for a in raw]
    score = load_metric("accuracy", root).compute(predictions=predictions, references=references)
    metrics = {"accuracy": score["accuracy"], "items": len(rows), "seconds": seconds}
    items = [{"text": r["text"], "label": ref, "prediction": p, "raw": a, "correct": p == ref}
             for r, ref, p, a in zip(rows, references, predictions, raw)]
    return metrics, items
