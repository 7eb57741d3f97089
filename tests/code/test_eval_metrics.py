"""Metric modules (loaded by path, offline), bootstrap intervals and retention scoring on hand-made inputs."""

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from loraops.config import EvalParams
from loraops.core import ConfigError
from loraops.config import parse_params
from loraops.evaluation import load_metric
from loraops.data.general_prompts import RETENTION_TEST
from loraops.evaluation.retention import RETENTION_ITEMS, is_retained, score_retention
from loraops.evaluation.uncertainty import (macro_f1_statistic, mean_interval, paired_difference,
                                 paired_statistic_difference, statistic_interval)

REPO = Path(__file__).resolve().parents[2]


def test_metric_modules_load_with_the_network_switched_off():
    code = ("from pathlib import Path; from loraops.evaluation import load_metric\n"
            "for name in ('accuracy', 'f1', 'rouge_l', 'perplexity'): load_metric(name, Path('.'))\n"
            "print('ok')")
    env = dict(os.environ, HF_EVALUATE_OFFLINE="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_macro_f1_counts_a_never_predicted_class_as_zero():
    f1 = load_metric("f1", REPO).compute(predictions=["a", "a", "b", "b"], references=["a", "a", "b", "c"])
    assert f1["per_label"]["a"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
    assert f1["per_label"]["b"]["precision"] == 0.5 and f1["per_label"]["b"]["f1"] == pytest.approx(2 / 3)
    assert f1["per_label"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert f1["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)


def test_macro_f1_includes_task_labels_absent_from_the_test_set_and_ignores_invented_answers():
    metric = load_metric("f1", REPO)
    f1 = metric.compute(predictions=["a", "zzz"], references=["a", "a"], labels=["a", "b"])
    assert set(f1["per_label"]) == {"a", "b"}  # 'zzz' is not a class, 'b' is (F1 0)
    assert f1["per_label"]["a"]["recall"] == 0.5 and f1["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)


def test_rouge_l_known_answers():
    metric = load_metric("rouge_l", REPO)
    # LCS of 'the cat sat on the mat' / 'the cat is on the mat' is 5 words of 6: P = R = F = 5/6.
    out = metric.compute(predictions=["The cat sat on the mat.", "abc", ""], references=["the cat is on the mat", "xyz", ""])
    assert out["scores"] == pytest.approx([5 / 6, 0.0, 1.0])
    assert out["rouge_l"] == pytest.approx((5 / 6 + 0 + 1) / 3)
    # Order matters (subsequence, not bag of words): P = R = 1/2.
    assert metric.compute(predictions=["b a"], references=["a b"])["rouge_l"] == pytest.approx(0.5)


def test_perplexity_aggregates_token_weighted_nll():
    metric = load_metric("perplexity", REPO)
    out = metric.compute(nll=[2.0, 4.0], tokens=[1, 3])
    assert out["mean_nll"] == 1.5 and out["perplexity"] == pytest.approx(math.exp(1.5))
    assert metric.compute(nll=[0.0], tokens=[5])["perplexity"] == 1.0
    with pytest.raises(ValueError, match="at least one answer token"):
        metric.compute(nll=[1.0], tokens=[0])


def test_bootstrap_interval_contains_the_estimate_and_shrinks_with_more_items():
    rng = np.random.default_rng(3)
    small = rng.integers(0, 2, 40).astype(float)
    large = rng.integers(0, 2, 4000).astype(float)
    a = mean_interval(small, samples=1000, confidence=0.95, seed=0)
    b = mean_interval(large, samples=1000, confidence=0.95, seed=0)
    for interval, values in ((a, small), (b, large)):
        assert interval["mean"] == values.mean() and interval["low"] <= interval["mean"] <= interval["high"]
    assert (b["high"] - b["low"]) < (a["high"] - a["low"]) / 5
    assert mean_interval(small, 1000, 0.95, 0) == a  # seeded: reproducible


def test_paired_difference_of_a_model_with_itself_is_exactly_zero():
    scores = np.random.default_rng(1).integers(0, 2, 200)
    assert paired_difference(scores, scores, 500, 0.95, 0) == {"mean": 0.0, "low": 0.0, "high": 0.0}
    preds, refs = ["a", "b", "b", "c"] * 10, ["a", "b", "c", "c"] * 10
    stat = macro_f1_statistic(preds, refs, ["a", "b", "c"])
    assert paired_statistic_difference(stat, stat, 40, 300, 0.95, 0) == {"mean": 0.0, "low": 0.0, "high": 0.0}


def test_paired_bootstrap_uses_the_same_items_for_both_models():
    # b is a plus one item worse out of 100: unpaired resamples would scatter, paired ones barely move.
    a = np.ones(100)
    b = a.copy()
    b[0] = 0
    diff = paired_difference(a, b, 1000, 0.95, 0)
    assert diff["mean"] == pytest.approx(0.01) and 0 <= diff["low"] and diff["high"] <= 0.04
    with pytest.raises(ValueError, match="same items"):
        paired_difference(a, b[:50], 100, 0.95, 0)


def test_macro_f1_statistic_matches_the_metric_module():
    preds, refs = ["a", "b", "b", "x", "c"], ["a", "b", "c", "c", "c"]
    stat = macro_f1_statistic(preds, refs, ["a", "b", "c", "d"])
    module = load_metric("f1", REPO).compute(predictions=preds, references=refs, labels=["a", "b", "c", "d"])
    assert stat(np.arange(5)) == pytest.approx(module["macro_f1"])
    interval = statistic_interval(stat, 5, 200, 0.95, 0)
    assert interval["low"] <= interval["mean"] <= interval["high"]


@pytest.mark.parametrize("answer, accepted, expected", [
    ("The capital of France is Paris.", "paris", True), ("PARIS", "paris", True),
    ("The answer is 14.", "4|four", False), ("2 + 2 = 4", "4|four", True), ("It is four.", "4|four", True),
    ("Carbon dioxide (CO2).", "carbon dioxide|co2", True), ("London", "paris", False), ("", "yes", False),
])
def test_retention_scoring_rule(answer, accepted, expected):
    assert is_retained(answer, accepted) is expected


def test_retention_set_is_built_in_and_scored_as_a_share():
    assert RETENTION_ITEMS is RETENTION_TEST and len(RETENTION_ITEMS) >= 100
    assert len({p for p, _ in RETENTION_ITEMS}) == len(RETENTION_ITEMS)
    answers = [accepted.split("|")[0] for _, accepted in RETENTION_ITEMS]
    answers[0] = "no idea"
    share, items = score_retention(answers)
    assert share == pytest.approx((len(RETENTION_ITEMS) - 1) / len(RETENTION_ITEMS)) and not items[0]["retained"]
    with pytest.raises(ValueError):
        score_retention(answers[:3])


def test_eval_params_pick_metrics_per_task_and_reject_an_unscored_headline():
    assert EvalParams().metric_names() == ["accuracy", "macro_f1", "perplexity"]
    assert EvalParams(task="text").headline_metric() == "rouge_l"
    with pytest.raises(ConfigError, match="eval.*headline 'rouge_l' is not in eval.metrics"):
        parse_params({"eval": {"headline": "rouge_l"}}, "params.yaml")
    with pytest.raises(ConfigError, match="macro_f1 needs label answers"):
        parse_params({"eval": {"task": "text", "metrics": ["rouge_l", "macro_f1"]}}, "params.yaml")


def test_the_report_shows_the_retention_drop_interval_and_what_rehearsal_added():
    from loraops.evaluation import EvaluationSummary
    from loraops.evaluation.report import render_report

    scores = {"items": 10, "accuracy": 0.5, "accuracy_low": 0.4, "accuracy_high": 0.6, "retention": 0.5}
    summary = EvaluationSummary(headline="accuracy", test_items=10, test_set_sha256="s" * 64, confidence=0.95,
                                bootstrap_samples=100, models={
                                    "base": {**scores, "retention_drop": 0.0},
                                    "adapter": {**scores, "retention": 0.4, "retention_drop": 0.1,
                                                "retention_drop_low": -0.05, "retention_drop_high": 0.25}})
    facts = {"base": {}, "adapter": {"rehearsal_rows": 30, "rehearsal_share": 0.3, "rehearsal_tokens": 900}}
    report = render_report(summary, {}, facts, EvalParams())
    assert "0.400 (+0.100 [-0.050, +0.250])" in report
    assert "Rehearsal (adapter): 30 of the training rows" in report and "900 answer tokens" in report
    assert "No rehearsal rows" in render_report(summary, {}, {"base": {}, "adapter": {}}, EvalParams())
