"""Machine facts recorded beside every benchmark result, so numbers are never read without their context."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone

from loraops.core.allocator import active_allocator


def machine_info() -> dict:
    import torch

    info = {
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(), "python": platform.python_version(), "processor": platform.machine(),
        "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        # The malloc this process runs on (loraops.core.allocator): on CPU it moves RSS figures by gigabytes.
        "allocator": active_allocator(),
    }
    try:
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    for name in ("transformers", "peft", "bitsandbytes"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = None
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True)
        info["nvidia_smi"] = smi.stdout.strip()
    return info
