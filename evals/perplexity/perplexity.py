"""Perplexity of reference answers, as a local Hugging Face `evaluate` module.

The evaluator runs the model under teacher forcing on prompt + reference answer and passes, per item,
the summed negative log-likelihood (nats) of the answer tokens and their count; the prompt is context
only. This module aggregates: perplexity = exp(total NLL / total answer tokens), i.e. per token over the
whole set, so long answers weigh by their length. evaluate scans imports with a regex: one per line.
"""

import math

import datasets
import evaluate

_DESCRIPTION = "Token-level perplexity of reference answers from per-item summed NLL and token counts."
_KWARGS_DESCRIPTION = """
Args:
    nll (list of float): summed negative log-likelihood (natural log) of each item's answer tokens.
    tokens (list of int): number of answer tokens of each item (> 0).
Returns:
    perplexity (float): exp(sum(nll) / sum(tokens)).
    mean_nll (float): sum(nll) / sum(tokens), nats per token.
"""
_CITATION = ""


class Perplexity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"nll": datasets.Value("float64"), "tokens": datasets.Value("int64")}),
        )

    def _compute(self, nll, tokens):
        if len(nll) != len(tokens):
            raise ValueError(f"{len(nll)} NLL values for {len(tokens)} token counts")
        if not tokens:
            raise ValueError("perplexity of an empty set is undefined")
        if min(tokens) <= 0:
            raise ValueError("every item needs at least one answer token")
        if min(nll) < 0:
            raise ValueError("a negative log-likelihood is negative: pass NLL, not log-probabilities")
        mean = sum(nll) / sum(tokens)
        return {"perplexity": math.exp(mean), "mean_nll": mean}
