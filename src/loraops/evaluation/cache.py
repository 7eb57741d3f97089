"""A content-addressed cache of the base model's evaluation, so it re-runs only when something it depends on changes.

The key hashes everything the base model's scores depend on: the base model's files (content), the test
rows (prompts, answers, labels), the eval params (constraint and number of shots among them), the shots and
system prompt it is asked with, the metric code (``evals/`` modules, the evaluator and prompt modules) and
the versions of the libraries that compute them. Any change gives a new key, hence a miss.
It lives in the library (not a DAG stage), so ``dvc repro``, the Prefect flow and ``loraops stage`` all
hit it; the folder is ``.loraops/eval-cache`` (a cache, never a pipeline output).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loraops.config import EvalParams
from loraops.core import read_json, write_json
from loraops.core.hashing import HashMemo, sha256_file, sha256_json, tree_sha256
from loraops.evaluation.metrics import METRIC_MODULES, metric_path

# The evaluator's own code: a change to how answers are generated or scored is a change of the result.
_EVALUATOR_MODULES = ("evaluator.py", "metrics.py", "retention.py", "cache.py", "constrained.py", "prefix.py")


def rows_sha256(rows: list[dict]) -> str:
    """Hash of the test items as the models see them (also reported as ``test_set_sha256``)."""
    return sha256_json([{"prompt": r["prompt"], "completion": r["completion"], "label": r["label"], "text": r["text"]}
                        for r in rows])


def metric_code_digest(root: Path, metric_names: list[str]) -> dict[str, str]:
    library = Path(__file__).parent
    paths = {f"evals/{METRIC_MODULES[name]}": metric_path(METRIC_MODULES[name], root) for name in metric_names}
    paths.update({f"loraops/evaluation/{name}": library / name for name in _EVALUATOR_MODULES})
    paths["loraops/data/answers.py"] = library.parent / "data" / "answers.py"  # the answer normalisation
    paths["loraops/data/prompts.py"] = library.parent / "data" / "prompts.py"  # the base model's prompt
    return {key: sha256_file(path) for key, path in sorted(paths.items())}


def library_versions() -> dict[str, str]:
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__}


class BaseEvalCache:
    """``base-<key>.json`` files under ``folder``; the file hashes of the base model go to ``memo``."""

    def __init__(self, folder: Path, memo: HashMemo):
        self.folder = folder
        self.memo = memo

    def key(self, base_dir: Path, rows: list[dict], params: EvalParams, root: Path,
            labels: list[str] | None, shots: list[dict] | None = None, system_prompt: str | None = None) -> str:
        """The cache key: the base model's files (content), the test rows, the eval params (constraint and
        number of shots among them), the label set, the shots and system prompt of the base model's prompt,
        the metric, evaluator and prompt code, and the torch and transformers versions."""
        parts = {"base_model": tree_sha256(base_dir, self.memo), "test_rows": rows_sha256(rows),
                 "eval_params": params.model_dump(mode="json"), "labels": sorted(labels or []),
                 "base_prompt": {"shots": [{"text": r["text"], "label": r["label"]} for r in shots or []],
                                 "system_prompt": system_prompt},
                 "code": metric_code_digest(root, params.metric_names()),
                 "libraries": library_versions()}
        self.memo.save()
        return sha256_json(parts)

    def _path(self, key: str) -> Path:
        return self.folder / f"base-{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        return read_json(path) if path.is_file() else None

    def put(self, key: str, result: dict[str, Any]) -> None:
        write_json(self._path(key), result)
