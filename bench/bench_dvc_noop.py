"""How long `dvc repro` takes when nothing changed (acceptance: at most 10 s), in a project that has run.

    python -m bench.bench_dvc_noop [--repo .] [--repeats 3] --out bench/results/dvc_noop.json
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from bench.machine import machine_info


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repo", default=".")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    dvc = str(Path(sys.executable).with_name("dvc"))
    timings, reran = [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        proc = subprocess.run([dvc, "repro"], cwd=args.repo, capture_output=True, text=True)
        timings.append(time.perf_counter() - started)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr)
        reran += re.findall(r"Running stage '(\w+)'", proc.stdout)
    report = {"benchmark": "dvc_repro_noop", "machine": machine_info(), "seconds": timings,
              "max_seconds": max(timings), "stages_rerun": reran}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("seconds", "max_seconds", "stages_rerun")}))


if __name__ == "__main__":
    main()
