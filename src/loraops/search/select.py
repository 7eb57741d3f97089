"""The search's selection rule and Pareto front: pure functions over finished trials (no Optuna needed).

Rule, in order (each step that leaves nothing is a one-line failure, and nothing is trained):

1. **Completed**: only COMPLETE trials count (pruned and failed ones never do).
2. **Feasible**: a trial's retention drop on the ``dev`` pool (base retention - trial retention) is at most
   ``max_retention_drop`` (``promote.max_retention_drop``, the bound the promotion gate checks on ``test``).
3. **Floor** (when the base's per-item val correctness is given): the lower bound of the paired bootstrap
   interval of (trial - base) accuracy on the same val items is above 0.
4. **Best**: the highest val accuracy of what is left (ties: fewer trainable parameters, then earlier trial).
5. **Smallest as good as the best**: every candidate whose paired difference against the best on the same val
   items is not significantly below zero (upper bound of the interval of trial - best >= 0) qualifies; pick
   the one with the fewest trainable parameters (ties: higher accuracy, then earlier trial).

The bootstrap is seeded (:func:`loraops.evaluation.uncertainty.paired_difference`): the same trials always
give the same choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from loraops.core import LoraopsError
from loraops.evaluation.uncertainty import paired_difference

# Accuracies and retention are shares of items: a difference this small is float noise, not a real gap.
EPSILON = 1e-9


class NoCompletedTrial(LoraopsError):
    """Every trial of the search failed or was pruned: nothing to choose from."""


class NoFeasibleTrial(LoraopsError):
    """Every completed trial forgot more than the promotion gate allows."""


class NoGainOverBase(LoraopsError):
    """No feasible trial beats the base model on val beyond noise."""


@dataclass(frozen=True)
class TrialResult:
    number: int
    state: str  # COMPLETE | PRUNED | FAIL
    params: dict[str, Any] = field(default_factory=dict)
    trainable_params: int | None = None
    metric: float | None = None
    steps: int = 0
    retention: float | None = None  # retention on the dev pool
    retention_drop: float | None = None  # base retention - this trial's, on the dev pool (positive: forgot)
    correct: tuple[int, ...] | None = None  # per val item, 1 when the answer was right, in val order
    # What the trial cost (its training and scoring, up to where it ended), as loraops.training.energy measures.
    wall_seconds: float | None = None
    cpu_seconds: float | None = None
    gpu_seconds: float | None = None
    energy_joules: float | None = None
    energy_method: str | None = None


@dataclass(frozen=True)
class Bootstrap:
    samples: int = 1000
    confidence: float = 0.95
    seed: int = 0

    def difference(self, a: Sequence[int], b: Sequence[int]) -> dict[str, float]:
        return paired_difference(a, b, self.samples, self.confidence, self.seed)


@dataclass(frozen=True)
class Selection:
    chosen: TrialResult
    best: TrialResult
    versus_best: dict[str, float]  # interval of chosen - best (val accuracy)
    versus_base: dict[str, float] | None  # interval of chosen - base; None without the floor
    feasible: int  # how many completed trials were feasible


def completed(results: list[TrialResult]) -> list[TrialResult]:
    return [r for r in results if r.state == "COMPLETE" and r.metric is not None and r.trainable_params is not None]


def is_feasible(result: TrialResult, max_retention_drop: float) -> bool:
    """Retention-dev drop within the gate's bound; a trial without a retention score is not feasible."""
    return result.retention_drop is not None and result.retention_drop <= max_retention_drop + EPSILON


def _best(results: list[TrialResult]) -> TrialResult:
    return min(results, key=lambda r: (-r.metric, r.trainable_params, r.number))


def select(results: list[TrialResult], max_retention_drop: float, base_correct: Sequence[int] | None = None,
           bootstrap: Bootstrap = Bootstrap()) -> Selection:
    """The smallest feasible trial not significantly worse than the best (see the module docstring).
    ``base_correct`` (the base model's per-item val correctness) turns the floor on."""
    if max_retention_drop < 0:
        raise ValueError(f"max_retention_drop {max_retention_drop} must be >= 0")
    done = completed(results)
    if not done:
        states = ", ".join(f"{s}: {sum(1 for r in results if r.state == s)}"
                           for s in sorted({r.state for r in results})) or "no trials"
        raise NoCompletedTrial(f"search: no trial completed ({states}); see the trials table and the MLflow runs "
                               "for the failures")
    candidates = [r for r in done if is_feasible(r, max_retention_drop)]
    if not candidates:
        scored = [r for r in done if r.retention_drop is not None]
        seen = (f"the smallest drop seen is {min(r.retention_drop for r in scored):.3f}"
                f" (trial {min(scored, key=lambda r: r.retention_drop).number})" if scored
                else "no trial has a retention score")
        raise NoFeasibleTrial(f"search: no feasible trial: every completed trial's retention-dev drop is above "
                              f"promote.max_retention_drop {max_retention_drop:.3f}; {seen}; nothing trained")
    versus_base: dict[int, dict[str, float]] = {}
    if base_correct is not None:
        versus_base = {r.number: bootstrap.difference(r.correct, base_correct) for r in candidates
                       if r.correct is not None}
        beating = [r for r in candidates if r.number in versus_base and versus_base[r.number]["low"] > EPSILON]
        if not versus_base:
            raise NoGainOverBase("search: no feasible trial recorded its per-item val correctness; nothing trained")
        if not beating:
            top = max((r for r in candidates if r.number in versus_base),
                      key=lambda r: (versus_base[r.number]["low"], -r.number))
            gap = versus_base[top.number]
            raise NoGainOverBase(
                f"search: no feasible trial beats the base model on val: the best, trial {top.number}, is "
                f"{gap['mean']:+.3f} accuracy vs base ({bootstrap.confidence:.0%} interval {gap['low']:+.3f} to "
                f"{gap['high']:+.3f}, {len(base_correct)} val items); nothing trained")
        candidates = beating
    best = _best(candidates)
    versus_best = {r.number: bootstrap.difference(r.correct, best.correct) for r in candidates
                   if r.correct is not None and best.correct is not None}
    qualifying = [r for r in candidates if r is best
                  or (r.number in versus_best and versus_best[r.number]["high"] >= -EPSILON)]
    chosen = min(qualifying, key=lambda r: (r.trainable_params, -r.metric, r.number))
    zero = {"mean": 0.0, "low": 0.0, "high": 0.0}
    return Selection(chosen=chosen, best=best, versus_best=versus_best.get(chosen.number, zero),
                     versus_base=versus_base.get(chosen.number), feasible=len([r for r in done
                                                                              if is_feasible(r, max_retention_drop)]))


def pareto_front(results: list[TrialResult]) -> list[TrialResult]:
    """Completed trials no other completed trial beats on both counts (fewer-or-equal params, higher-or-equal
    metric, strictly better on one), ordered by trainable parameters."""
    done = completed(results)
    front = []
    for r in done:
        dominated = any(o.trainable_params <= r.trainable_params and o.metric >= r.metric
                        and (o.trainable_params < r.trainable_params or o.metric > r.metric) for o in done)
        if not dominated:
            front.append(r)
    return sorted(front, key=lambda r: (r.trainable_params, -r.metric, r.number))
