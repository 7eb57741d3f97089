"""Bootstrap intervals over test items: one model's score, and paired differences between two models.

Percentile bootstrap, seeded: the same ``(samples, seed, n)`` always draws the same resamples, so a
paired difference uses the SAME resampled items for both models (the comparison the user cares about:
item difficulty cancels out), and a model compared with itself differs by exactly 0.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def resample_indices(n: int, samples: int, seed: int) -> np.ndarray:
    """``samples`` x ``n`` item indices drawn with replacement."""
    if n <= 0:
        raise ValueError("bootstrap of an empty set is undefined")
    return np.random.default_rng(seed).integers(0, n, size=(samples, n))


def _interval(point: float, draws: np.ndarray, confidence: float) -> dict[str, float]:
    tail = (1 - confidence) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    # A percentile interval can, in degenerate resamples, sit just beside the point estimate; widening
    # it to include the estimate never makes it less honest.
    return {"mean": float(point), "low": float(min(low, point)), "high": float(max(high, point))}


def mean_interval(scores: Sequence[float], samples: int, confidence: float, seed: int) -> dict[str, float]:
    """Interval for the mean of per-item scores (accuracy: 0/1 per item; ROUGE-L: F1 per item)."""
    values = np.asarray(scores, dtype=float)
    draws = values[resample_indices(len(values), samples, seed)].mean(axis=1)
    return _interval(values.mean(), draws, confidence)


def paired_difference(scores_a: Sequence[float], scores_b: Sequence[float], samples: int, confidence: float,
                      seed: int) -> dict[str, float]:
    """Interval for mean(a) - mean(b), both models scored on the same resampled items."""
    a, b = np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired bootstrap needs the same items: {a.shape[0]} vs {b.shape[0]} scores")
    diff = a - b
    draws = diff[resample_indices(len(diff), samples, seed)].mean(axis=1)
    return _interval(diff.mean(), draws, confidence)


def statistic_interval(statistic: Callable[[np.ndarray], float], n: int, samples: int, confidence: float,
                       seed: int) -> dict[str, float]:
    """Interval for a statistic that is not a mean of items (macro-F1); ``statistic`` takes item indices."""
    draws = np.array([statistic(idx) for idx in resample_indices(n, samples, seed)])
    return _interval(statistic(np.arange(n)), draws, confidence)


def paired_statistic_difference(stat_a: Callable[[np.ndarray], float], stat_b: Callable[[np.ndarray], float],
                                n: int, samples: int, confidence: float, seed: int) -> dict[str, float]:
    draws = np.array([stat_a(idx) - stat_b(idx) for idx in resample_indices(n, samples, seed)])
    everything = np.arange(n)
    return _interval(stat_a(everything) - stat_b(everything), draws, confidence)


def macro_f1_statistic(predictions: Sequence[str], references: Sequence[str],
                       labels: Sequence[str]) -> Callable[[np.ndarray], float]:
    """Macro-F1 over a resample (same definition as evals/f1: classes = labels + reference labels)."""
    classes = sorted(set(references) | set(labels))
    code = {label: i for i, label in enumerate(classes)}
    pred = np.array([code.get(p, -1) for p in predictions])
    ref = np.array([code[r] for r in references])
    k = len(classes)

    def macro_f1(idx: np.ndarray) -> float:
        p, r = pred[idx], ref[idx]
        hit = p == r
        tp = np.bincount(r[hit], minlength=k)
        predicted = np.bincount(p[p >= 0], minlength=k)
        support = np.bincount(r, minlength=k)
        # Classes of the full set that a resample happens to miss keep F1 0, as in evals/f1.
        denom = predicted + support
        f1 = np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0)
        return float(f1.mean())

    return macro_f1
