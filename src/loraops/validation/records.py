"""The validation summary (``metrics/validation.json``): what prepare, the gates and the registry read."""

from __future__ import annotations

from typing import Any

from loraops.core.records import Record


class FailureRecord(Record):
    check: str
    message: str
    rows: int
    examples: list[tuple[int, str]]
    severity: str


class ValidationSummary(Record):
    success: bool
    errors: int
    warnings: int
    failures: list[FailureRecord]
    stats: dict[str, Any]
    # The Data Docs index, relative to the project root (reports/validation/index.html), when they were built.
    docs_index: str | None = None
    # The one-page Data Docs (reports/validation/data_docs.html), what the MLflow run shows.
    docs_page: str | None = None
