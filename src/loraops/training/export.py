"""What the ``train`` and ``baseline`` stages export: the merged adapter and the full fine-tune.

The merged export puts the adapter into the NON-quantised base (``merge_and_unload``) and checks, on real
validation prompts, that merged and adapter-on-base logits agree within ``train.merge_tolerance``: a merge
that silently changed the model is an error, not a file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loraops.core import ModelError, atomic_dir, write_json
from loraops.modeling import load_tokenizer, recorded_trust

BASELINE_MARKER = "loraops_baseline.json"


def sample_batch(tokenizer: Any, rows: list[dict], n: int = 4) -> dict[str, Any]:
    """Up to ``n`` full prompts+answers, left-padded, to compare logits on."""
    texts = [r["prompt"] + r["completion"] for r in rows[:n]]
    if not texts:
        raise ModelError("no rows to check the merged export on")
    tokenizer.padding_side = "left"
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)


def merge_adapter(base_dir: Path, adapter_dir: Path, out_dir: Path, rows: list[dict], tolerance: float) -> float:
    """Merge the adapter into the full-precision base, save it (safetensors + tokenizer), return max |Δlogit|.

    Both sides run in fp32 on the CPU so the difference measures the merge, not the dtype or device.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(base_dir)
    batch = sample_batch(tokenizer, rows)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, use_safetensors=True,
                                                trust_remote_code=recorded_trust(base_dir))
    model = PeftModel.from_pretrained(base, adapter_dir, is_trainable=False).eval()
    with torch.no_grad():
        unmerged = model(**batch).logits
        merged_model = model.merge_and_unload()
        merged = merged_model(**batch).logits
    mask = batch["attention_mask"].bool()
    diff = (merged - unmerged).abs()[mask].max().item()
    if not diff <= tolerance:  # also catches NaN
        raise ModelError(f"{adapter_dir}: merged and unmerged logits differ by {diff:.3g} > "
                         f"train.merge_tolerance={tolerance:g}; the merged export was not written")
    with atomic_dir(out_dir) as staging:
        merged_model.save_pretrained(staging, safe_serialization=True)
        load_tokenizer(base_dir).save_pretrained(staging)
    return diff


def save_full_model(model: Any, base_dir: Path, out_dir: Path, steps: int) -> None:
    """A plain transformers folder (safetensors + tokenizer) that AutoModelForCausalLM loads as is."""
    with atomic_dir(out_dir) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        load_tokenizer(base_dir).save_pretrained(staging)
        write_json(staging / BASELINE_MARKER, {"enabled": True, "method": "full", "steps": steps})


def write_disabled_marker(out_dir: Path, reason: str) -> None:
    """``models/full`` when the baseline is off: only the marker (DVC needs its out), never a model."""
    with atomic_dir(out_dir) as staging:
        write_json(staging / BASELINE_MARKER, {"enabled": False, "reason": reason})
