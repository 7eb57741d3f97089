"""Memory as the training records report it: the peak since a reset and the level now.

On CUDA: allocated memory (``max_memory_allocated``). On Linux CPU: the RSS high-water mark (VmHWM), which
``reset_peak_memory`` restarts, so one process running two stages (the Prefect flow) measures each alone.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path


def _proc_status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**10
    except OSError:
        pass
    return None


def reset_peak_memory() -> None:
    """Start a new peak: CUDA's counter, or on Linux the RSS high-water mark (so one process running two
    stages, like the Prefect flow, measures each on its own)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # not Linux: the peak falls back to the process lifetime (ru_maxrss)


def peak_memory_mb() -> float:
    """Peak RSS on CPU since :func:`reset_peak_memory` (VmHWM), or peak allocated CUDA memory."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    hwm = _proc_status_mb("VmHWM")
    if hwm is not None:
        return hwm
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def current_memory_mb() -> float:
    """RSS now on CPU, or allocated CUDA memory now: the baseline a peak is compared with."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.memory_allocated() / 2**20
    rss = _proc_status_mb("VmRSS")
    return rss if rss is not None else float("nan")
