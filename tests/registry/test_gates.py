"""The promotion gates as pure functions over hand-made evaluation and validation summaries (the records the
evaluate and validate stages write)."""

import pytest

from loraops.config import PROMOTION_GATES, PromoteParams, load_params
from loraops.core import ConfigError
from loraops.evaluation import EvaluationSummary
from loraops.registry.gates import ChampionScore, describe, evaluate_gates, parse_summary, passed, summarise
from loraops.validation import ValidationSummary
from tests.helpers.registry import evaluation


def validation(success: bool = True, errors: int = 0, warnings: int = 1) -> ValidationSummary:
    return ValidationSummary(success=success, errors=errors, warnings=warnings, failures=[], stats={})


OK_VALIDATION = validation()
PARAMS = PromoteParams()


def outcomes_by_name(evaluation_json, validation=OK_VALIDATION, params=PARAMS, champion=None, version="2"):
    summary = EvaluationSummary.model_validate(evaluation_json)
    return {o.name: o for o in evaluate_gates(summary, validation, params, champion, version)}


def test_a_good_candidate_passes_every_gate():
    outcomes = evaluate_gates(EvaluationSummary.model_validate(evaluation()), OK_VALIDATION, PARAMS, None)
    assert [o.name for o in outcomes] == list(PROMOTION_GATES)
    assert {o.status for o in outcomes} == {"pass"} and passed(outcomes)


# One hand-made failure per gate; every other gate still passes.
FAILING = {
    "validation_passed": dict(validation=validation(success=False, errors=3, warnings=0)),
    "beats_base": dict(evaluation_json=evaluation(diff_low=-0.01)),
    "recovers_full_gain": dict(evaluation_json=evaluation(adapter=0.60, full=0.90)),
    "retention": dict(evaluation_json=evaluation(retention_drop=0.2)),
    "not_worse_than_champion": dict(champion=ChampionScore("1", 0.95, "test-set-1")),
}


@pytest.mark.parametrize("gate", PROMOTION_GATES)
def test_each_gate_fails_on_its_own(gate):
    kwargs = {"evaluation_json": evaluation(), **FAILING[gate]}
    outcomes = outcomes_by_name(**kwargs)
    assert outcomes[gate].status == "fail", outcomes[gate]
    assert {n for n, o in outcomes.items() if o.status != "pass"} == {gate}
    assert not passed(list(outcomes.values()))


def test_champion_gate_allows_noise_inside_the_candidates_interval():
    # Candidate 0.80 +- 0.08: a champion at 0.87 is within noise, at 0.89 it is not.
    assert outcomes_by_name(evaluation(), champion=ChampionScore("1", 0.87, "test-set-1"))[
        "not_worse_than_champion"].status == "pass"
    assert outcomes_by_name(evaluation(), champion=ChampionScore("1", 0.89, "test-set-1"))[
        "not_worse_than_champion"].status == "fail"
    margin = PromoteParams(champion_margin=0.02)
    assert outcomes_by_name(evaluation(), params=margin, champion=ChampionScore("1", 0.89, "test-set-1"))[
        "not_worse_than_champion"].status == "pass"


def test_missing_evidence_fails_unless_the_gate_is_optional():
    no_full = evaluation(full=None)
    strict = outcomes_by_name(no_full)["recovers_full_gain"]
    assert strict.status == "fail" and "missing evidence" in strict.reason
    lenient = outcomes_by_name(no_full, params=PromoteParams(optional_gates=["recovers_full_gain"]))
    assert lenient["recovers_full_gain"].status == "skipped" and passed(list(lenient.values()))
    no_retention = outcomes_by_name(evaluation(retention_drop=None))["retention"]
    assert no_retention.status == "fail" and "retention_drop" in no_retention.reason
    # A summary without intervals cannot prove the adapter beats base, so it fails.
    bare = {"headline": "accuracy", "test_items": 10, "test_set_sha256": "s", "confidence": 0.95,
            "bootstrap_samples": 1000, "models": {"adapter": {"items": 10, "accuracy": 0.9},
                                                  "base": {"items": 10, "accuracy": 0.1}}}
    assert outcomes_by_name(bare)["beats_base"].status == "fail"
    assert outcomes_by_name(evaluation(), validation=None)["validation_passed"].status == "fail"


def test_champion_on_another_test_set_is_not_compared():
    other = ChampionScore("1", 0.99, "another-test-set")
    assert outcomes_by_name(evaluation(), champion=other)["not_worse_than_champion"].status == "fail"
    optional = PromoteParams(optional_gates=["not_worse_than_champion"])
    outcome = outcomes_by_name(evaluation(), params=optional, champion=other)["not_worse_than_champion"]
    assert outcome.status == "skipped" and "another test set" in outcome.reason
    assert outcomes_by_name(evaluation(), champion=ChampionScore("2", 0.99, "test-set-1"), version="2")[
        "not_worse_than_champion"].status == "pass"  # re-running the gates on the champion itself


def test_full_fine_tune_that_gained_nothing_leaves_nothing_to_recover():
    flat = evaluation(adapter=0.5, base=0.4, full=0.4)
    assert flat["recovered_share"] is None
    assert outcomes_by_name(flat)["recovers_full_gain"].status == "pass"


def test_outcomes_become_one_short_tag_and_a_readable_description():
    outcomes = evaluate_gates(EvaluationSummary.model_validate(evaluation(retention_drop=0.3)), OK_VALIDATION,
                              PARAMS, None)
    assert summarise(outcomes) == "fail: retention"
    assert parse_summary(summarise(outcomes)) == {**dict.fromkeys(PROMOTION_GATES, "pass"), "retention": "fail"}
    text = describe(outcomes, "challenger")
    assert "| retention | fail | retention drop 0.3000 > 0.0500 |" in text  # the reason lives in the table
    skipped = [o if o.name != "recovers_full_gain" else type(o)(o.name, "skipped", "optional") for o in outcomes]
    assert summarise(skipped) == "fail: retention; skipped: recovers_full_gain"
    assert parse_summary(summarise(skipped))["recovers_full_gain"] == "skipped"
    assert summarise([o for o in outcomes if o.name != "retention"]) == "all pass"
    assert parse_summary(None) == {}


def test_unknown_optional_gate_is_a_config_error(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("promote:\n  optional_gates: [beats_bse]\n")
    with pytest.raises(ConfigError, match="beats_bse"):
        load_params(path)


def test_the_retention_gate_judges_the_point_drop_and_shows_its_interval():
    uncertain = evaluation(retention_drop=0.04)
    uncertain["models"]["adapter"].update(retention_drop_low=-0.06, retention_drop_high=0.14)
    outcome = outcomes_by_name(uncertain)["retention"]
    assert outcome.status == "pass" and outcome.reason == "retention drop 0.0400 [-0.0600, +0.1400] <= 0.0500"
    above = evaluation(retention_drop=0.06)
    above["models"]["adapter"].update(retention_drop_low=-0.04, retention_drop_high=0.16)
    assert outcomes_by_name(above)["retention"].status == "fail"  # inside the noise, but the point is over
