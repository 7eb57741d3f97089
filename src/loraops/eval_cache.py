"""A content-addressed cache of the base model's evaluation, so it re-runs only when something it depends on changes.

The key hashes everything the base model's scores depend on: the base model's files (content), the test
rows (prompts, answers, labels), the eval params, the metric code (``evals/`` modules and the evaluator
modules) and the versions of the libraries that compute them. Any change gives a new key, hence a miss.
It lives in the library (not a DAG stage), so ``dvc repro``, the Prefect flow and ``loraops stage`` all
hit it; the folder is ``.loraops/eval-cache`` (a cache, never a pipeline output).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from loraops.config import EvalParams
from loraops.project import read_json, write_json

_EVALUATOR_MODULES = ("evaluation.py", "retention.py", "eval_cache.py")


def file_sha256(path: Path, memo: dict[str, Any]) -> str:
    """Content hash, memoised by (path, size, mtime) so a 500 MB model is read once, not every run."""
    stat = path.stat()
    stamp = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    if memo.get(stamp) is None:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        memo[stamp] = digest.hexdigest()
    return memo[stamp]


def tree_digest(folder: Path, memo: dict[str, Any]) -> dict[str, str]:
    return {str(p.relative_to(folder)): file_sha256(p, memo) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".gitignore"}


def rows_sha256(rows: list[dict]) -> str:
    """Hash of the test items as the models see them (also reported as ``test_set_sha256``)."""
    canonical = [{"prompt": r["prompt"], "completion": r["completion"], "label": r["label"], "text": r["text"]}
                 for r in rows]
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def metric_code_digest(root: Path, metric_names: list[str]) -> dict[str, str]:
    from loraops.evaluation import METRIC_MODULES, metric_path

    library = Path(__file__).parent
    paths = {f"evals/{METRIC_MODULES[name]}": metric_path(METRIC_MODULES[name], root) for name in metric_names}
    paths.update({f"loraops/{name}": library / name for name in _EVALUATOR_MODULES})
    return {key: hashlib.sha256(path.read_bytes()).hexdigest() for key, path in sorted(paths.items())}


def library_versions() -> dict[str, str]:
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__}


class BaseEvalCache:
    def __init__(self, folder: Path):
        self.folder = folder
        self._memo_file = folder / "file_hashes.json"

    def key(self, base_dir: Path, rows: list[dict], params: EvalParams, root: Path,
            labels: list[str] | None) -> str:
        memo = read_json(self._memo_file) if self._memo_file.is_file() else {}
        before = dict(memo)
        parts = {"base_model": tree_digest(base_dir, memo), "test_rows": rows_sha256(rows),
                 "eval_params": params.model_dump(mode="json"), "labels": sorted(labels or []),
                 "code": metric_code_digest(root, params.metric_names()),
                 "libraries": library_versions()}
        if memo != before:
            write_json(self._memo_file, memo)
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.folder / f"base-{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        return read_json(path) if path.is_file() else None

    def put(self, key: str, result: dict[str, Any]) -> None:
        write_json(self._path(key), result)
