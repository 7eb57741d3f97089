"""A classical reference for label tasks: TF-IDF features and logistic regression (scikit-learn), fit on the
same train split and scored on the same test rows by the same metrics, reported as model ``tfidf``.

It answers "does the language model beat a cheap text classifier at all?". It is reported beside base,
adapter and full fine-tune (table, comparison plot), never gated on: the promotion gates read those three
by name.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from loraops.config import EvalParams
from loraops.evaluation.metrics import score_answers

MODEL_NAME = "tfidf"


def run_tfidf(train_rows: list[dict], rows: list[dict], params: EvalParams, root: Path,
              labels: list[str]) -> dict[str, Any]:
    """A run in :func:`loraops.evaluation.evaluator.run_model`'s shape (metrics, items, no retention); word
    1-2 grams and character 2-5 grams within word boundaries, so short requests still share features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union
    from sklearn.feature_extraction.text import TfidfVectorizer

    if len({r["label"] for r in train_rows}) < 2:
        raise ValueError("the tfidf reference needs train rows of at least two labels")
    started = time.perf_counter()
    classifier = make_pipeline(
        make_union(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                   TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True)),
        LogisticRegression(max_iter=2000, C=10.0))
    classifier.fit([r["text"] for r in train_rows], [r["label"] for r in train_rows])
    predicted = [str(p) for p in classifier.predict([r["text"] for r in rows])]
    seconds = time.perf_counter() - started
    scored = params.model_copy(update={"metrics": [m for m in params.metric_names() if m != "perplexity"]})
    metrics, items = score_answers(predicted, rows, None, scored, root, labels)
    metrics.update({"items": len(rows), "seconds": seconds, "items_per_second": len(rows) / seconds})
    return {"metrics": metrics, "items": items, "retention_items": []}
