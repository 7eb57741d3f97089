"""What a training run cost in time and energy: wall, CPU and GPU seconds and an energy figure with its method.

- **CPU energy** comes from the RAPL counters (``/sys/class/powercap/intel-rapl:N/energy_uj``, one per CPU
  package, wrapping at ``max_energy_range_uj``) when they are readable. They measure the whole package, so
  other processes on the machine count too. Where they are not readable (most containers, non-Intel/AMD
  machines, unprivileged users on recent kernels) the figure is this process's CPU seconds times
  :data:`CPU_WATTS_PER_CORE`, labelled ``estimate: ...``.
- **GPU energy** comes from NVML (``pynvml``, when importable and CUDA is in use): the board's total energy
  counter where the GPU has one, else power readings sampled every :data:`NVML_SAMPLE_SECONDS`. GPU seconds
  are the sampled utilisation integrated over time (busy seconds), or the wall time when NVML is absent.

``energy_method`` names every source that went into ``energy_joules``: ``rapl``, ``estimate: 12 W per busy
core``, with `` + nvml`` when the GPU was measured.
"""

from __future__ import annotations

import re
import resource
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Power drawn per busy CPU core, in watts: the Green Algorithms calculator's default for a CPU of unknown
# model (Lannelongue, Grealey & Inouye, "Green Algorithms: Quantifying the Carbon Footprint of
# Computation", Advanced Science 2021; the TDP per core of common server CPUs is 10-15 W). A rough figure:
# records computed from it say "estimate".
CPU_WATTS_PER_CORE = 12.0
ESTIMATE_METHOD = f"estimate: {CPU_WATTS_PER_CORE:g} W per busy core"
RAPL_ROOT = Path("/sys/class/powercap")
NVML_SAMPLE_SECONDS = 0.2
_PACKAGE = re.compile(r"^intel-rapl:\d+$")  # packages only: their sub-zones (intel-rapl:0:0) are parts of them


@dataclass
class EnergyReading:
    wall_seconds: float
    cpu_seconds: float
    gpu_seconds: float | None
    energy_joules: float
    cpu_energy_joules: float
    gpu_energy_joules: float | None
    energy_method: str


def _cpu_seconds() -> float:
    """User + system CPU of this process (every thread) and of its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


class RaplCounters:
    """The package energy counters under ``root``; :meth:`read` is ``None`` when any is unreadable."""

    def __init__(self, root: Path = RAPL_ROOT):
        zones = sorted(p for p in root.glob("intel-rapl:*") if _PACKAGE.match(p.name)) if root.is_dir() else []
        self.zones = zones
        self.ranges = [_read_int(z / "max_energy_range_uj") for z in zones]

    def read(self) -> list[int] | None:
        if not self.zones:
            return None
        values = [_read_int(z / "energy_uj") for z in self.zones]
        return None if any(v is None for v in values) else values  # type: ignore[return-value]

    def joules_between(self, before: list[int], after: list[int]) -> float:
        """Energy between two readings; a counter that wrapped (after < before) went round its range once."""
        total = 0
        for start, end, span in zip(before, after, self.ranges):
            delta = end - start
            if delta < 0:
                delta += span or 0
            total += max(delta, 0)
        return total / 1e6


class _NvmlSampler(threading.Thread):
    """Samples every visible GPU's power and utilisation until stopped (a daemon thread)."""

    def __init__(self, nvml: Any):
        super().__init__(daemon=True, name="loraops-nvml")
        self.nvml = nvml
        self.handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
        self.counters = self._total_energy_mj()
        self.joules = 0.0
        self.busy_seconds = 0.0
        self.halt = threading.Event()

    def _total_energy_mj(self) -> list[int] | None:
        try:
            return [self.nvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in self.handles]
        except Exception:  # older GPUs have no energy counter: sampled power instead
            return None

    def run(self) -> None:
        last = time.perf_counter()
        while not self.halt.wait(NVML_SAMPLE_SECONDS):
            now = time.perf_counter()
            step, last = now - last, now
            for handle in self.handles:
                try:
                    self.joules += self.nvml.nvmlDeviceGetPowerUsage(handle) / 1000 * step
                    self.busy_seconds += self.nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100 * step
                except Exception:
                    pass

    def finish(self) -> tuple[float, float]:
        """(joules, busy GPU seconds) since the start."""
        self.halt.set()
        self.join(timeout=5)
        after = self._total_energy_mj()
        if self.counters is not None and after is not None:
            return sum(b - a for a, b in zip(self.counters, after)) / 1000, self.busy_seconds
        return self.joules, self.busy_seconds


def _nvml() -> Any | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:  # not installed, no driver, no GPU
        return None


class EnergyMeter:
    """``with EnergyMeter(cuda) as meter: ...`` then ``meter.reading`` (an :class:`EnergyReading`)."""

    def __init__(self, cuda: bool = False, rapl_root: Path = RAPL_ROOT):
        self.cuda = cuda
        self.rapl = RaplCounters(rapl_root)
        self.reading: EnergyReading | None = None

    def __enter__(self) -> EnergyMeter:
        self.sampler = None
        if self.cuda and (nvml := _nvml()) is not None:
            self.sampler = _NvmlSampler(nvml)
            self.sampler.start()
        self.rapl_before = self.rapl.read()
        self.cpu_before = _cpu_seconds()
        self.wall_before = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        wall = time.perf_counter() - self.wall_before
        cpu = _cpu_seconds() - self.cpu_before
        rapl_after = self.rapl.read()
        if self.rapl_before is not None and rapl_after is not None:
            cpu_joules, methods = self.rapl.joules_between(self.rapl_before, rapl_after), ["rapl"]
        else:
            cpu_joules, methods = cpu * CPU_WATTS_PER_CORE, [ESTIMATE_METHOD]
        gpu_joules = gpu_seconds = None
        if self.sampler is not None:
            gpu_joules, gpu_seconds = self.sampler.finish()
            methods.append("nvml")
        elif self.cuda:
            gpu_seconds = wall  # no NVML: the GPU was held for the whole run, its energy is unknown
        self.reading = EnergyReading(wall_seconds=wall, cpu_seconds=cpu, gpu_seconds=gpu_seconds,
                                     energy_joules=cpu_joules + (gpu_joules or 0.0), cpu_energy_joules=cpu_joules,
                                     gpu_energy_joules=gpu_joules, energy_method=" + ".join(methods))
