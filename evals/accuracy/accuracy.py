"""Accuracy (exact match of normalised labels), as a local Hugging Face `evaluate` module.

Loaded by path (``evaluate.load("evals/accuracy")``): loading metrics by name needs the hub, which
loraops never reaches at run time. evaluate scans this file's imports with a regex, so each import
stands on its own line.
"""

import datasets
import evaluate

_DESCRIPTION = "Share of predictions equal to their reference label (strings compared exactly)."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): predicted labels, already normalised.
    references (list of str): reference labels.
Returns:
    accuracy (float): in [0, 1].
"""
_CITATION = ""


class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references):
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
        if not references:
            raise ValueError("accuracy of an empty set is undefined")
        hits = sum(p == r for p, r in zip(predictions, references))
        return {"accuracy": hits / len(references)}
