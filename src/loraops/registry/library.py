"""The adapter library: one base model in memory and the ``champion`` of several registered models on it,
each a named PEFT adapter (never a merged copy), answered per row in mixed batches.

- Every version is checked before it is used: its model folder against ``model.sha256``
  (:func:`loraops.registry.serving.download_verified`) and the base it was trained on (its
  ``base_model.sha256`` tag and its ``base_model`` file) against the served base. A mismatch refuses that
  adapter with the reason; the others are served.
- :meth:`AdapterLibrary.refresh` follows the ``champion`` aliases: a moved alias (promotion, rollback, a
  hand move in the UI) loads the new version next to the old one, swaps the name over, then deletes the old
  adapter. Generation and every change of the model's adapters hold one lock, so a request that started
  on the old version finishes on it and the next one gets the new version; none is dropped.
- Answers come from :func:`loraops.registry.serving.answer_texts`, the registered pyfunc's own path.
- Rows are routed to their adapters by :func:`loraops.registry.row_routing.row_router` (all adapters'
  LoRA products stacked per layer, PEFT's ``adapter_names`` path for what cannot be stacked).
- A composed version answers per row as the row's ``task`` (a source model) asks, with that task's prompt
  spec (:class:`loraops.registry.serving.AdapterTasks`), as its registered pyfunc does.
"""

from __future__ import annotations

import gc
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loraops.core import RegistryError, read_json
from loraops.core.tracking import Tracking
from loraops.modeling import base_content_sha256, load_base, load_tokenizer
from loraops.registry.promotion import CHAMPION
from loraops.registry.register import BASE_REFERENCE
from loraops.registry.row_routing import row_router
from loraops.registry.serving import AdapterTasks, adapter_dir, answer_texts, download_verified

BASE_SHA256_TAG = "base_model.sha256"


@dataclass
class ServedAdapter:
    model_name: str  # the registered model: what a request names
    version: str
    adapter_name: str  # the PEFT adapter's name on the base: "<model>@<version>"
    tasks: AdapterTasks  # what it answers: a composition each source's task, any other adapter its own
    folder: Path  # the temporary folder this library made for the verified copy (deleted with the adapter)


@dataclass
class LibraryState:
    served: dict[str, ServedAdapter] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)  # model name -> why its champion is not served
    refused_versions: set[str] = field(default_factory=set)  # "<model>@<version>" refused for good (hash, base)


def recorded_bases(version: Any, local: Path) -> set[str]:
    """The base hashes a downloaded version names: its ``base_model.sha256`` tag and its model's own
    ``base_model`` file (empty when it records none)."""
    recorded = {version.tags.get(BASE_SHA256_TAG)}
    for reference in local.rglob(BASE_REFERENCE):
        recorded.add(read_json(reference).get("base_model_sha256"))
    recorded.discard(None)
    return {str(r) for r in recorded}


def check_base(name: str, version: Any, local: Path, base_sha256: str, base_dir: Path) -> None:
    """A :class:`RegistryError` unless the version was trained on the base with content hash ``base_sha256``."""
    recorded = recorded_bases(version, local)
    if not recorded or recorded - {base_sha256}:
        shown = ", ".join(sorted(r[:16] + "..." for r in recorded)) or "no base hash"
        raise RegistryError(f"{name} version {version.version} was trained on base {shown}, not the served base "
                            f"{base_sha256[:16]}... ({base_dir}); refusing that adapter")


class AdapterLibrary:
    """``AdapterLibrary(tracking, base_dir, ["intent", "sentiment"]).refresh()`` then :meth:`answer`."""

    def __init__(self, tracking: Tracking, base_dir: Path, model_names: list[str], batch_size: int = 16,
                 alias: str = CHAMPION):
        self.tracking = tracking
        self.base_dir = Path(base_dir)
        self.model_names = list(dict.fromkeys(model_names))
        self.batch_size = batch_size
        self.alias = alias
        self.base_sha256 = base_content_sha256(self.base_dir)
        self.base = load_base(self.base_dir)
        self.base.eval()
        self.tokenizer = load_tokenizer(self.base_dir, padding_side="left")
        self.model: Any = None  # the PeftModel, made with the first adapter
        self.state = LibraryState()
        self.lock = threading.Lock()  # generation and every change of the model's adapters
        self.refreshing = threading.Lock()  # one refresh at a time (the poll and a caller)

    # --- following the aliases ---------------------------------------------------------------------------

    def _fetch(self, name: str) -> tuple[Any, Path, Path, AdapterTasks]:
        """(version, the folder made for it, its adapter folder, its tasks); the folder is removed again on any
        failure (only ever a folder made here: never a parent of the download)."""
        folder = Path(tempfile.mkdtemp(prefix=f"loraops-serve-{name}-"))
        try:
            version, local = download_verified(self.tracking, name, self.alias, into=folder)
            adapter = adapter_dir(local)
            check_base(name, version, local, self.base_sha256, self.base_dir)
            tasks = AdapterTasks(adapter, own=name)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return version, folder, adapter, tasks

    def _attach(self, adapter_name: str, adapter: Path) -> None:
        from peft import PeftModel

        if self.model is None:
            self.model = PeftModel.from_pretrained(self.base, adapter, adapter_name=adapter_name, is_trainable=False)
        else:
            self.model.load_adapter(str(adapter), adapter_name=adapter_name, is_trainable=False)
        self.model.eval()

    def refresh(self) -> list[str]:
        """Load every model's current champion that is not served yet; returns one line per change or refusal."""
        lines = []
        with self.refreshing:
            for name in self.model_names:
                line = self._refresh_one(name)
                if line:
                    lines.append(line)
            if self.model is not None:
                with self.lock:  # the stacks follow the served set now, not in the next request's time
                    router = row_router(self.model)
                    if router.signature != router.current_signature():
                        router.rebuild()
            if lines:
                # What was just loaded lives as long as it is served: out of the collector's way, so that a full
                # collection during a request does not walk the base, the adapters and every imported module.
                gc.collect()
                gc.freeze()
        return lines

    def _refresh_one(self, name: str) -> str | None:
        try:
            current = self.tracking.retry(self.tracking.client.get_model_version_by_alias, name, self.alias)
        except Exception as exc:
            return self._refuse(name, f"{name}: no {self.alias} to serve ({str(exc).splitlines()[0][:200]})")
        old = self.state.served.get(name)
        if old is not None and old.version == str(current.version):
            return None
        if f"{name}@{current.version}" in self.state.refused_versions:
            return None  # refused already, and it cannot change: not fetched again
        try:
            version, folder, adapter, tasks = self._fetch(name)
        except Exception as exc:
            if isinstance(exc, RegistryError):  # its bytes or its base: the same on every try
                self.state.refused_versions.add(f"{name}@{current.version}")
            return self._refuse(name, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        new = ServedAdapter(name, str(version.version), f"{name}@{version.version}", tasks, folder)
        with self.lock:  # in-flight generation finishes first; the next request sees the new version
            try:
                self._attach(new.adapter_name, adapter)
            except Exception as exc:
                shutil.rmtree(folder, ignore_errors=True)
                self.state.refused_versions.add(f"{name}@{version.version}")
                return self._refuse(name, f"{name} version {version.version}: {exc}".splitlines()[0])
            self.state.served[name] = new
            self.state.refused.pop(name, None)
            if old is not None:
                self.model.delete_adapter(old.adapter_name)
        if old is not None:
            shutil.rmtree(old.folder, ignore_errors=True)
            return f"{name}: now version {new.version} (was {old.version})"
        return f"{name}: serving version {new.version}"

    def _refuse(self, name: str, reason: str) -> str | None:
        """Record why ``name`` is not served (or not updated); the line to log, once per new reason."""
        if self.state.refused.get(name) == reason:
            return None
        self.state.refused[name] = reason
        return reason

    # --- answering ---------------------------------------------------------------------------------------

    def versions(self) -> dict[str, str]:
        return {name: served.version for name, served in self.state.served.items()}

    def refused(self) -> dict[str, str]:
        return dict(self.state.refused)

    def tasks(self) -> dict[str, list[str]]:
        """Each served composition's tasks (the source models a request may name as ``task``)."""
        return {name: served.tasks.names for name, served in self.state.served.items() if served.tasks.composed}

    def answer(self, rows: list[tuple[str, str]], tasks: list[str | None] | None = None) -> list[dict[str, str]]:
        """``[(text, model name)]`` -> ``[{"label", "adapter", "version"}]``, one mixed batch; row ``i`` asked as
        ``tasks[i]`` (for a composition a source model's name, for any other model its own name; ``None``: the
        model's default task). An unknown or refused model is a :class:`KeyError` naming it, a task the model
        does not answer a :class:`loraops.registry.serving.TaskError`, both checked before anything runs."""
        asked = list(tasks) if tasks is not None else [None] * len(rows)
        if len(asked) != len(rows):
            raise ValueError(f"{len(rows)} rows but {len(asked)} tasks")
        with self.lock:
            served = dict(self.state.served)
            for _, name in rows:
                if name not in served:
                    why = self.refused().get(name)
                    raise KeyError(f"adapter {name!r} is not served" + (f": {why}" if why else
                                   f" (served: {', '.join(sorted(served)) or 'none'})"))
            chosen = [served[name] for _, name in rows]
            specs = [c.tasks.spec(task, who=c.model_name) for c, task in zip(chosen, asked)]
            labels = answer_texts(self.model, self.tokenizer, specs, [t for t, _ in rows],
                                  self.batch_size, adapter_names=[c.adapter_name for c in chosen])
        answers = [{"label": label, "adapter": c.model_name, "version": c.version} for label, c in zip(labels, chosen)]
        for answer, c, task in zip(answers, chosen, asked):
            if c.tasks.composed:  # which task answered (the default where none was asked)
                answer["task"] = task if task is not None else str(c.tasks.default_task)
        return answers

    def close(self) -> None:
        for served in self.state.served.values():
            shutil.rmtree(served.folder, ignore_errors=True)


def log(line: str) -> None:
    print(f"loraops serve: {line}", file=sys.stderr, flush=True)
