"""``loraops restore``: a registered version's dataset, prepared splits and adapter, back from DVC.

The one restore path: the version's lineage (``dvc.NAME.path`` / ``dvc.NAME.md5`` in ``lineage.json`` on its
run, or in the tags of versions registered before it, see :mod:`loraops.registry.lineage`) becomes ``.dvc``
pointers in a staging folder, ``dvc pull`` fills them from the remote (or ``dvc checkout`` from the cache when
no remote is configured), and each output then replaces the project's copy at its recorded path. ``dvc.lock``
is left as it is.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from loraops.config import Params
from loraops.core import Layout, RegistryError
from loraops.core.tracking import connect, is_missing
from loraops.pipeline import dvc
from loraops.registry import recorded_outputs, restore_pointers, version_lineage, version_of_run


def find_version(layout: Layout, params: Params, ref: str):
    """``ref`` is a version number of ``registry.model_name`` or the id of the run that registered one."""
    tracking = connect(layout, params.registry)
    name = params.registry.model_name
    if ref.isdigit():
        try:
            return tracking.retry(tracking.client.get_model_version, name, ref)
        except Exception as exc:
            if is_missing(exc):
                raise RegistryError(f"{name} has no version {ref} (see `loraops models`)") from None
            raise
    version = version_of_run(tracking, name, ref)
    if version is None:
        raise RegistryError(f"run {ref} registered no version of {name} (see `loraops models`)")
    return version


def restore_version(layout: Layout, params: Params, ref: str) -> dict:
    """Put back the outputs version ``ref`` was registered with; returns what was restored where."""
    version = find_version(layout, params, ref)
    lineage = version_lineage(connect(layout, params.registry), version)
    outputs = recorded_outputs(lineage)
    if not outputs:
        raise RegistryError(f"version {version.version} has no DVC lineage (lineage.json or dvc.*.md5 tags); "
                            "nothing to restore")
    staging = Path(tempfile.mkdtemp(prefix=".restore-", dir=layout.root))
    try:
        pointers = restore_pointers(lineage, staging)
        remote = dvc.pull(layout.root, [str(p.relative_to(layout.root)) for p in pointers.values()])
        for name, (relative, _) in outputs.items():
            restored, target = staging.joinpath(*relative.parts), layout.root.joinpath(*relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            # The project's copy moves aside first, so a failure here leaves it (or the restored one) whole.
            aside = staging / ".previous" / name
            aside.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                target.rename(aside)
            restored.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"version": int(version.version), "run_id": version.run_id, "remote": remote["remote"],
            "outs": {str(rel): md5 for rel, md5 in outputs.values()}}
