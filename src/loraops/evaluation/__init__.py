"""Evaluation: one evaluator for the base model, an adapter and the full fine-tune; metrics from ``evals/``;
bootstrap intervals; forgetting on the built-in retention set; the base model's cache; the report; and the
``evaluate`` stage that compares them."""

from loraops.evaluation.compare import evaluate_stage, run_evaluation
from loraops.evaluation.evaluator import answer_nll, evaluate_model, generate_answers, load_model, run_model
from loraops.evaluation.metrics import load_metric, normalise_answer, score_answers
from loraops.evaluation.records import EvaluationSummary, Interval, ModelScores
from loraops.evaluation.retention import RETENTION_ITEMS, is_retained, retention_prompts, score_retention

__all__ = ["RETENTION_ITEMS", "EvaluationSummary", "Interval", "ModelScores", "answer_nll", "evaluate_model",
           "evaluate_stage", "generate_answers", "is_retained", "load_metric", "load_model", "normalise_answer",
           "retention_prompts", "run_evaluation", "run_model", "score_answers", "score_retention"]
