"""Validation benchmark: the full CLINC150 train split (15,000 rows, all 150 intents) through the GX suites.

Token lengths come from the real base-model tokenizer when ``models/base`` exists (else the token check is
skipped and the result says so). The timed span is one whole :func:`validate_dataset` call: frames, suites,
GX context, checkpoints and Data Docs; the first call also imports great_expectations, as a fresh
``validate`` stage does. Tokenizer loading is timed separately.

    python -m bench.bench_validate [--data ../shared/datasets/clinc150/data_full.json] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench.machine import machine_info

REPO = Path(__file__).resolve().parents[1]
GOAL_SECONDS = 30.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path,
                        default=REPO.parent / "shared" / "datasets" / "clinc150" / "data_full.json")
    parser.add_argument("--base", type=Path, default=REPO / "models" / "base")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "validate_clinc150.json")
    args = parser.parse_args()

    started = time.perf_counter()
    from loraops.config import DataParams, ValidateParams
    from loraops.data.ingest import ingest
    from loraops.validation import validate_dataset

    import_s = time.perf_counter() - started
    records = [r for r in ingest(DataParams(source="clinc150", path=str(args.data)), REPO, seed=0)
               if r["split"] == "train"]
    token_lengths, tokenizer_s = None, None
    if (args.base / "config.json").is_file():
        from loraops.modeling import load_tokenizer, token_counter

        started = time.perf_counter()
        token_lengths = token_counter(load_tokenizer(args.base))
        tokenizer_s = time.perf_counter() - started

    runs, report = [], None
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as work:
            started = time.perf_counter()
            report = validate_dataset(records, ValidateParams(), Path(work), token_lengths=token_lengths)
            runs.append(time.perf_counter() - started)
    assert report is not None
    result = {
        "benchmark": "validate_dataset on the CLINC150 train split",
        "rows": len(records), "labels": report.stats["num_labels"],
        "token_check": token_lengths is not None, "tokenizer": str(args.base) if token_lengths else None,
        # The first run is what one `validate` stage pays in a fresh process (it imports great_expectations);
        # later runs in the same process are warm.
        "seconds": round(runs[0], 3), "seconds_warm_median": round(statistics.median(runs[1:] or runs), 3),
        "seconds_all_runs": [round(s, 3) for s in runs], "goal_seconds": GOAL_SECONDS,
        "within_goal": max(runs) <= GOAL_SECONDS, "import_seconds": round(import_s, 3),
        "tokenizer_load_seconds": round(tokenizer_s, 3) if tokenizer_s is not None else None,
        "success": report.success, "errors": len(report.errors), "warnings": len(report.warnings),
        "failures": [f"{f.severity}: {f.check}: {f.rows} rows" for f in report.failures],
        "machine": machine_info(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
