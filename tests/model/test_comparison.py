"""The evaluate stage on the tiny model: base vs adapter vs full fine-tune, eval.json schema, report, base cache."""

import csv

import pytest

from loraops.config import EvalParams, load_params
from loraops.core import read_json
from loraops.data import load_splits
from loraops.evaluation import RETENTION_ITEMS, evaluate_model
from loraops.evaluation.compare import evaluate_base_cached
from loraops.modeling import load_base
from tests.helpers.projects import new_project, run_stages


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_base):
    layout = new_project(tmp_path_factory.mktemp("comparison") / "project", tiny_base,
                         eval={"batch_size": 32, "bootstrap_samples": 200}, search={"enabled": False})
    summary = run_stages(layout, "base_model", "ingest", "validate", "prepare", "rehearsal", "search", "train",
                         "baseline", "evaluate")["evaluate"]
    return layout, load_params(layout.params_file), summary


def test_eval_json_follows_the_schema_the_promotion_gates_read(evaluated):
    layout, params, summary = evaluated
    on_disk = read_json(layout.eval_metrics)
    assert on_disk == summary
    test_rows = load_splits(layout)["test"]
    assert on_disk["headline"] == "accuracy" and on_disk["test_items"] == len(test_rows)
    assert len(on_disk["test_set_sha256"]) == 64
    assert set(on_disk["models"]) == {"base", "adapter", "full", "tfidf"}
    tfidf = on_disk["models"].pop("tfidf")  # the classical reference: scored on the same items, no retention
    assert 0 <= tfidf["accuracy_low"] <= tfidf["accuracy"] <= tfidf["accuracy_high"] <= 1
    assert tfidf["items"] == len(test_rows) and "retention" not in tfidf and "perplexity" not in tfidf
    assert on_disk["differences"]["adapter_minus_tfidf"]["mean"] == pytest.approx(
        on_disk["models"]["adapter"]["accuracy"] - tfidf["accuracy"])
    assert on_disk["constrained"] is True
    assert on_disk["base_prompting"] == {"labels_listed": True, "shots": params.eval.base_shots, "constrained": True}
    for name, scores in on_disk["models"].items():
        assert 0 <= scores["accuracy_unconstrained"] <= 1, name  # the free answers' accuracy, beside
        for key in ("accuracy", "accuracy_low", "accuracy_high", "macro_f1", "perplexity", "retention",
                    "retention_drop", "items", "seconds"):
            assert isinstance(scores[key], (int, float)) and not isinstance(scores[key], bool), (name, key)
        assert scores["accuracy_low"] <= scores["accuracy"] <= scores["accuracy_high"]
        assert 0 <= scores["macro_f1"] <= 1 and scores["perplexity"] >= 1 and scores["items"] == len(test_rows)
    models = on_disk["models"]
    assert models["base"]["retention_drop"] == 0.0
    assert models["adapter"]["retention_drop"] == pytest.approx(models["base"]["retention"] - models["adapter"]["retention"])
    assert "retention_drop_low" not in models["base"]
    for name in ("adapter", "full"):  # paired over the same retention items
        drop = models[name]
        assert drop["retention_drop_low"] <= drop["retention_drop"] <= drop["retention_drop_high"]
    for key, other in (("adapter_minus_base", "base"), ("adapter_minus_full", "full")):
        diff = on_disk["differences"][key]
        assert diff["mean"] == pytest.approx(models["adapter"]["accuracy"] - models[other]["accuracy"])
        assert diff["low"] <= diff["mean"] <= diff["high"]
    gain = models["full"]["accuracy"] - models["base"]["accuracy"]
    expected = (models["adapter"]["accuracy"] - models["base"]["accuracy"]) / gain if gain > 0 else None
    assert on_disk.get("recovered_share") == (pytest.approx(expected) if expected is not None else None)  # None: left out


def test_report_confusion_matrix_and_per_label_scores_are_written(evaluated):
    layout, _, summary = evaluated
    report = layout.eval_report.read_text()
    for row in ("| base", "| adapter", "| full", "| tfidf", "adapter minus base", "adapter minus full",
                "adapter minus tfidf", "Recovered share", "asked at its best", "accuracy_unconstrained",
                "No rehearsal rows"):
        assert row in report
    assert f"{summary['models']['adapter']['accuracy']:.3f} [" in report
    with layout.confusion_plot.open() as handle:
        confusion = list(csv.DictReader(handle))
    assert len(confusion) == summary["test_items"] and set(confusion[0]) == {"actual", "predicted"}
    per_label = read_json(layout.eval_report.parent / "per_label.json")
    labels = read_json(layout.prepared_dir / "labels.json")
    assert set(per_label) == {"base", "adapter", "full", "tfidf"} and set(per_label["adapter"]) == set(labels)
    assert (layout.eval_report.parent / "confusion.png").stat().st_size > 1000
    retention = (layout.eval_report.parent / "retention.jsonl").read_text().splitlines()
    assert len(retention) == 3 * len(RETENTION_ITEMS)  # tfidf answers no general prompts
    plotted = {(r["model"], r["metric"]) for r in csv.DictReader(layout.comparison_plot.open())}
    assert ("tfidf", "accuracy") in plotted and ("tfidf", "retention") not in plotted


def test_base_evaluation_is_cached_until_test_data_or_eval_params_change(evaluated):
    layout, params, summary = evaluated
    assert summary["models"]["base"]["cached"] is False  # first evaluation in this project
    rows = load_splits(layout)["test"]
    labels = read_json(layout.prepared_dir / "labels.json")
    ep = params.eval
    train = load_splits(layout)["train"]
    hit = evaluate_base_cached(layout, rows, ep, labels, train, params.prepare)
    assert hit["cached"] is True and hit["metrics"]["accuracy"] == summary["models"]["base"]["accuracy"]
    # The shots are part of what the base model is asked: other shots, or another number of them, is a miss.
    assert evaluate_base_cached(layout, rows, ep, labels, train[1:], params.prepare)["cached"] is False
    fewer_shots = ep.model_copy(update={"base_shots": 2, "retention": False})
    assert evaluate_base_cached(layout, rows, fewer_shots, labels, train, params.prepare)["cached"] is False
    assert evaluate_base_cached(layout, rows, fewer_shots, labels, train, params.prepare)["cached"] is True
    free = fewer_shots.model_copy(update={"constrained": False})
    assert evaluate_base_cached(layout, rows, free, labels, train, params.prepare)["cached"] is False
    fewer = evaluate_base_cached(layout, rows[:-1], ep, labels)
    assert fewer["cached"] is False and fewer["metrics"]["items"] == len(rows) - 1
    changed = ep.model_copy(update={"max_new_tokens": 3, "retention": False})
    assert evaluate_base_cached(layout, rows[:-1], changed, labels)["cached"] is False
    assert evaluate_base_cached(layout, rows[:-1], changed, labels)["cached"] is True
    assert evaluate_base_cached(layout, rows[:-1], ep.model_copy(update={"cache_base": False}), labels)["cached"] is False


def test_full_model_dir_holding_the_base_weights_scores_exactly_like_the_base_path(evaluated, tmp_path):
    layout, params, _ = evaluated
    rows = load_splits(layout)["test"][:10]
    load_base(layout.base_model_dir).save_pretrained(tmp_path / "plain", safe_serialization=True)
    ep = EvalParams(batch_size=8, retention=False)
    base = evaluate_model(layout.base_model_dir, rows, 8, layout.root, params=ep)
    plain = evaluate_model(layout.base_model_dir, rows, 8, layout.root, model_dir=tmp_path / "plain", params=ep)
    assert [p["raw"] for p in base[1]] == [p["raw"] for p in plain[1]]
    assert [p["answer_nll"] for p in base[1]] == [p["answer_nll"] for p in plain[1]]
    assert base[0] | {"seconds": 0, "items_per_second": 0} == plain[0] | {"seconds": 0, "items_per_second": 0}
