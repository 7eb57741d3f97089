"""Which malloc the process runs on, and giving freed memory back to the operating system.

glibc's malloc keeps freed blocks in its heaps for reuse. A training step allocates and frees hundreds of
megabyte-sized temporaries (dequantised 4-bit weights, attention scores, MLP activations) between the
activations it keeps for backward; glibc cannot reuse most of the holes they leave, so within the first
forward pass its heap grows about 1.7 GB past the live tensors on SmolLM2-135M QLoRA (bench/profile_memory.py).
That retention, not the tensors, made QLoRA's peak 0.93x the full fine-tune's instead of about 0.55x.

mimalloc (Microsoft, MIT; on PyPI as ``cmeel-mimalloc``, a dependency) reuses those holes: QLoRA's training peak
over import was 1.85 GB against glibc's 3.45 GB, at the same step time (with :data:`PURGE_DELAY_MS`), so the
``loraops`` command starts itself again on it
(:func:`exec_on_chosen_allocator`); ``LORAOPS_ALLOCATOR=system`` keeps the system's malloc. A malloc can only
be replaced as a process starts (``LD_PRELOAD``), hence the re-exec rather than a setting read later.
Processes that do not start through ``loraops`` (a Prefect worker's flow runs, your notebook) can get the same
with :func:`allocator_environment`'s variables.

:func:`release_free_memory` hands back what the allocator still holds, once after each stage and each search
trial (glibc: ``malloc_trim``; mimalloc: ``mi_collect``), so it costs nothing per step.
Only Linux is covered; elsewhere the system's malloc is used and nothing here does anything.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Mapping, Sequence

ALLOCATOR_VARIABLE = "LORAOPS_ALLOCATOR"  # mimalloc (the default) | system
# mimalloc hands freed pages back after this many ms (its default: 1000). A training step reuses the same
# temporaries every few seconds; at 1 s each step gave back and faulted in again ~1.5 GB (QLoRA steps 1.3x as
# long), at 10 s the steps were as fast as glibc's with the same peak. Stage ends collect at once anyway.
PURGE_DELAY_MS = "10000"
CHOICES = ("mimalloc", "system")
# Set on the re-exec: if the preload failed (ld.so only warns), the new process must not exec again.
_REEXEC_MARK = "LORAOPS_ALLOCATOR_REEXEC"


def mimalloc_library() -> Path | None:
    """The mimalloc shared library that ``cmeel-mimalloc`` installed, or None (not installed, not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        dist = metadata.distribution("cmeel-mimalloc")
    except metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if file.name.startswith("libmimalloc.so.") and file.name.count(".") == 2:  # libmimalloc.so.3
            path = Path(dist.locate_file(file))
            if path.is_file():
                return path
    return None


def chosen_allocator(env: Mapping[str, str] | None = None) -> str:
    """The allocator ``LORAOPS_ALLOCATOR`` asks for; a value other than the choices is an error."""
    value = (os.environ if env is None else env).get(ALLOCATOR_VARIABLE, "mimalloc").strip().lower() or "mimalloc"
    if value not in CHOICES:
        raise ValueError(f"{ALLOCATOR_VARIABLE}={value!r} is not one of {', '.join(CHOICES)}")
    return value


def active_allocator() -> str:
    """'mimalloc' when this process runs on it, else 'system'."""
    try:
        ctypes.CDLL(None).mi_version  # noqa: B018  (only a process that loaded mimalloc has the symbol)
    except (AttributeError, OSError):
        return "system"
    return "mimalloc"


def allocator_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with what a new process needs to run on the chosen allocator."""
    out = dict(os.environ if env is None else env)
    library = mimalloc_library()
    if chosen_allocator(out) == "mimalloc" and library is not None:
        preload = [p for p in out.get("LD_PRELOAD", "").split(":") if p and "libmimalloc" not in p]
        out["LD_PRELOAD"] = ":".join([str(library), *preload])
        out.setdefault("MIMALLOC_PURGE_DELAY", PURGE_DELAY_MS)  # yours, when set
    return out


def exec_on_chosen_allocator(python_args: Sequence[str]) -> None:
    """Replace this process with ``python <python_args>`` on the chosen allocator, when it is not on it yet.

    Returns (doing nothing) when the process already runs on it, when the system's malloc was asked for, when
    mimalloc is not installed, or when this process is itself such a re-exec.
    """
    if os.environ.pop(_REEXEC_MARK, None):  # popped: this process's own children choose afresh
        return
    if chosen_allocator() != "mimalloc" or active_allocator() == "mimalloc" or mimalloc_library() is None:
        return
    env = allocator_environment()
    env[_REEXEC_MARK] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *python_args], env)


def release_free_memory() -> bool:
    """Return the allocator's free pages to the system; True when mimalloc's or glibc's call ran."""
    try:
        process = ctypes.CDLL(None)
        collect = process.mi_collect
    except (AttributeError, OSError):
        pass
    else:
        collect.argtypes, collect.restype = [ctypes.c_bool], None
        collect(True)  # force: purge the free pages now, whatever the purge delay
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return False  # neither mimalloc nor glibc
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True
