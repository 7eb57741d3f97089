"""Lineage of a registered version: where its data and adapter came from, as content hashes DVC can restore.

A version carries a short, fixed set of tags (:func:`version_tags`: scores, base model, dataset md5, git
commit; the promotion adds ``decision`` and ``gates``) so that the MLflow UI's versions table stays readable.
The full lineage is ``lineage.json`` on the version's run (:func:`lineage_record`). Its DVC outputs follow
one schema, read back by :func:`restore_pointers` (and so by ``loraops restore``): ``dvc.NAME.path`` and
``dvc.NAME.md5`` for NAME in dataset, prepared, adapter (:func:`pointer_tags`; versions registered before
``lineage.json`` carry the same keys as tags).

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


def format_score(value: float, low: float | None = None, high: float | None = None) -> str:
    """``0.8125 [0.7500, 0.8700]``: a score and its interval as one tag value (read back by :func:`parse_score`)."""
    if low is None or high is None:
        return f"{value:.4f}"
    return f"{value:.4f} [{low:.4f}, {high:.4f}]"


def parse_score(text: str | None) -> tuple[float | None, float | None, float | None]:
    """(value, low, high) from :func:`format_score`'s text; Nones for what is not there or not a number."""
    if not text:
        return None, None, None
    head, _, rest = text.partition("[")
    try:
        value = float(head)
    except ValueError:
        return None, None, None
    try:
        low, high = (float(x) for x in rest.rstrip("] ").split(","))
    except ValueError:
        return value, None, None
    return value, low, high


def version_tags(outputs: dict[str, str], evaluation: EvaluationSummary, base: dict[str, Any],
                 git: dict[str, str]) -> dict[str, str]:
    """The short, fixed set of tags every version carries (the promotion adds ``decision`` and ``gates``):
    the headline score with its interval for each model, the adapter's retention drop, the base model's id
    and content hash, the dataset's DVC md5, the test set's hash and the git commit. Everything else is
    in the run's ``lineage.json`` (:func:`lineage_record`). ``outputs`` is :func:`lineage_tags`' result."""
    metric = evaluation.headline
    tags = {}
    for model, scores in evaluation.models.items():
        value = scores.score(metric)
        if value is not None:
            tags[f"{model}.{metric}"] = format_score(value, *scores.interval(metric))
    adapter = evaluation.model("adapter")
    if adapter is not None and adapter.retention_drop is not None:
        tags["adapter.retention_drop"] = f"{adapter.retention_drop:.4f}"
    tags.update({"base_model.id": str(base.get("id")),
                 "base_model.sha256": str(base.get("content_sha256") or "unknown"),
                 "dataset.md5": outputs["dvc.dataset.md5"], "test_set.sha256": evaluation.test_set_sha256,
                 "git.commit": git.get("git.commit", "none")})
    return tags


def lineage_record(outputs: dict[str, str], evaluation: EvaluationSummary, train: TrainRecord,
                   validation: ValidationSummary, base: dict[str, Any], git: dict[str, str],
                   run_id: str, search_run_id: str | None) -> dict[str, Any]:
    """Everything a version came from, logged as ``lineage.json`` on its run: the DVC outputs with their md5
    (what ``loraops restore`` reads), params hash, git, base model, validation, training and evaluation.
    ``outputs`` is :func:`lineage_tags`' result."""
    outputs = dict(outputs)
    return {
        "run_id": run_id, "search_run_id": search_run_id,
        "dvc": {"hash": outputs.pop("dvc.hash"),
                **{name: {"path": outputs[f"dvc.{name}.path"], "md5": outputs[f"dvc.{name}.md5"]}
                   for name in TRACKED_OUTPUTS}},
        "params_sha256": outputs["params.sha256"], "git": git,
        "base_model": {k: base.get(k) for k in ("id", "revision", "licence", "content_sha256", "source",
                                                 "parameters")},
        "validation": {"success": validation.success, "errors": validation.errors, "warnings": validation.warnings,
                       "data_docs": f"runs:/{run_id}/validation/data_docs.html" if validation.docs_page else None},
        "train": train.model_dump(mode="json", exclude_none=True),
        "evaluation": evaluation.to_json(),
    }


def pointer_tags(lineage: dict[str, Any]) -> dict[str, str]:
    """``dvc.NAME.path`` / ``dvc.NAME.md5`` from a ``lineage.json``, the form :func:`recorded_outputs` reads
    (older versions carry the same keys as tags)."""
    found = {}
    for name in TRACKED_OUTPUTS:
        entry = (lineage.get("dvc") or {}).get(name)
        if isinstance(entry, dict) and isinstance(entry.get("path"), str) and isinstance(entry.get("md5"), str):
            found[f"dvc.{name}.path"], found[f"dvc.{name}.md5"] = entry["path"], entry["md5"]
    return found


def base_model_tags(info: dict[str, Any]) -> dict[str, str]:
    """The base the adapter was trained on: its id, revision, licence and content hash (``base_model.sha256``)."""
    tags = {f"base_model.{k}": str(info[k]) for k in ("id", "revision", "licence") if info.get(k) is not None}
    if info.get("content_sha256"):
        tags["base_model.sha256"] = str(info["content_sha256"])
    return tags
