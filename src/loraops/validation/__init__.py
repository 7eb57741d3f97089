"""The ``validate`` step: Great Expectations suites, generated from ``validate`` params, run on every dataset
version before anything trains. A failure names the check, the number of offending rows and examples with
their row numbers (1-based, in the raw dataset's order).

    report = validate_dataset(records, params.validate, work_dir, token_lengths, previous=last_stats)
    if not report.success:
        print(report.summary())
"""

from __future__ import annotations

import os

os.environ["GX_ANALYTICS_ENABLED"] = "false"  # before great_expectations is imported: never phone home

from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

from loraops.config import ValidateParams  # noqa: E402
from loraops.validation.frames import build_frames, normalise_text, profile  # noqa: E402
from loraops.validation.report import Failure, ValidationReport  # noqa: E402

__all__ = ["Failure", "ValidationReport", "normalise_text", "validate_dataset"]


def validate_dataset(records: list[dict], params: ValidateParams, work_dir: Path,
                     token_lengths: Callable[[list[str]], list[int]] | None = None,
                     previous: dict | None = None) -> ValidationReport:
    """Validate raw loraops records ``{"text", "label", "split"}`` (values may be None or not strings).

    ``work_dir`` receives the GX file context (``gx/``, rebuilt on each call), its Data Docs and the suites
    as JSON (``suites/``). ``token_lengths`` maps texts to token counts with the base model's tokenizer
    (None skips the token check). ``previous`` is the ``stats`` of the last validated version (None: the
    first version, no shift or new-label checks).
    """
    from loraops.validation.gx_run import run_batches, write_suite_json
    from loraops.validation.results import interpret
    from loraops.validation.suites import build_batches

    work_dir = Path(work_dir)
    frames = build_frames(records, token_lengths, previous)
    batches = build_batches(params, frames, previous)
    write_suite_json(batches, work_dir)
    results, docs_index = run_batches(batches, work_dir)
    failures = interpret(results, frames, params)
    stats = profile(frames)
    mean_before = ((previous or {}).get("text_chars") or {}).get("mean")
    mean_now = (stats.get("text_chars") or {}).get("mean")
    if mean_before and mean_now is not None:
        stats.setdefault("shift", {})["mean_chars_change"] = round(abs(mean_now - mean_before) / mean_before, 4)
    return ValidationReport(success=not any(f.severity == "error" for f in failures), failures=failures,
                            stats=stats, docs_index=docs_index if docs_index.is_file() else None)
