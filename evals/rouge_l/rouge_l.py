"""ROUGE-L F-measure (longest common subsequence of words), as a local Hugging Face `evaluate` module.

Written here rather than wrapping ``rouge_score``: that package is not a dependency and the metric is a
few lines. Texts are lower-cased and split into runs of letters/digits (no stemming, no stop words), so
punctuation and case never count. evaluate scans this file's imports with a regex: one import per line.
"""

import re

import datasets
import evaluate

_DESCRIPTION = "Mean over items of the ROUGE-L F1 (LCS of word tokens), with per-item scores."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): generated texts.
    references (list of str): reference texts.
Returns:
    rouge_l (float): mean ROUGE-L F1 in [0, 1].
    scores (list of float): the F1 of each item (two empty texts score 1, one empty text scores 0).
"""
_CITATION = "Lin, C.-Y. (2004). ROUGE: A Package for Automatic Evaluation of Summaries."
_WORD = re.compile(r"[^\W_]+")


def tokens(text):
    return _WORD.findall(text.lower())


def lcs_length(a, b):
    """Length of the longest common subsequence, O(len(a) * len(b)) time, O(len(b)) memory."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l_f1(prediction, reference):
    p, r = tokens(prediction), tokens(reference)
    if not p and not r:
        return 1.0
    lcs = lcs_length(p, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


class RougeL(evaluate.Metric):
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
            raise ValueError("ROUGE-L of an empty set is undefined")
        scores = [rouge_l_f1(p, r) for p, r in zip(predictions, references)]
        return {"rouge_l": sum(scores) / len(scores), "scores": scores}
