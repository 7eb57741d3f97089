"""The search's selection rule and Pareto front on hand-made trial results (no training)."""

import pytest

from loraops.search import NoCompletedTrial, TrialResult, pareto_front, select


def trial(number, metric, params, state="COMPLETE"):
    return TrialResult(number=number, state=state, params={"r": number}, trainable_params=params, metric=metric,
                       steps=10)


def test_picks_the_smallest_trial_within_tolerance_of_the_best():
    results = [trial(0, 0.90, 1000), trial(1, 0.895, 100), trial(2, 0.80, 10)]
    assert select(results, tolerance=0.01).number == 1
    assert select(results, tolerance=0.0).number == 0
    assert select(results, tolerance=0.2).number == 2


def test_a_trial_exactly_tolerance_below_the_best_qualifies_despite_float_rounding():
    # 0.9 - 0.85 is 0.05000000000000004 in floats: the edge must still count as within 0.05.
    results = [trial(0, 0.9, 1000), trial(1, 0.85, 10)]
    assert select(results, tolerance=0.05).number == 1
    assert select(results, tolerance=0.0499).number == 0


def test_ties_on_size_go_to_the_higher_metric_then_the_earlier_trial():
    assert select([trial(0, 0.88, 50), trial(1, 0.90, 50), trial(2, 0.90, 500)], tolerance=0.05).number == 1
    assert select([trial(3, 0.90, 50), trial(1, 0.90, 50), trial(2, 0.90, 50)], tolerance=0.0).number == 1


def test_pruned_and_failed_trials_are_never_chosen_even_when_smaller():
    results = [trial(0, 0.7, 1000), trial(1, None, 1, state="PRUNED"), trial(2, None, 2, state="FAIL")]
    assert select(results, tolerance=1.0).number == 0


def test_all_failed_is_a_clear_error_naming_the_states():
    with pytest.raises(NoCompletedTrial, match=r"no trial completed \(FAIL: 2, PRUNED: 1\)"):
        select([trial(0, None, 5, "FAIL"), trial(1, None, 5, "FAIL"), trial(2, None, 5, "PRUNED")], 0.01)
    with pytest.raises(NoCompletedTrial, match="no trials"):
        select([], 0.01)
    with pytest.raises(ValueError, match="tolerance"):
        select([trial(0, 0.5, 5)], -0.1)


def test_pareto_front_keeps_only_undominated_completed_trials():
    results = [trial(0, 0.9, 1000), trial(1, 0.85, 100), trial(2, 0.80, 500), trial(3, 0.85, 100),
               trial(4, None, 1, state="PRUNED"), trial(5, 0.5, 10)]
    assert [r.number for r in pareto_front(results)] == [5, 1, 3, 0]
