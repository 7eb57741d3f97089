"""The ``validate`` step: Great Expectations suites, generated from ``validate`` params, run on every dataset
version before anything trains. A failure names the check, the number of offending rows and examples with
their row numbers (1-based, in the raw dataset's order).

    report = validate_dataset(records, params.validate, work_dir, token_lengths, previous=last_stats)
    if not report.success:
        print(report.summary())
"""

import os

os.environ["GX_ANALYTICS_ENABLED"] = "false"  # before great_expectations is imported: never phone home

from loraops.validation.check import validate_dataset  # noqa: E402
from loraops.validation.frames import normalise_text  # noqa: E402
from loraops.validation.records import FailureRecord, ValidationSummary  # noqa: E402
from loraops.validation.report import Failure, ValidationReport  # noqa: E402
from loraops.validation.stage import log_validation, validate_stage  # noqa: E402

__all__ = ["Failure", "FailureRecord", "ValidationReport", "ValidationSummary", "normalise_text", "log_validation",
           "validate_dataset", "validate_stage"]
