"""Run the suites with Great Expectations: a file data context under ``work_dir``, a pandas data source, one
validation definition and one stored checkpoint per table, then the Data Docs site built once as HTML.

(A checkpoint with an ``UpdateDataDocsAction`` re-renders the site per checkpoint, which doubled the time
of a small validation; the checkpoints stay stored in ``gx/checkpoints`` so a user can re-run them.)

The context is rebuilt on every run so the Data Docs show this validation only. No network: analytics are
off in the environment (set before GX is imported, see the package ``__init__``) and in the context config.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

os.environ["GX_ANALYTICS_ENABLED"] = "false"

import great_expectations as gx  # noqa: E402
from great_expectations.core.expectation_validation_result import (  # noqa: E402
    ExpectationSuiteValidationResult,
)
from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: E402

from loraops.validation.suites import Batch  # noqa: E402

GX_DIR = "gx"
SUITES_DIR = "suites"
DOCS_INDEX = Path(GX_DIR) / "uncommitted" / "data_docs" / "local_site" / "index.html"
# Enough offending rows to pick examples from and to show in the Data Docs; counts are always complete.
PARTIAL_UNEXPECTED = 20


def _context(work_dir: Path):
    shutil.rmtree(work_dir / GX_DIR, ignore_errors=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="file", project_root_dir=work_dir)
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    context.enable_analytics(False)  # also saves the variables above to great_expectations.yml
    return context


def write_suite_json(batches: list[Batch], work_dir: Path) -> list[Path]:
    """The suites as readable JSON files beside the context (``work_dir/suites/NAME.json``)."""
    folder = work_dir / SUITES_DIR
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    paths = []
    for batch in batches:
        suite = gx.ExpectationSuite(name=batch.name, expectations=[e.copy(deep=True) for e in batch.expectations])
        path = folder / f"{batch.name}.json"
        path.write_text(json.dumps(suite.to_json_dict(), indent=2, ensure_ascii=True) + "\n")
        paths.append(path)
    return paths


def run_batches(batches: list[Batch], work_dir: Path,
                run_name: str | None = None) -> tuple[dict[str, ExpectationSuiteValidationResult], Path]:
    """Validate each table with its suite through a checkpoint; return the results by name and the docs index.
    ``run_name`` is what the Data Docs list the validation as (without one, Great Expectations says __none__)."""
    from great_expectations.core.run_identifier import RunIdentifier

    context = _context(work_dir)
    run_id = RunIdentifier(run_name=run_name or "loraops validate")
    source = context.data_sources.add_pandas("loraops")
    results: dict[str, ExpectationSuiteValidationResult] = {}
    for batch in batches:
        definition = source.add_dataframe_asset(batch.name).add_batch_definition_whole_dataframe("whole")
        suite = context.suites.add(gx.ExpectationSuite(name=batch.name, expectations=batch.expectations))
        validation = context.validation_definitions.add(
            gx.ValidationDefinition(name=batch.name, data=definition, suite=suite))
        checkpoint = context.checkpoints.add(gx.Checkpoint(
            name=batch.name, validation_definitions=[validation], actions=[],
            # No unexpected_index_column_names: with them GX looks up every offending row's index column one
            # cell at a time (minutes for a million offending rows); the reader maps the first positions itself.
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": PARTIAL_UNEXPECTED}))
        outcome = checkpoint.run(batch_parameters={"dataframe": batch.data()}, run_id=run_id)
        results[batch.name] = next(iter(outcome.run_results.values()))
    context.build_data_docs()
    return results, work_dir / DOCS_INDEX
