"""Promotion gates: pure functions over the evaluation summary (``metrics/eval.json``), the validation
summary and the current champion's recorded scores, or, for a composed version, over its composition record
and its source tasks' champions (:func:`composition_gates`). No MLflow here, so every rule is testable on
records.

Each gate ends ``pass``, ``fail`` or ``skipped``. Missing evidence (no full fine-tune in eval.json, no
retention score, a champion scored on another test set) is a ``fail`` with the reason "missing
evidence", unless ``promote.optional_gates`` lists the gate: then it is ``skipped``. A version becomes
champion only when no gate fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from loraops.config import PROMOTION_GATES, PromoteParams
from loraops.evaluation import EvaluationSummary
from loraops.registry.composition import ComposedSource, CompositionRecord
from loraops.validation import ValidationSummary

Status = Literal["pass", "fail", "skipped"]


@dataclass(frozen=True)
class GateOutcome:
    name: str
    status: Status
    reason: str


@dataclass(frozen=True)
class ChampionScore:
    """What the champion gate needs from the current champion (read from its version tags)."""

    version: str
    score: float | None
    test_set_sha256: str | None


def _missing(name: str, what: str, params: PromoteParams) -> GateOutcome:
    if name in params.optional_gates:
        return GateOutcome(name, "skipped", f"missing evidence: {what} (gate is optional)")
    return GateOutcome(name, "fail", f"missing evidence: {what}")


def _score(evaluation: EvaluationSummary, model: str, metric: str) -> float | None:
    scores = evaluation.model(model)
    return None if scores is None else scores.score(metric)


def validation_passed(validation: ValidationSummary | None, params: PromoteParams) -> GateOutcome:
    name = "validation_passed"
    if validation is None:
        return _missing(name, "no validation summary", params)
    if validation.success:
        return GateOutcome(name, "pass", f"dataset validation passed ({validation.warnings} warnings)")
    return GateOutcome(name, "fail", f"dataset validation failed ({validation.errors} errors)")


def beats_base(evaluation: EvaluationSummary, params: PromoteParams) -> GateOutcome:
    name = "beats_base"
    diff = evaluation.differences.get("adapter_minus_base")
    if diff is None:
        return _missing(name, "no interval for adapter_minus_base in eval.json", params)
    low = diff.low
    verdict: Status = "pass" if low > params.min_gain_over_base else "fail"
    return GateOutcome(name, verdict, f"adapter - base: lower bound {low:.4f} "
                                      f"{'>' if verdict == 'pass' else '<='} {params.min_gain_over_base:.4f}")


def recovers_full_gain(evaluation: EvaluationSummary, params: PromoteParams) -> GateOutcome:
    name = "recovers_full_gain"
    metric = evaluation.headline
    full, base, adapter = (_score(evaluation, m, metric) for m in ("full", "base", "adapter"))
    if full is None:
        return _missing(name, "no full fine-tune score in eval.json", params)
    share = evaluation.recovered_share
    if share is None:
        # The share is undefined when the full fine-tune gained nothing over base: nothing to recover,
        # so the adapter passes when it is at least as good as the full fine-tune.
        if base is not None and adapter is not None and full <= base:
            verdict: Status = "pass" if adapter >= full else "fail"
            return GateOutcome(name, verdict, f"full fine-tune ({full:.4f}) did not beat base ({base:.4f}); "
                                              f"adapter {adapter:.4f} {'>=' if verdict == 'pass' else '<'} full")
        return _missing(name, "no recovered_share in eval.json", params)
    verdict = "pass" if share >= params.min_recovered_share else "fail"
    return GateOutcome(name, verdict, f"recovers {share:.1%} of the full fine-tune's gain "
                                      f"({'>=' if verdict == 'pass' else '<'} {params.min_recovered_share:.1%})")


def retention(evaluation: EvaluationSummary, params: PromoteParams) -> GateOutcome:
    low, high = (_score(evaluation, "adapter", f"retention_drop_{end}") for end in ("low", "high"))
    return retention_drop_gate(_score(evaluation, "adapter", "retention_drop"), low, high, params,
                               "no adapter retention_drop in eval.json")


def retention_drop_gate(drop: float | None, low: float | None, high: float | None, params: PromoteParams,
                        missing: str) -> GateOutcome:
    name = "retention"
    if drop is None:
        return _missing(name, missing, params)
    # The verdict is the point drop, as before; the paired interval goes beside it so that a reader sees how
    # sure it is (on ~100 items a drop of 0.05 is well inside the noise).
    verdict: Status = "pass" if drop <= params.max_retention_drop else "fail"
    interval = "" if low is None or high is None else f" [{low:+.4f}, {high:+.4f}]"
    return GateOutcome(name, verdict, f"retention drop {drop:.4f}{interval} "
                                      f"{'<=' if verdict == 'pass' else '>'} {params.max_retention_drop:.4f}")


def not_worse_than_champion(evaluation: EvaluationSummary, params: PromoteParams, champion: ChampionScore | None,
                            candidate_version: str | None = None) -> GateOutcome:
    """Noise is the candidate's own interval plus ``champion_margin``: the gate fails only when the
    upper bound of the candidate's interval, plus the margin, is still below the champion's score."""
    name = "not_worse_than_champion"
    if champion is None:
        return GateOutcome(name, "pass", "no champion yet")
    if candidate_version is not None and champion.version == str(candidate_version):
        return GateOutcome(name, "pass", "this version is the champion")
    if evaluation.test_set_sha256 != champion.test_set_sha256:
        return _missing(name, f"champion v{champion.version} was scored on another test set", params)
    metric = evaluation.headline
    high = _score(evaluation, "adapter", f"{metric}_high")
    if champion.score is None or high is None:
        return _missing(name, f"no {metric} interval for the candidate or no {metric} for the champion", params)
    verdict: Status = "fail" if high + params.champion_margin < champion.score else "pass"
    return GateOutcome(name, verdict, f"candidate upper bound {high:.4f} + margin {params.champion_margin:.4f} "
                                      f"{'<' if verdict == 'fail' else '>='} champion v{champion.version} "
                                      f"{champion.score:.4f}")


def evaluate_gates(evaluation: EvaluationSummary, validation: ValidationSummary | None, params: PromoteParams,
                   champion: ChampionScore | None, candidate_version: str | None = None) -> list[GateOutcome]:
    if evaluation.model("adapter") is None:
        raise ValueError("eval.json has no 'adapter' entry under 'models'")
    outcomes = [validation_passed(validation, params), beats_base(evaluation, params),
                recovers_full_gain(evaluation, params), retention(evaluation, params),
                not_worse_than_champion(evaluation, params, champion, candidate_version)]
    assert tuple(o.name for o in outcomes) == PROMOTION_GATES
    return outcomes


TASK_GATE = "task:"  # a composed version's gate per source task: "task:<registered model>"


def keeps_task(source: ComposedSource, champion: ChampionScore | None, max_loss: float,
               params: PromoteParams) -> GateOutcome:
    """The composed adapter loses at most ``max_loss`` on a source task against that task's champion (scored on
    the same test set; point scores, the composed interval shown beside)."""
    name = f"{TASK_GATE}{source.model}"
    metric = source.headline
    if champion is None:
        return _missing(name, f"{source.model} has no champion to compare with", params)
    if champion.test_set_sha256 != source.test_set_sha256:
        return _missing(name, f"champion v{champion.version} of {source.model} was scored on another test set", params)
    if champion.score is None:
        return _missing(name, f"champion v{champion.version} of {source.model} records no {metric}", params)
    floor = champion.score - max_loss
    # A hair of tolerance: "0.80 >= 0.82 - 0.02" must not fail on the float rounding of the subtraction.
    verdict: Status = "pass" if source.score >= floor - 1e-9 else "fail"
    return GateOutcome(name, verdict, f"{source.model}: composed {metric} {source.score:.4f} "
                                      f"[{source.score_low:.4f}, {source.score_high:.4f}] "
                                      f"{'>=' if verdict == 'pass' else '<'} champion v{champion.version} "
                                      f"{champion.score:.4f} - {max_loss:.4f}")


def composition_gates(record: CompositionRecord, champions: dict[str, ChampionScore | None],
                      params: PromoteParams) -> list[GateOutcome]:
    """A composed version's gates: one per source task (:func:`keeps_task`, against ``champions[model]``, the
    margin recorded with the composition) and retention, as for every version."""
    outcomes = [keeps_task(s, champions.get(s.model), record.max_task_loss, params) for s in record.sources]
    outcomes.append(retention_drop_gate(record.retention_drop, record.retention_drop_low, record.retention_drop_high,
                                        params, "no retention_drop in the composition record"))
    return outcomes


def passed(outcomes: list[GateOutcome]) -> bool:
    return all(o.status != "fail" for o in outcomes)


def summarise(outcomes: list[GateOutcome]) -> str:
    """The ``gates`` tag: ``all pass``, or the gates that did not pass (``fail: retention; skipped: ...``)."""
    parts = []
    for status in ("fail", "skipped"):
        names = [o.name for o in outcomes if o.status == status]
        if names:
            parts.append(f"{status}: {', '.join(names)}")
    return "; ".join(parts) or "all pass"


def parse_summary(text: str | None, gates: tuple[str, ...] = PROMOTION_GATES) -> dict[str, str]:
    """``{gate: pass|fail|skipped}`` from a ``gates`` tag; ``{}`` when there is none (not evaluated). ``gates``:
    the version's gate names (a composed version has its own)."""
    if not text:
        return {}
    statuses = dict.fromkeys(gates, "pass")
    if text != "all pass":
        for part in text.split(";"):
            status, _, names = part.strip().partition(":")
            for name in names.split(","):
                if name.strip() in statuses:
                    statuses[name.strip()] = status.strip()
    return statuses


def gate_table(outcomes: list[GateOutcome]) -> str:
    rows = "".join(f"| {o.name} | {o.status} | {o.reason} |\n" for o in outcomes)
    return f"| gate | outcome | why |\n|---|---|---|\n{rows}"


def describe(outcomes: list[GateOutcome], decision: str, comparison: str | None = None,
             notes: list[str] | None = None) -> str:
    """The version description shown in the MLflow UI: the decision, the gate table, the comparison table
    (markdown, :func:`loraops.evaluation.comparison.markdown_table`) and any notes (a hand move)."""
    text = f"**Promotion decision: {decision}**\n\n" + "".join(f"{n}\n\n" for n in notes or [])
    text += gate_table(outcomes)
    if comparison:
        text += f"\n**Base model vs adapter vs full fine-tune** (test split)\n\n{comparison}"
    return text
