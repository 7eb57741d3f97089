"""The one comparison picture: headline metric and retention of base, adapter and full fine-tune, with their
intervals, on one shared axis (both are shares of items answered right, 0 to 1).

The same rows feed three views: ``reports/eval/comparison.png`` (logged to MLflow, shown by the Prefect flow),
``plots/comparison.csv`` (``dvc plots show``, through the ``model_comparison`` template in ``.dvc/plots``), and
the tables of the run and version descriptions. Drawn on one axis, an adapter that forgot its general
abilities shows as a short retention bar beside the base model's long one.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from loraops.core import atomic_write_text
from loraops.evaluation.records import EvaluationSummary, ModelScores

COLUMNS = ["model", "metric", "value", "low", "high"]
MODEL_ORDER = ("base", "adapter", "full")


def comparison_rows(summary: EvaluationSummary) -> list[dict]:
    """One row per (model, metric) with its interval; a missing interval is left empty, never invented."""
    rows = []
    names = [m for m in MODEL_ORDER if m in summary.models] + [m for m in summary.models if m not in MODEL_ORDER]
    for metric in (summary.headline, "retention"):
        for name in names:
            scores = summary.models[name]
            value = scores.score(metric)
            if value is None:
                continue
            low, high = scores.interval(metric)
            rows.append({"model": name, "metric": metric, "value": round(value, 4),
                         "low": None if low is None else round(low, 4),
                         "high": None if high is None else round(high, 4)})
    return rows


def write_comparison_csv(rows: list[dict], target: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(target, buffer.getvalue())


def comparison_png(rows: list[dict], target: Path, title: str, confidence: float = 0.95) -> bool:
    """Grouped bars (one group per model, one bar per metric) with interval whiskers on a 0-1 axis."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    models = list(dict.fromkeys(r["model"] for r in rows))
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    width = 0.8 / max(len(metrics), 1)
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd"]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for k, metric in enumerate(metrics):
        xs, heights, whiskers = [], [], []
        for i, model in enumerate(models):
            row = next((r for r in rows if r["model"] == model and r["metric"] == metric), None)
            if row is None:
                continue
            xs.append(i + (k - (len(metrics) - 1) / 2) * width)
            heights.append(row["value"])
            if row["low"] is not None and row["high"] is not None:  # no interval: no whisker
                whiskers.append((xs[-1], row["value"], row["value"] - row["low"], row["high"] - row["value"]))
        ax.bar(xs, heights, width * 0.92, label=metric, color=colours[k % 4])
        tops = {x: y + above for x, y, _, above in whiskers}
        for x, h in zip(xs, heights):  # the value above the bar, or above its whisker
            ax.text(x, tops.get(x, h) + 0.015, f"{h:.2f}", ha="center", va="bottom", fontsize=8)
        if whiskers:
            x, y, below, above = zip(*whiskers)
            ax.errorbar(x, y, yerr=[below, above], fmt="none", ecolor="black", capsize=4)
    ax.set_xticks(range(len(models)), models)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel(f"share of items right ({round(confidence * 100)} % interval)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=8, ncols=len(metrics))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=100)
    plt.close(fig)
    return True


def markdown_table(summary: EvaluationSummary) -> str:
    """The comparison as a markdown table (run and version descriptions, Prefect artifact)."""
    metric = summary.headline
    pct = round(summary.confidence * 100)
    lines = [f"| model | {metric} [{pct} % CI] | retention [{pct} % CI] | retention drop |", "|---|---|---|---|"]
    for name in [m for m in MODEL_ORDER if m in summary.models] + [m for m in summary.models if m not in MODEL_ORDER]:
        s = summary.models[name]
        lines.append(f"| {name} | {_with_interval(s.score(metric), *s.interval(metric))} | "
                     f"{_with_interval(s.retention, s.retention_low, s.retention_high)} | "
                     f"{_drop(s)} |")
    return "\n".join(lines) + "\n"


def _drop(scores: ModelScores) -> str:
    if scores.retention_drop is None:
        return "–"
    if scores.retention_drop_low is None:
        return f"{scores.retention_drop:+.3f}"
    return f"{scores.retention_drop:+.3f} [{scores.retention_drop_low:+.3f}, {scores.retention_drop_high:+.3f}]"


def _with_interval(value: float | None, low: float | None, high: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" + (f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else "")
