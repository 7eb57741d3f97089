"""The ``evaluate`` stage: base model vs adapter vs full fine-tune, with intervals and forgetting.

Every model goes through :func:`loraops.evaluation.evaluator.run_model` (same batching, greedy decoding,
constrained to the label set on label tasks, normalisation; the base model asked at its best). The base
model's result comes from a content-addressed cache when nothing it depends on changed. On label tasks a
classical reference (``tfidf``: TF-IDF + logistic regression on the train split) is reported beside them.
Outputs: ``metrics/eval.json`` (:class:`EvaluationSummary`, what the promotion gates read), per-item
predictions, per-label scores, the confusion matrix (DVC plot + PNG), retention answers and a markdown
report.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from loraops.config import EvalParams, Params, PrepareParams
from loraops.core import Layout, atomic_dir, atomic_write_text, read_json, require, write_json, write_jsonl
from loraops.core.hashing import HashMemo
from loraops.data import choose_shots, load_splits
from loraops.evaluation.cache import BaseEvalCache, rows_sha256
from loraops.evaluation.classical import MODEL_NAME, run_tfidf
from loraops.evaluation.comparison import comparison_png, comparison_rows, write_comparison_csv
from loraops.evaluation.evaluator import run_model
from loraops.evaluation.metrics import normalise_answer
from loraops.evaluation.records import EvaluationSummary, Interval, ModelScores
from loraops.evaluation.report import render_report, training_facts
from loraops.evaluation.uncertainty import (macro_f1_statistic, mean_interval, paired_difference,
                                            paired_statistic_difference, statistic_interval)

NOT_A_LABEL = "(not a label)"


def candidate_models(params: EvalParams, layout: Layout) -> dict[str, dict[str, Path | None]]:
    """Which models to score, in report order: base (if compared), the adapter, the full fine-tune (if any)."""
    models: dict[str, dict[str, Path | None]] = {}
    if params.compare_base:
        models["base"] = {}
    models["adapter"] = {"adapter_dir": layout.adapter_dir}
    if params.compare_full and (layout.full_model_dir / "config.json").is_file():
        models["full"] = {"model_dir": layout.full_model_dir}
    return models


def evaluate_base_cached(layout: Layout, rows: list[dict], params: EvalParams, labels: list[str] | None,
                         shots_from: list[dict] | None = None, prepare: PrepareParams | None = None) -> dict[str, Any]:
    """The base model's run (asked at its best on a label task: shots from ``shots_from``, the train split),
    from the cache while nothing it depends on changed."""
    prepare = prepare or PrepareParams()
    shots = (choose_shots(shots_from or [], labels, params.base_shots, {r["text"] for r in rows})
             if labels and params.task == "label" else [])
    cache = BaseEvalCache(layout.cache_dir / "eval-cache", HashMemo(layout.hash_memo))
    key = (cache.key(layout.base_model_dir, rows, params, layout.root, labels, shots, prepare.system_prompt)
           if params.cache_base else None)
    if key is not None and (hit := cache.get(key)) is not None:
        return {**hit, "cached": True}
    result = run_model(layout.base_model_dir, rows, params.batch_size, layout.root, params=params, labels=labels,
                       shots_from=shots_from, prepare=prepare)
    if key is not None:
        cache.put(key, result)
    return {**result, "cached": False}


def headline_scorer(name: str, runs: dict[str, dict], labels: list[str]):
    """Per model: either per-item scores (accuracy, ROUGE-L) or a statistic over item indices (macro-F1)."""
    if name == "macro_f1":
        return {m: macro_f1_statistic([i["prediction"] for i in r["items"]], [i["label"] for i in r["items"]],
                                      [normalise_answer(x) for x in labels]) for m, r in runs.items()}
    key = "correct" if name == "accuracy" else "rouge_l"
    return {m: [float(i[key]) for i in r["items"]] for m, r in runs.items()}


def uncertainty(runs: dict[str, dict], params: EvalParams, labels: list[str]) -> tuple[dict, dict]:
    """Bootstrap interval of each model's headline metric, and paired intervals of the differences."""
    headline, n = params.headline_metric(), len(next(iter(runs.values()))["items"])
    scorer = headline_scorer(headline, runs, labels)
    boot = {"samples": params.bootstrap_samples, "confidence": params.confidence, "seed": params.bootstrap_seed}
    intervals, differences = {}, {}
    for model, score in scorer.items():
        intervals[model] = (statistic_interval(score, n, **boot) if callable(score)
                            else mean_interval(score, **boot))
    for other in ("base", "full", MODEL_NAME):
        if "adapter" in scorer and other in scorer:
            a, b = scorer["adapter"], scorer[other]
            differences[f"adapter_minus_{other}"] = (
                paired_statistic_difference(a, b, n, **boot) if callable(a) else paired_difference(a, b, **boot))
    return intervals, differences


def recovered_share(models: dict[str, ModelScores], headline: str) -> float | None:
    """(adapter - base) / (full - base); undefined (None) unless the full fine-tune beat the base model."""
    if not {"base", "adapter", "full"} <= set(models):
        return None
    base = models["base"].score(headline)
    gain = models["full"].score(headline) - base
    return (models["adapter"].score(headline) - base) / gain if gain > 0 else None


def confusion_rows(items: list[dict], labels: list[str]) -> list[dict[str, str]]:
    known = {normalise_answer(x) for x in labels} | {i["label"] for i in items}
    return [{"actual": i["label"], "predicted": i["prediction"] if i["prediction"] in known else NOT_A_LABEL}
            for i in items]


def confusion_png(rows: list[dict[str, str]], target: Path, title: str) -> bool:
    """A heat map of the confusion matrix, when matplotlib is installed (the CSV is the DVC plot)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    actual = sorted({r["actual"] for r in rows})
    predicted = actual + sorted({r["predicted"] for r in rows} - set(actual))
    grid = [[sum(r["actual"] == a and r["predicted"] == p for r in rows) for p in predicted] for a in actual]
    size = max(4.0, 0.45 * len(predicted) + 2)
    fig, ax = plt.subplots(figsize=(size, size * len(actual) / len(predicted) + 1))
    ax.imshow(grid, cmap="Blues")
    ax.set_xticks(range(len(predicted)), predicted, rotation=90, fontsize=7)
    ax.set_yticks(range(len(actual)), actual, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return True


def evaluate_stage(params: Params, layout: Layout) -> dict[str, Any]:
    """The ``evaluate`` stage over the first ``eval.max_items`` test rows."""
    require(layout.adapter_dir, layout.prepared_dir)
    splits = load_splits(layout)
    return run_evaluation(params, layout, splits["test"][: params.eval.max_items], splits["train"]).to_json()


def run_evaluation(params: Params, layout: Layout, rows: list[dict],
                   train_rows: list[dict] | None = None) -> EvaluationSummary:
    """Every candidate model on ``rows``; on a label task also the tfidf reference, fit on ``train_rows``
    (the train split, which also gives the base model its shots)."""
    ep = params.eval
    labels_file = layout.prepared_dir / "labels.json"
    labels = read_json(labels_file) if labels_file.is_file() and ep.task == "label" else []
    runs: dict[str, dict] = {}
    for name, location in candidate_models(ep, layout).items():
        if name == "base":
            runs[name] = evaluate_base_cached(layout, rows, ep, labels or None, train_rows, params.prepare)
        else:
            runs[name] = run_model(layout.base_model_dir, rows, ep.batch_size, layout.root, params=ep,
                                   labels=labels or None, **location)
    if labels and train_rows:
        runs[MODEL_NAME] = run_tfidf(train_rows, rows, ep, layout.root, labels)
    headline = ep.headline_metric()
    intervals, differences = uncertainty(runs, ep, labels)
    models: dict[str, ModelScores] = {}
    base_retention = runs.get("base", {}).get("metrics", {}).get("retention")
    boot = {"samples": ep.bootstrap_samples, "confidence": ep.confidence, "seed": ep.bootstrap_seed}
    for name, run in runs.items():
        scores = {k: v for k, v in run["metrics"].items() if k != "per_label"}
        scores.update({f"{headline}_low": intervals[name]["low"], f"{headline}_high": intervals[name]["high"]})
        if run["retention_items"]:
            kept = mean_interval([float(i["retained"]) for i in run["retention_items"]], **boot)
            scores.update(retention_low=kept["low"], retention_high=kept["high"])
        if "retention" in scores and base_retention is not None:
            scores["retention_drop"] = base_retention - scores["retention"]
            base_items = runs["base"].get("retention_items") or []
            if name != "base" and len(base_items) == len(run["retention_items"]):
                # Paired over the same retention items: base minus this model (positive: forgotten).
                drop = paired_difference([float(i["retained"]) for i in base_items],
                                         [float(i["retained"]) for i in run["retention_items"]], **boot)
                scores.update(retention_drop_low=drop["low"], retention_drop_high=drop["high"])
        if name == "base":
            scores["cached"] = run["cached"]
        models[name] = ModelScores(**scores)
    summary = EvaluationSummary(
        headline=headline, test_items=len(rows), test_set_sha256=rows_sha256(rows), confidence=ep.confidence,
        bootstrap_samples=ep.bootstrap_samples, models=models,
        differences={k: Interval(**v) for k, v in differences.items()},
        recovered_share=recovered_share(models, headline),
        gain_over_base=(models["adapter"].score(headline) - models["base"].score(headline)) if "base" in models
        else None, constrained=bool(labels) and ep.constrained,
        base_prompting=runs.get("base", {}).get("prompting"))
    per_label = {name: run["metrics"]["per_label"] for name, run in runs.items() if "per_label" in run["metrics"]}
    confusion = confusion_rows(runs["adapter"]["items"], labels) if ep.task == "label" else []
    facts = training_facts(layout)
    comparison = comparison_rows(summary)
    with atomic_dir(layout.eval_report.parent) as staging:
        write_json(staging / "per_label.json", per_label)
        write_jsonl(staging / "retention.jsonl", [{"model": name, **item} for name, run in runs.items()
                                                  for item in run["retention_items"]])
        if confusion:
            confusion_png(confusion, staging / "confusion.png", "adapter: confusion matrix (test split)")
        comparison_png(comparison, staging / layout.comparison_png.name,
                       f"{headline} ({len(rows)} test items) and retention, same axis", ep.confidence)
        atomic_write_text(staging / layout.eval_report.name, render_report(summary, per_label, facts, ep))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["actual", "predicted"])
    writer.writeheader()
    writer.writerows(confusion)
    atomic_write_text(layout.confusion_plot, buffer.getvalue())
    write_comparison_csv(comparison, layout.comparison_plot)
    write_jsonl(layout.predictions, [{"model": name, **item} for name, run in runs.items() for item in run["items"]])
    summary.write(layout.eval_metrics)
    return summary
