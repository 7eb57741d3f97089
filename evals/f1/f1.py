"""Macro-F1 with per-label precision, recall and F1, as a local Hugging Face `evaluate` module.

Loaded by path (``evaluate.load("evals/f1")``), never from the hub. evaluate scans this file's imports
with a regex, so each import stands on its own line.

The average runs over the reference labels plus any ``labels`` passed in (the task's label set), so a
class that is never predicted counts with F1 0. Predictions outside that set (a model answering with
something that is not a label) lower the recall of the true class but do not add classes of their own:
otherwise the macro average would depend on how many different wrong strings a model invents.
Precision or recall with a zero denominator is 0 (the convention of scikit-learn's zero_division=0).
"""

import datasets
import evaluate

_DESCRIPTION = "Macro-averaged F1 over the label set, with per-label precision, recall, F1 and support."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): predicted labels, already normalised.
    references (list of str): reference labels.
    labels (list of str, optional): the task's label set; labels never seen in references still count.
Returns:
    macro_f1 (float): mean F1 over the labels, in [0, 1].
    per_label (dict): label -> {precision, recall, f1, support}.
"""
_CITATION = ""


class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, labels=None):
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
        if not references:
            raise ValueError("F1 of an empty set is undefined")
        label_set = sorted(set(references) | set(labels or []))
        per_label = {}
        for label in label_set:
            tp = sum(p == label and r == label for p, r in zip(predictions, references))
            predicted = sum(p == label for p in predictions)
            support = sum(r == label for r in references)
            precision = tp / predicted if predicted else 0.0
            recall = tp / support if support else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            per_label[label] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
        macro = sum(v["f1"] for v in per_label.values()) / len(per_label)
        return {"macro_f1": macro, "per_label": per_label}
