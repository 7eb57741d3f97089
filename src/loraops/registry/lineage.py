"""Lineage of a registered version: where its data and adapter came from, as content hashes DVC can restore.

The tags follow one schema, written here and read back by :func:`restore_pointers` (and so by
``loraops restore``): ``dvc.NAME.path`` and ``dvc.NAME.md5`` for NAME in dataset, prepared, adapter.

The hashes are computed with DVC's own algorithm (:func:`loraops.core.hashing.dvc_md5`) instead of being read
from ``dvc.lock``: under ``loraops run`` dvc.lock is only written by the ``dvc commit`` at the end of the
flow, after ``register``, so it would still describe the previous run. The values are the ones that commit
(or ``dvc repro``) records in dvc.lock, which a test checks, and with them a ``.dvc`` file brings the exact
bytes back from the DVC cache or remote. The library never imports DVC.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from loraops.config import Params, params_digest
from loraops.core import Layout, RegistryError
from loraops.core.hashing import dvc_md5, is_dvc_md5, sha256_json, tree_sha256
from loraops.evaluation import EvaluationSummary
from loraops.training import TrainRecord
from loraops.validation import ValidationSummary

TRACKED_OUTPUTS = ("dataset", "prepared", "adapter")
# The logged model's content hash, on the version (the registry, not the artifact store): loading checks it
# before MLflow runs the model's code (loraops.registry.serving.load_verified).
MODEL_SHA256_TAG = "model.sha256"
# Files MLflow itself adds to a downloaded model folder; they are not part of what was logged.
_ADDED_ON_DOWNLOAD = ("registered_model_meta",)


def model_sha256(folder: Path) -> str:
    """sha256 over every file of a logged model folder (MLmodel, the code MLflow runs, the adapter)."""
    files = tree_sha256(folder)
    for name in _ADDED_ON_DOWNLOAD:
        files.pop(name, None)
    return sha256_json(files)


def tracked_outputs(layout: Layout) -> dict[str, Path]:
    """The DVC outputs a version is traced to: tag name -> path in the layout."""
    return {"dataset": layout.raw_data, "prepared": layout.prepared_dir, "adapter": layout.adapter_dir}


def lineage_tags(layout: Layout, params: Params) -> dict[str, str]:
    """``dvc.NAME.path`` / ``dvc.NAME.md5`` for the dataset, prepared splits and adapter, plus the params hash."""
    tags = {"params.sha256": params_digest(params), "dvc.hash": "md5 (DVC 3 algorithm, computed at register time)"}
    for name, path in tracked_outputs(layout).items():
        tags[f"dvc.{name}.path"] = path.relative_to(layout.root).as_posix()
        tags[f"dvc.{name}.md5"] = dvc_md5(path)
    return tags


def dvc_pointer(name: str, md5: str) -> str:
    """The text of a ``.dvc`` file that makes ``dvc checkout``/``dvc pull`` restore ``md5`` as ``name``
    beside it."""
    return f"outs:\n- md5: {md5}\n  path: {name}\n  hash: md5\n"


def recorded_outputs(tags: dict[str, str]) -> dict[str, tuple[PurePosixPath, str]]:
    """``{name: (relative path, md5)}`` from a version's tags, refusing anything that is not a plain relative
    path inside the project or not a DVC md5 (a tag is data from the registry, not a trusted instruction)."""
    found = {}
    for name in TRACKED_OUTPUTS:
        path, md5 = tags.get(f"dvc.{name}.path"), tags.get(f"dvc.{name}.md5")
        if path is None or md5 is None:
            continue
        relative = PurePosixPath(path)
        if relative.is_absolute() or not relative.parts or ".." in relative.parts or "\\" in path or \
                any(c in path for c in "\n\r\0"):
            raise RegistryError(f"tag dvc.{name}.path {path!r}: not a relative path inside the project")
        if not is_dvc_md5(md5):
            raise RegistryError(f"tag dvc.{name}.md5 {md5!r}: not a DVC md5 (32 hex digits, optionally .dir)")
        found[name] = (relative, md5)
    return found


def restore_pointers(tags: dict[str, str], into: Path) -> dict[str, Path]:
    """From a version's tags alone, write one ``.dvc`` file per recorded output under ``into`` (inside a
    DVC repository), mirroring the project's paths; ``dvc pull``/``dvc checkout`` on them restores the bytes."""
    written = {}
    for name, (relative, md5) in recorded_outputs(tags).items():
        target = into / Path(*relative.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        pointer = target.with_name(target.name + ".dvc")
        pointer.write_text(dvc_pointer(target.name, md5))
        written[name] = pointer
    return written


def evidence_tags(evaluation: EvaluationSummary, train: TrainRecord, validation: ValidationSummary) -> dict[str, str]:
    """Scores with their intervals, the base and full fine-tune scores compared against, and validation."""
    tags: dict[str, str] = {"eval.headline": evaluation.headline, "eval.test_items": str(evaluation.test_items),
                            "eval.test_set_sha256": evaluation.test_set_sha256}
    for model, scores in evaluation.models.items():
        for key in ("accuracy", "accuracy_low", "accuracy_high", "macro_f1", "retention", "retention_drop"):
            value = getattr(scores, key)
            if value is not None:
                tags[f"eval.{model}.{key}"] = f"{value:.4f}"
    for name, diff in evaluation.differences.items():
        tags[f"eval.{name}"] = f"{diff.mean:.4f} [{diff.low:.4f}, {diff.high:.4f}]"
    if evaluation.recovered_share is not None:
        tags["eval.recovered_share"] = f"{evaluation.recovered_share:.4f}"
    tags["train.val_loss"] = str(train.val_loss)
    tags["train.trainable_params"] = str(train.trainable_params)
    if train.adapter_bytes is not None:
        tags["train.adapter_bytes"] = str(train.adapter_bytes)
    tags.update({"validation.success": str(validation.success).lower(), "validation.errors": str(validation.errors),
                 "validation.warnings": str(validation.warnings),
                 "validation.data_docs": str(validation.docs_index)})
    return tags


def base_model_tags(info: dict[str, Any]) -> dict[str, str]:
    """The base the adapter was trained on: its id, revision, licence and content hash (``base_model.sha256``)."""
    tags = {f"base_model.{k}": str(info.get(k)) for k in ("id", "revision", "licence")}
    tags["base_model.sha256"] = str(info.get("content_sha256"))
    return tags
