"""Scoring answers: the answer normalisation every model shares, and the metric modules under ``evals/``.

Metrics are local Hugging Face ``evaluate`` modules (``evals/NAME/NAME.py``), loaded by path, never from the
hub; which apply comes from the ``eval`` params.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from loraops.config import EvalParams
from loraops.data.answers import normalise_answer  # the one normalisation, shared with serving and validate


# Metric name (params, eval.json) -> module folder under evals/.
METRIC_MODULES = {"accuracy": "accuracy", "macro_f1": "f1", "rouge_l": "rouge_l", "perplexity": "perplexity"}


def metric_path(name: str, root: Path) -> Path:
    """``evals/NAME/NAME.py`` of the project, else of the loraops source tree."""
    for folder in (root / "evals", Path(__file__).resolve().parents[3] / "evals"):
        if (folder / name / f"{name}.py").is_file():
            return folder / name / f"{name}.py"
    raise FileNotFoundError(f"metric {name!r}: no evals/{name}/{name}.py in {root} or the loraops source tree")


def load_metric(name: str, root: Path) -> Any:
    """A metric from the project's ``evals/`` folder, loaded by path (never from the hub)."""
    import evaluate

    os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
    return evaluate.load(str(metric_path(name, root).parent))


def score_answers(raw: list[str], rows: list[dict], nll: list[tuple[float, int]] | None, params: EvalParams,
                  root: Path, labels: list[str] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Metrics and per-item records for generated answers; no model needed (the base cache reuses it)."""
    names = params.metric_names()
    label_task = params.task == "label"
    normalise = normalise_answer if label_task else (lambda text: text.strip())
    references = [normalise(r["label"]) for r in rows]
    predictions = [normalise(a) for a in raw]
    metrics: dict[str, Any] = {}
    items = [{"text": r["text"], "label": ref, "prediction": p, "raw": a, "correct": p == ref}
             for r, ref, p, a in zip(rows, references, predictions, raw)]
    if "accuracy" in names:
        metrics["accuracy"] = load_metric("accuracy", root).compute(predictions=predictions,
                                                                    references=references)["accuracy"]
    if "macro_f1" in names:
        label_set = sorted({normalise_answer(x) for x in labels}) if labels else None
        f1 = load_metric("f1", root).compute(predictions=predictions, references=references, labels=label_set)
        metrics["macro_f1"], metrics["per_label"] = f1["macro_f1"], f1["per_label"]
    if "rouge_l" in names:
        rouge = load_metric("rouge_l", root).compute(predictions=predictions, references=references)
        metrics["rouge_l"] = rouge["rouge_l"]
        for item, score in zip(items, rouge["scores"]):
            item["rouge_l"] = score
    if "perplexity" in names and nll is not None:
        ppl = load_metric("perplexity", root).compute(nll=[x[0] for x in nll], tokens=[x[1] for x in nll])
        metrics["perplexity"], metrics["answer_nll_per_token"] = ppl["perplexity"], ppl["mean_nll"]
        for item, (value, count) in zip(items, nll):
            item["answer_nll"], item["answer_tokens"] = value, count
    return metrics, items
