"""Lineage of a registered version: where its data and adapter came from, as content hashes DVC can restore.

The hashes are computed here with DVC's own algorithm (md5 of a file's bytes; for a folder, md5 of the
JSON list of its files' md5s plus ``.dir``) instead of being read from ``dvc.lock``: under ``loraops
run`` dvc.lock is only written by the ``dvc commit`` at the end of the flow, after ``register``, so it
would still describe the previous run. The values are the ones that commit (or ``dvc repro``) records
in dvc.lock, which a test checks, and with them a ``.dvc`` file brings the exact bytes back from the
DVC cache or remote (:func:`dvc_pointer`). The library never imports DVC.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from loraops.config import Params, flatten
from loraops.project import Layout

CHUNK = 1 << 20


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def dvc_md5(path: Path) -> str:
    """The md5 DVC records for ``path``: a file's own md5, or ``<md5 of the listing>.dir`` for a folder.

    Files DVC would not track in a folder (a ``.gitignore`` DVC writes, ``.dvcignore`` patterns) are
    not expected in stage outputs; the test against ``dvc commit`` guards that.
    """
    if path.is_file():
        return file_md5(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder to hash")
    entries = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for name in filenames:
            full = Path(dirpath) / name
            entries.append({"md5": file_md5(full), "relpath": full.relative_to(path).as_posix()})
    entries.sort(key=lambda e: e["relpath"])
    listing = json.dumps(entries, sort_keys=True).encode("utf-8")
    return hashlib.md5(listing).hexdigest() + ".dir"


def params_hash(params: Params) -> str:
    return hashlib.sha256(json.dumps(flatten(params), sort_keys=True, default=str).encode()).hexdigest()


# The DVC outputs a version is traced to: tag name -> path in the layout.
def tracked_outputs(layout: Layout) -> dict[str, Path]:
    return {"dataset": layout.raw_data, "prepared": layout.prepared_dir, "adapter": layout.adapter_dir}


def lineage_tags(layout: Layout, params: Params) -> dict[str, str]:
    """``dvc.NAME.path`` / ``dvc.NAME.md5`` for the dataset, prepared splits and adapter, plus the params hash."""
    tags = {"params.sha256": params_hash(params), "dvc.hash": "md5 (DVC 3 algorithm, computed at register time)"}
    for name, path in tracked_outputs(layout).items():
        tags[f"dvc.{name}.path"] = path.relative_to(layout.root).as_posix()
        tags[f"dvc.{name}.md5"] = dvc_md5(path)
    return tags


def dvc_pointer(name: str, md5: str) -> str:
    """The text of a ``.dvc`` file that makes ``dvc checkout``/``dvc pull`` restore ``md5`` as ``name``
    beside it."""
    return f"outs:\n- md5: {md5}\n  path: {name}\n  hash: md5\n"


def restore_pointers(tags: dict[str, str], into: Path) -> dict[str, Path]:
    """From a version's tags alone, write one ``.dvc`` file per recorded output under ``into`` (inside a
    DVC repository), mirroring the project's paths; ``dvc pull``/``dvc checkout`` on them restores the bytes."""
    written = {}
    for name in ("dataset", "prepared", "adapter"):
        if f"dvc.{name}.md5" in tags and f"dvc.{name}.path" in tags:
            target = into / tags[f"dvc.{name}.path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            pointer = target.with_name(target.name + ".dvc")
            pointer.write_text(dvc_pointer(target.name, tags[f"dvc.{name}.md5"]))
            written[name] = pointer
    return written


def evidence_tags(evaluation: dict, train_metrics: dict, validation: dict) -> dict[str, str]:
    """Scores with their intervals, the base and full fine-tune scores compared against, and validation."""
    tags: dict[str, str] = {"eval.headline": str(evaluation.get("headline") or "accuracy"),
                            "eval.test_items": str(evaluation.get("test_items")),
                            "eval.test_set_sha256": str(evaluation.get("test_set_sha256"))}
    for model, scores in (evaluation.get("models") or {}).items():
        for key in ("accuracy", "accuracy_low", "accuracy_high", "macro_f1", "retention", "retention_drop"):
            if isinstance(scores.get(key), (int, float)):
                tags[f"eval.{model}.{key}"] = f"{scores[key]:.4f}"
    for name, diff in (evaluation.get("differences") or {}).items():
        tags[f"eval.{name}"] = f"{diff.get('mean', float('nan')):.4f} [{diff.get('low', float('nan')):.4f}, " \
                               f"{diff.get('high', float('nan')):.4f}]"
    if isinstance(evaluation.get("recovered_share"), (int, float)):
        tags["eval.recovered_share"] = f"{evaluation['recovered_share']:.4f}"
    for key in ("val_loss", "trainable_params", "adapter_bytes"):
        if key in train_metrics:
            tags[f"train.{key}"] = str(train_metrics[key])
    tags.update({"validation.success": str(validation.get("success")).lower(),
                 "validation.errors": str(validation.get("errors")),
                 "validation.warnings": str(validation.get("warnings")),
                 "validation.data_docs": str(validation.get("docs_index"))})
    return tags


def base_model_tags(info: dict[str, Any]) -> dict[str, str]:
    return {f"base_model.{k}": str(info.get(k)) for k in ("id", "revision", "licence")}
