"""Every content hash loraops computes, in one place.

- sha256 of bytes, text, canonical JSON and files: fingerprints, cache keys, manifests;
- DVC's own md5 of a file or a folder (:func:`dvc_md5`): what ``dvc.lock`` records, so a registered version
  names outputs that ``dvc pull`` can bring back;
- :class:`HashMemo`: sha256 of large files remembered by (path, size, mtime, ctime, inode) in one memo file
  under the project's cache, so a 500 MB base model is read once, not on every run;
- :func:`library_versions`: the installed versions of the libraries a result depends on, for the
  fingerprints that must change when one is upgraded.

Fingerprints (what a cache key or a resume key covers) are built from these by the package that owns the
purpose; each says in its docstring what it covers.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

from loraops.core.io import write_json

CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    return sha256_bytes(text.encode("utf-8"))


def canonical_json(value: Any) -> str:
    """The one JSON form that hashes are taken over: sorted keys, no whitespace choices, non-JSON as str."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))


def sha256_json(value: Any) -> str:
    return sha256_text(canonical_json(value))


def _file_digest(path: Path, algorithm: str) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, algorithm).hexdigest()


def sha256_file(path: Path) -> str:
    return _file_digest(path, "sha256")


def md5_file(path: Path) -> str:
    return _file_digest(path, "md5")


def is_dvc_md5(value: str) -> bool:
    """32 lower-case hex digits, optionally ``.dir`` (a folder): the only form a DVC md5 takes."""
    digits = value.removesuffix(".dir")
    return len(digits) == 32 and all(c in "0123456789abcdef" for c in digits)


def dvc_md5(path: Path) -> str:
    """The md5 DVC records for ``path``: a file's own md5, or ``<md5 of the listing>.dir`` for a folder.

    The listing is DVC 3's: a JSON list of ``{"md5", "relpath"}`` sorted by relpath. Files DVC would not
    track in a folder (a ``.gitignore`` DVC writes, ``.dvcignore`` patterns) are not expected in stage
    outputs; a test against ``dvc commit`` guards that.
    """
    if path.is_file():
        return md5_file(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder to hash")
    entries = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for name in filenames:
            full = Path(dirpath) / name
            entries.append({"md5": md5_file(full), "relpath": full.relative_to(path).as_posix()})
    entries.sort(key=lambda e: e["relpath"])
    listing = json.dumps(entries, sort_keys=True).encode("utf-8")
    return hashlib.md5(listing).hexdigest() + ".dir"


def tree_sha256(folder: Path, file_hash: Callable[[Path], str] = sha256_file,
                patterns: tuple[str, ...] | None = None) -> dict[str, str]:
    """``{relative path: sha256}`` of the files under ``folder``, at any depth (all of them, or those whose
    name matches one of ``patterns``); ``.gitignore`` files DVC drops into outputs and hidden folders (a
    ``.git``, a ``.cache``) do not count."""
    if patterns is None:
        files = [p for p in folder.rglob("*") if p.is_file() and p.name != ".gitignore"]
    else:
        files = list({p for pattern in patterns for p in folder.rglob(pattern) if p.is_file()})
    files = [p for p in files if not any(part.startswith(".") for part in p.relative_to(folder).parts[:-1])]
    return {p.relative_to(folder).as_posix(): file_hash(p) for p in sorted(files)}


def library_versions(names: tuple[str, ...]) -> dict[str, str | None]:
    """``{package: installed version}`` (None when not installed), read from the package metadata."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


class HashMemo:
    """sha256 of files, remembered by (resolved path, size, mtime, ctime, inode, device) in one JSON file.

    Call it like :func:`sha256_file`; :meth:`save` writes what was learnt. A file whose stamp changed is
    hashed again. Size and mtime alone can be kept by an edit (``touch -r``, a tool restoring mtimes); the
    ctime changes on every write and cannot be set back from user space, and a replaced file has a new inode.
    """

    def __init__(self, memo_file: Path):
        self.path = memo_file
        try:
            self.known: dict[str, dict[str, Any]] = json.loads(memo_file.read_text()) if memo_file.is_file() else {}
        except ValueError:  # a torn memo is only a lost optimisation
            self.known = {}
        self.dirty = False

    def __call__(self, path: Path) -> str:
        stat = path.stat()
        key = str(path.resolve())
        stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]
        entry = self.known.get(key)
        if entry and entry.get("stamp") == stamp:
            return entry["sha256"]
        value = sha256_file(path)
        self.known[key] = {"stamp": stamp, "sha256": value}
        self.dirty = True
        return value

    def save(self) -> None:
        if self.dirty:
            write_json(self.path, self.known)
            self.dirty = False
