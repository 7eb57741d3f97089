"""The DVC side of a retrain: commit outputs, push them to the remote, pull them back, undo a failed run.

Everything goes through the ``dvc`` command line (the library never imports DVC). The remote is the
project's default (``.dvc-storage/``, see ``.dvc/config``) unless ``LORAOPS_DVC_REMOTE_URL`` names another
(a folder, or ``s3://bucket/path`` on MinIO with ``MLFLOW_S3_ENDPOINT_URL`` and the ``AWS_*`` keys from
the environment). That remote is written to ``.dvc/config.local``, which git ignores: no URL with
credentials ends up committed, and credentials themselves are never written anywhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from loraops.core import LoraopsError
from loraops.core.tracking import redact_url

REMOTE_URL_ENV = "LORAOPS_DVC_REMOTE_URL"
S3_ENDPOINT_ENV = "MLFLOW_S3_ENDPOINT_URL"  # MinIO serves MLflow artifacts and the DVC remote alike
ENV_REMOTE_NAME = "loraops-env"


class DvcCommandError(LoraopsError):
    """A dvc command failed; the message holds the command and the tail of its error output."""


def dvc(root: Path, *args: str, timeout: float = 1800) -> str:
    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True,
                            env=env, timeout=timeout)
    if result.returncode != 0:
        # The command line and DVC's own message may hold a remote URL with credentials.
        raise DvcCommandError(redact_url(f"dvc {' '.join(args)} (in {root}) failed: "
                                         f"{(result.stderr or result.stdout).strip()[-800:]}"))
    return result.stdout


def is_dvc_project(root: Path) -> bool:
    return (root / "dvc.yaml").is_file() and (root / ".dvc").is_dir()


def remote_name(root: Path) -> str:
    """The remote to push to: ``LORAOPS_DVC_REMOTE_URL`` when set (configured locally), else the default."""
    url = os.environ.get(REMOTE_URL_ENV)
    if not url:
        name = dvc(root, "remote", "default").strip()
        if not name:
            raise DvcCommandError(f"{root}: no default DVC remote and {REMOTE_URL_ENV} is not set")
        return name
    if "://" not in url:  # a folder: absolute, so the flow's working directory does not matter
        url = str((root / url).resolve())
    dvc(root, "remote", "add", "--local", "--force", ENV_REMOTE_NAME, url)
    if url.startswith("s3://") and os.environ.get(S3_ENDPOINT_ENV):
        dvc(root, "remote", "modify", "--local", ENV_REMOTE_NAME, "endpointurl", os.environ[S3_ENDPOINT_ENV])
    return ENV_REMOTE_NAME


def remote_url(root: Path, name: str) -> str:
    """The remote's URL as it may be shown (credentials redacted): it goes into results, artifacts and logs."""
    for line in dvc(root, "remote", "list").splitlines():
        parts = line.split()
        if len(parts) > 1 and parts[0] == name:  # skip stray lines (warnings) dvc may print
            return redact_url(parts[1])
    return ""


def commit(root: Path, stages: list[str]) -> None:
    """Record ``stages``' current outputs in dvc.lock and the cache (the outputs were made by our run)."""
    dvc(root, "commit", "--force", "--quiet", *stages)


def push(root: Path) -> dict[str, str]:
    name = remote_name(root)
    dvc(root, "push", "--remote", name)
    return {"remote": name, "url": remote_url(root, name)}


def pull(root: Path, targets: list[str]) -> dict[str, str]:
    """Bring ``targets`` (``.dvc`` files or stage outputs) back from the remote; when no remote is configured,
    from the local cache only."""
    try:
        name = remote_name(root)
    except DvcCommandError:
        dvc(root, "checkout", *targets)
        return {"remote": "", "url": ""}
    dvc(root, "pull", "--remote", name, *targets)
    return {"remote": name, "url": remote_url(root, name)}


def lock_hashes(root: Path) -> dict[str, str]:
    """``{out path: md5}`` of every cached output in dvc.lock (a folder's md5 ends in ``.dir``)."""
    lock = root / "dvc.lock"
    if not lock.is_file():
        return {}
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    return {out["path"]: out["md5"] for stage in stages.values() for out in stage.get("outs", []) if "md5" in out}


def _cache_objects(root: Path) -> set[Path]:
    files = root / ".dvc" / "cache" / "files"
    return {p for p in files.rglob("*") if p.is_file()} if files.is_dir() else set()


@dataclass
class Snapshot:
    """dvc.lock and the cache as they were before a run, so a failed run can be undone."""

    root: Path
    lock_text: str | None
    objects: set[Path] = field(default_factory=set)

    @classmethod
    def take(cls, root: Path) -> "Snapshot":
        lock = root / "dvc.lock"
        return cls(root, lock.read_text() if lock.is_file() else None, _cache_objects(root))

    def restore(self) -> list[Path]:
        """Put dvc.lock back and delete the cache objects added since; returns the deleted objects.

        Safe because DVC links outputs into the workspace by copy/reflink on the default configuration
        (a hardlink/symlink cache would lose those workspace files too: loraops does not configure one).
        """
        lock = self.root / "dvc.lock"
        if self.lock_text is None:
            lock.unlink(missing_ok=True)
        else:
            lock.write_text(self.lock_text)
        added = sorted(_cache_objects(self.root) - self.objects)
        for path in added:
            path.unlink(missing_ok=True)
        return added
