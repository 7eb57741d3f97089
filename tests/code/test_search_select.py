"""The search's selection rule and Pareto front on hand-made trial results (no training)."""

import pytest

from loraops.search import (Bootstrap, NoCompletedTrial, NoFeasibleTrial, NoGainOverBase, TrialResult, pareto_front,
                            select)

N = 40  # val items


def right(k: int, n: int = N) -> tuple[int, ...]:
    """The first ``k`` of ``n`` items right."""
    return tuple([1] * k + [0] * (n - k))


def trial(number, correct, params, state="COMPLETE", drop=0.0):
    metric = sum(correct) / len(correct) if correct is not None and state == "COMPLETE" else None
    return TrialResult(number=number, state=state, params={"r": number}, trainable_params=params, metric=metric,
                       steps=10, retention_drop=drop, correct=correct if state == "COMPLETE" else None)


def test_of_two_tied_trials_the_smaller_adapter_is_chosen():
    # 30 vs 29 of 40 right, one item apart: not significantly different.
    picked = select([trial(0, right(30), 1000), trial(1, right(29), 100)], max_retention_drop=0.05)
    assert picked.chosen.number == 1 and picked.best.number == 0
    assert picked.versus_best["low"] < 0 <= picked.versus_best["high"]


def test_of_two_clearly_different_trials_the_better_one_is_chosen_even_when_larger():
    picked = select([trial(0, right(36), 1000), trial(1, right(12), 100)], max_retention_drop=0.05)
    assert picked.chosen.number == 0
    # The same two trials but tied: now the smaller wins, so it is the difference that decided.
    assert select([trial(0, right(36), 1000), trial(1, right(35), 100)], 0.05).chosen.number == 1


def test_the_bootstrap_is_seeded_so_the_same_trials_give_the_same_choice():
    results = [trial(0, right(30), 1000), trial(1, right(25), 100), trial(2, right(27), 300)]
    first = select(results, 0.05, bootstrap=Bootstrap(seed=3))
    assert first == select(results, 0.05, bootstrap=Bootstrap(seed=3))


def test_an_infeasible_trial_is_never_chosen_however_good_or_small():
    results = [trial(0, right(20), 1000, drop=0.0), trial(1, right(39), 10, drop=0.2),
               trial(2, right(40), 5, drop=0.05 + 1e-3)]
    picked = select(results, max_retention_drop=0.05)
    assert picked.chosen.number == 0 and picked.best.number == 0 and picked.feasible == 1
    # A drop exactly at the bound is feasible (the gate's rule: drop <= max_retention_drop).
    assert select([trial(0, right(20), 1000), trial(1, right(20), 10, drop=0.05)], 0.05).chosen.number == 1
    # No retention score: not feasible.
    assert select([trial(0, right(20), 1000), trial(1, right(30), 10, drop=None)], 0.05).chosen.number == 0


def test_no_feasible_trial_is_a_one_line_failure_naming_the_best_drop():
    results = [trial(0, right(30), 100, drop=0.25), trial(1, right(30), 100, drop=0.125)]
    with pytest.raises(NoFeasibleTrial, match=r"max_retention_drop 0.050; the smallest drop seen is 0.125 "
                                              r"\(trial 1\); nothing trained") as info:
        select(results, max_retention_drop=0.05)
    assert "\n" not in str(info.value)


def test_all_zero_trials_do_not_beat_the_base_and_fail_in_one_line():
    base = right(0)
    with pytest.raises(NoGainOverBase, match=r"no feasible trial beats the base model on val") as info:
        select([trial(0, right(0), 100), trial(1, right(0), 10)], 0.05, base_correct=base)
    assert "\n" not in str(info.value) and "nothing trained" in str(info.value)
    # Without the floor the same trials are "chosen": the floor is what stops them.
    assert select([trial(0, right(0), 100), trial(1, right(0), 10)], 0.05).chosen.number == 1


def test_the_floor_needs_a_clear_gain_over_the_base_on_the_same_items():
    base = right(20)
    # Two items better than the base: within noise -> fails.
    with pytest.raises(NoGainOverBase, match=r"trial 0, is \+0.050 accuracy vs base \(95% interval \+0.000"):
        select([trial(0, right(22), 100)], 0.05, base_correct=base)
    # Clearly better: chosen, with the lower bound of the gain recorded.
    picked = select([trial(0, right(34), 100)], 0.05, base_correct=base)
    assert picked.chosen.number == 0 and picked.versus_base["low"] > 0
    # A trial that beats the base only when infeasible does not count.
    with pytest.raises(NoGainOverBase):
        select([trial(0, right(21), 100), trial(1, right(38), 10, drop=0.3)], 0.05, base_correct=base)


def test_only_trials_that_beat_the_base_are_candidates_for_the_smallest():
    base = right(20)
    # Trial 1 is small and tied with the best within noise, but not clearly above the base: not chosen.
    results = [trial(0, right(24), 1000), trial(1, right(21), 10)]
    assert select(results, 0.05).chosen.number == 1
    assert select(results, 0.05, base_correct=base).chosen.number == 0


def test_pruned_and_failed_trials_are_never_chosen_even_when_smaller():
    results = [trial(0, right(28), 1000), trial(1, None, 1, state="PRUNED"), trial(2, None, 2, state="FAIL")]
    assert select(results, 1.0).chosen.number == 0


def test_all_failed_is_a_clear_error_naming_the_states():
    with pytest.raises(NoCompletedTrial, match=r"no trial completed \(FAIL: 2, PRUNED: 1\)"):
        select([trial(0, None, 5, "FAIL"), trial(1, None, 5, "FAIL"), trial(2, None, 5, "PRUNED")], 0.05)
    with pytest.raises(NoCompletedTrial, match="no trials"):
        select([], 0.05)
    with pytest.raises(ValueError, match="max_retention_drop"):
        select([trial(0, right(20), 5)], -0.1)


def test_pareto_front_keeps_only_undominated_completed_trials():
    results = [trial(0, right(36), 1000), trial(1, right(34), 100), trial(2, right(32), 500),
               trial(3, right(34), 100), trial(4, None, 1, state="PRUNED"), trial(5, right(20), 10)]
    assert [r.number for r in pareto_front(results)] == [5, 1, 3, 0]
