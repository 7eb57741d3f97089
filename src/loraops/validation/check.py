"""Running the suites on a dataset: frames, suites, Great Expectations, interpretation, profile."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from loraops.config import ValidateParams
from loraops.validation.frames import build_frames, profile
from loraops.validation.report import ValidationReport


def validate_dataset(records: list[dict], params: ValidateParams, work_dir: Path,
                     token_lengths: Callable[[list[str]], list[int]] | None = None,
                     previous: dict | None = None, special_tokens: tuple[str, ...] = (),
                     run_name: str | None = None) -> ValidationReport:
    """Validate raw loraops records ``{"text", "label", "split"}`` (values may be None or not strings).

    ``work_dir`` receives the GX file context (``gx/``, rebuilt on each call), its Data Docs and the suites
    as JSON (``suites/``). ``token_lengths`` maps texts to token counts with the base model's tokenizer
    (None skips the token check). ``previous`` is the ``stats`` of the last validated version (None: the
    first version, no shift or new-label checks). ``special_tokens`` are the tokenizer's special-token strings,
    which no text or label may contain. ``run_name`` names the validation in the Data Docs.
    """
    from loraops.validation.docs_html import expectation_rows
    from loraops.validation.gx_run import run_batches, write_suite_json
    from loraops.validation.results import interpret
    from loraops.validation.suites import build_batches

    work_dir = Path(work_dir)
    # Tokens are counted in a thread from the moment the texts are known until the token table is validated,
    # last: the other frames and suites are built and checked meanwhile (the counting holds no GIL).
    with ThreadPoolExecutor(1, thread_name_prefix="token-lengths") as background:
        frames = build_frames(records, token_lengths, previous, background)
        batches = build_batches(params, frames, previous, tuple(special_tokens))
        write_suite_json(batches, work_dir)
        results, docs_index = run_batches(batches, work_dir, run_name)
        if frames.has_tokens:
            frames.tokens()  # into the rows, for the profile and the examples
    failures = interpret(results, frames, params)
    stats = profile(frames)
    mean_before = ((previous or {}).get("text_chars") or {}).get("mean")
    mean_now = (stats.get("text_chars") or {}).get("mean")
    if mean_before and mean_now is not None:
        stats.setdefault("shift", {})["mean_chars_change"] = round(abs(mean_now - mean_before) / mean_before, 4)
    return ValidationReport(success=not any(f.severity == "error" for f in failures), failures=failures,
                            stats=stats, docs_index=docs_index if docs_index.is_file() else None,
                            expectations=expectation_rows(results))
