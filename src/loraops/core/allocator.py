"""Give the memory a finished stage freed back to the operating system.

glibc's malloc keeps freed blocks in its heaps for reuse; a training step's activations (megabytes each,
freed after backward) stay there after the step, and after the stage. When one process runs the stages one
after another (``loraops run``, the Prefect flow), the next stage then starts with the last one's high-water
mark still resident. :func:`release_free_memory` (glibc's ``malloc_trim``) hands the free pages back; it is
called once after each stage and each search trial, so it costs nothing per step.

What the allocator's retention costs within a step was measured (bench/profile_memory.py, 'mmap-every-block':
every block over 64 KiB in its own mapping, unmapped when freed): on SmolLM2-135M QLoRA's peak over import
fell from 3.8 GB to 1.7 GB, but each step took 2-4x as long (a page fault for every fresh page), so the
pipeline does not do that.
Elsewhere than glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util


def release_free_memory() -> bool:
    """Return the allocator's free pages to the system; True when glibc's ``malloc_trim`` ran."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return False  # not glibc
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True
