"""The record of a composed adapter (``reports/composition.json`` on its run): which registered versions went in,
with which weights and combination, and how the result scored on each source task's test set and on retention.

It is the composed version's evidence, as ``eval.json`` is a pipeline version's: the gates
(:func:`loraops.registry.gates.composition_gates`) are evaluated from it and the sources' champions whenever
they run (``loraops compose``, ``loraops promote``, a hand move). No MLflow here.
"""

from __future__ import annotations

from loraops.core.records import Record

COMPOSED_TAG = "loraops.composed"  # "true" on a composed version and its run
COMPOSITION_FILE = "composition.json"  # under reports/ on the composed version's run
TASKS_FILE = "compose_tasks.json"  # in the composed adapter: each source task's prompt spec


class ComposedSource(Record):
    """One source: the version that went in and what the composed adapter scored on that version's test set."""

    model: str  # the registered model (one task)
    version: str
    run_id: str
    model_id: str | None = None  # its MLflow LoggedModel (logged as an input of the composed run)
    model_sha256: str
    weight: float
    headline: str  # the metric the source was scored on (its eval.json)
    test_items: int
    test_set_sha256: str  # the rows scored, the same as the source's own evaluation
    data: str  # where those rows were read (portable: relative to the project or local:NAME)
    score: float  # the composed adapter's headline score on them, with its bootstrap interval
    score_low: float
    score_high: float
    source_score: float | None = None  # the source version's own recorded score on the same rows


class CompositionRecord(Record):
    combination: str
    weights: list[float]
    density: float | None = None  # pruning combinations only
    majority_sign: str | None = None
    svd_rank: int | None = None
    seed: int  # torch's seed for the combination (DARE drops at random)
    max_task_loss: float  # the gate's margin, recorded with the composition it was chosen for
    base_model_sha256: str
    sources: list[ComposedSource]
    retention: float | None = None  # the composed adapter on the retention set, and the base beside it
    base_retention: float | None = None
    retention_drop: float | None = None  # base minus composed (positive: forgotten), paired interval
    retention_drop_low: float | None = None
    retention_drop_high: float | None = None
