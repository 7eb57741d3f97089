"""Where the time of one validation goes, phase by phase (wall clock), for one row count.

    flock /work/heavy.lock python -m bench.profile_validation --rows 1500000 --base /work/exp/models/base

Wraps the validation's own functions with timers (no profiler overhead on the Python loops) and prints one
JSON line: seconds per phase, GX seconds per table, and the peak RSS.
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import tempfile
import time
from pathlib import Path

from bench.scaling import _peak_rss_mb, expanded_records

PHASES: dict[str, float] = {}


def timed(module, name: str, label: str | None = None) -> None:
    original = getattr(module, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            key = label or name
            PHASES[key] = round(PHASES.get(key, 0.0) + time.perf_counter() - started, 2)

    setattr(module, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_500_000)
    parser.add_argument("--base", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    records = expanded_records(args.rows, args.seed)
    started = time.perf_counter()
    from loraops.config import ValidateParams
    from loraops.validation import check, docs_html, frames, gx_run, results, validate_dataset
    PHASES["import"] = round(time.perf_counter() - started, 2)
    for name in ("build_rows", "build_labels", "build_splits", "_leaks", "normalise_text", "profile"):
        if name != "normalise_text":
            timed(frames, name)
    timed(gx_run, "_context", "gx_context")
    timed(gx_run, "write_suite_json")
    timed(gx_run, "run_batches")
    timed(results, "interpret")
    timed(docs_html, "expectation_rows")
    timed(docs_html, "render_html")
    token_lengths = None
    if args.base is not None:
        from loraops.modeling import load_tokenizer, token_counter
        started = time.perf_counter()
        counter = token_counter(load_tokenizer(args.base))
        PHASES["tokenizer_load"] = round(time.perf_counter() - started, 2)

        def token_lengths(texts):
            started = time.perf_counter()
            try:
                return counter(texts)
            finally:
                PHASES["token_count"] = round(PHASES.get("token_count", 0.0) + time.perf_counter() - started, 2)

    # Great Expectations per table: each Checkpoint.run (the token table's includes waiting for the counts)
    import great_expectations as gx
    original_run = gx.Checkpoint.run

    def run(self, *a, **k):
        started = time.perf_counter()
        try:
            return original_run(self, *a, **k)
        finally:
            PHASES[f"gx_checkpoint[{self.name}]"] = round(time.perf_counter() - started, 2)

    gx.Checkpoint.run = run
    with tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        report = validate_dataset(records, ValidateParams(), Path(work), token_lengths=token_lengths)
        total = time.perf_counter() - started
    print(json.dumps({"rows": args.rows, "validate_seconds": round(total, 2), "phases": PHASES,
                      "peak_rss_mb": round(_peak_rss_mb(), 1),
                      "child_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
                      "success": report.success,
                      "failures": [f"{f.severity}: {f.check}: {f.rows} rows" for f in report.failures]}))


if __name__ == "__main__":
    main()
