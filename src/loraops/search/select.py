"""The search's selection rule and Pareto front: pure functions over finished trials (no Optuna needed).

Rule: among COMPLETE trials, take the best metric; every trial whose metric is at least
``best - tolerance`` qualifies; pick the qualifying trial with the fewest trainable parameters.
Ties on trainable parameters go to the higher metric, then to the lower trial number (the earlier trial),
so the same trials always give the same choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loraops.core import LoraopsError

# Metrics are accuracies (shares of items): a difference this small is float noise, not a real gap, so
# a trial exactly ``tolerance`` below the best qualifies however the subtraction rounds.
EPSILON = 1e-9


class NoCompletedTrial(LoraopsError):
    """Every trial of the search failed or was pruned: nothing to choose from."""


@dataclass(frozen=True)
class TrialResult:
    number: int
    state: str  # COMPLETE | PRUNED | FAIL
    params: dict[str, Any] = field(default_factory=dict)
    trainable_params: int | None = None
    metric: float | None = None
    steps: int = 0


def completed(results: list[TrialResult]) -> list[TrialResult]:
    return [r for r in results if r.state == "COMPLETE" and r.metric is not None and r.trainable_params is not None]


def select(results: list[TrialResult], tolerance: float) -> TrialResult:
    """The fewest-parameter trial within ``tolerance`` of the best metric (see the module docstring)."""
    if tolerance < 0:
        raise ValueError(f"tolerance {tolerance} must be >= 0")
    done = completed(results)
    if not done:
        states = ", ".join(f"{s}: {sum(1 for r in results if r.state == s)}"
                           for s in sorted({r.state for r in results})) or "no trials"
        raise NoCompletedTrial(f"search: no trial completed ({states}); see the trials table and the MLflow runs "
                               "for the failures")
    best = max(r.metric for r in done)
    qualifying = [r for r in done if r.metric >= best - tolerance - EPSILON]
    return min(qualifying, key=lambda r: (r.trainable_params, -r.metric, r.number))


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
