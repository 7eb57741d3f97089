"""What the ``train`` and ``baseline`` stages leave behind: curves, the merged export, the full model.

The merged export puts the adapter into the NON-quantised base (``merge_and_unload``) and checks, on real
validation prompts, that merged and adapter-on-base logits agree within ``train.merge_tolerance``: a merge
that silently changed the model is an error, not a file.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from loraops.errors import ModelError
from loraops.project import atomic_dir, atomic_write_text, write_json

BASELINE_MARKER = "loraops_baseline.json"


def write_curve(path: Path, rows: list[dict], value: str) -> None:
    """A DVC plot CSV with columns ``step,<value>``."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["step", value])
    writer.writeheader()
    writer.writerows({"step": r["step"], value: r[value]} for r in rows)
    atomic_write_text(path, buffer.getvalue())


def read_curve(path: Path, value: str) -> list[dict]:
    if not path.is_file():
        return []
    with path.open() as handle:
        return [{"step": int(r["step"]), value: float(r[value])} for r in csv.DictReader(handle)]


def safetensors_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


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

    from loraops.modeling import load_tokenizer

    tokenizer = load_tokenizer(base_dir)
    batch = sample_batch(tokenizer, rows)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, use_safetensors=True)
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


def save_full_model(model: Any, base_dir: Path, out_dir: Path, metrics: dict) -> None:
    """A plain transformers folder (safetensors + tokenizer) that AutoModelForCausalLM loads as is."""
    from loraops.modeling import load_tokenizer

    with atomic_dir(out_dir) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        load_tokenizer(base_dir).save_pretrained(staging)
        write_json(staging / BASELINE_MARKER, {"enabled": True, "method": "full", "steps": metrics["steps"]})


def write_disabled_baseline(out_dir: Path, metrics_path: Path) -> dict:
    """``baseline.enabled: false``: an explicit record (DVC needs its outs), never a model that pretends."""
    record = {"enabled": False, "reason": "baseline.enabled is false in params.yaml"}
    with atomic_dir(out_dir) as staging:
        write_json(staging / BASELINE_MARKER, record)
    write_json(metrics_path, record)
    return record


def baseline_available(full_model_dir: Path) -> bool:
    """True when the baseline stage produced a loadable full fine-tune (not the 'disabled' record)."""
    return (full_model_dir / "config.json").is_file() and any(full_model_dir.glob("*.safetensors"))
