"""The newcomer's run, measured: a fresh clone, the README's first command (`make demo`: set up, then run the
pipeline on the shipped defaults), then `loraops predict`.

    python -m bench.demo_fresh_clone --out bench/results/demo_fresh_clone.json [--keep DIR]

The clone is of this repository's HEAD (committed files only, as a newcomer gets them). Per-stage seconds are
the time from one stage's "starting stage NAME" log line to the next one's (the last stage's runs until the
flow ends), stamped as the lines arrive. Setup is the time until the pipeline's first log line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

import yaml

from bench.machine import machine_info

REPO = Path(__file__).resolve().parents[1]
STARTING = re.compile(r"starting stage (\w+)")


class TreeMemory:
    """Samples the resident memory of a process and all its descendants every half second: the largest
    single process and the largest sum seen (the run's stages, the Prefect server and spawned workers)."""

    def __init__(self, pid: int) -> None:
        self.root, self.peak_process_mb, self.peak_tree_mb = pid, 0.0, 0.0
        self.started = time.monotonic()
        self.samples: list[tuple[float, float]] = []  # (seconds since start, largest process RSS in MB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            try:
                root = psutil.Process(self.root)
                rss = []
                for proc in [root, *root.children(recursive=True)]:
                    try:
                        rss.append(proc.memory_info().rss / 2**20)
                    except psutil.Error:
                        pass
            except psutil.Error:
                continue
            if rss:
                self.samples.append((time.monotonic() - self.started, max(rss)))
                self.peak_process_mb = max(self.peak_process_mb, max(rss))
                self.peak_tree_mb = max(self.peak_tree_mb, sum(rss))

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {"peak_process_rss_mb": round(self.peak_process_mb, 1), "peak_tree_rss_mb": round(self.peak_tree_mb, 1),
                "samples": self.samples}


def timed_lines(cmd: list[str], cwd: Path, env: dict, log,
                memory: dict | None = None) -> tuple[int, list[tuple[float, str]]]:
    started = time.monotonic()
    lines: list[tuple[float, str]] = []
    process = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               bufsize=1)
    sampler = TreeMemory(process.pid) if memory is not None else None
    for line in process.stdout:
        stamp = time.monotonic() - started
        lines.append((stamp, line.rstrip("\n")))
        log.write(f"{stamp:8.1f} {line}")
        log.flush()
    code = process.wait()
    if sampler is not None:
        memory.update(sampler.stop())
    return code, lines


def stage_seconds(lines: list[tuple[float, str]], end: float) -> dict[str, float]:
    starts = [(stamp, m.group(1)) for stamp, line in lines if (m := STARTING.search(line))]
    out: dict[str, float] = {}
    for (stamp, name), following in zip(starts, [*starts[1:], (end, None)]):
        out[name] = round(out.get(name, 0.0) + following[0] - stamp, 1)
    return out


def stage_peak_rss(lines: list[tuple[float, str]], samples: list[tuple[float, float]], end: float) -> dict:
    """Largest process RSS (MB) sampled while each stage ran (from its 'starting stage' line to the next)."""
    starts = [(stamp, m.group(1)) for stamp, line in lines if (m := STARTING.search(line))]
    out: dict[str, float] = {}
    for (stamp, name), following in zip(starts, [*starts[1:], (end, None)]):
        seen = [rss for t, rss in samples if stamp <= t < following[0]]
        if seen:
            out[name] = round(max(out.get(name, 0.0), max(seen)), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--keep", help="clone into this folder and keep it (default: a temporary folder)")
    args = parser.parse_args()
    dest = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="loraops-fresh-")) / "loraops"
    if dest.exists():
        shutil.rmtree(dest)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    subprocess.run(["git", "clone", "-q", str(REPO), str(dest)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH", "MLFLOW_", "PREFECT_"))}
    env["PATH"] = ":".join(p for p in env["PATH"].split(":") if ".venv" not in p)
    log_path = Path(args.out).with_suffix(".log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log_path.open("w") as log:
        memory: dict = {}
        code, lines = timed_lines(["make", "demo"], dest, env, log, memory)
        wall = time.monotonic() - started
        first_flow_line = next((stamp for stamp, line in lines if " | INFO " in line or " | WARNING " in line), None)
        predict_code, predicted = timed_lines([str(dest / ".venv" / "bin" / "loraops"), "predict", "where is my parcel"],
                                              dest, env, log)
    registration = dest / "metrics" / "registration.json"
    summary = dest / "metrics" / "summary.json"
    registered = json.loads(registration.read_text()) if registration.is_file() else {}
    decision = registered.get("decision", "")
    result = {
        "benchmark": "demo_fresh_clone", "machine": machine_info(), "commit": commit,
        "command": "make demo", "exit_code": code, "wall_seconds": round(wall, 1),
        "setup_seconds": None if first_flow_line is None else round(first_flow_line, 1),
        "stage_seconds": stage_seconds(lines, wall),
        "stage_peak_process_rss_mb": stage_peak_rss(lines, memory.pop("samples", []), wall),
        # As the clone's params say (the stage logs "starting stage search" either way).
        "search_enabled": bool(yaml.safe_load((dest / "params.yaml").read_text())["search"]["enabled"]),
        "decision": decision, "version": registered.get("version"),
        "champion_version": registered.get("version") if str(decision).startswith("champion") else None,
        "gates": registered.get("gates"),
        "summary": json.loads(summary.read_text()) if summary.is_file() else None,
        "predict_exit_code": predict_code, "predict_output": [line for _, line in predicted][-3:],
        # Sampled every 0.5 s over `make demo` (setup included): goal, the largest process at most 3 GB.
        **memory, "peak_rss_goal_mb": 3072,
        "load_average_1m_at_end": os.getloadavg()[0],
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result.get(k) for k in ("exit_code", "wall_seconds", "decision", "champion_version",
                                                "peak_process_rss_mb", "peak_tree_rss_mb")}))
    if not args.keep:
        shutil.rmtree(dest.parent, ignore_errors=True)
    sys.exit(0 if code == 0 else 1)


if __name__ == "__main__":
    main()
