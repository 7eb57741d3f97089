"""The pools of general prompts are disjoint, and rehearsal rows reach the training data at the set share."""

import pytest

from loraops.core import ConfigError
from loraops.data.general_prompts import (POOLS, REHEARSAL_PROMPTS, RETENTION_DEV, RETENTION_TEST, near_duplicates,
                                         normalise_prompt, pool_overlaps)
from loraops.training import mix_rehearsal


def test_the_three_pools_share_no_prompt_after_normalisation():
    assert pool_overlaps() == {}
    assert set(POOLS) == {"dev", "test"} and REHEARSAL_PROMPTS
    assert normalise_prompt("What is 2 + 2?") == normalise_prompt("what is 2+2")


def test_the_pools_have_their_sizes_and_every_retention_item_an_answer():
    assert len(RETENTION_TEST) >= 100 and 50 <= len(RETENTION_DEV) <= 70 and len(REHEARSAL_PROMPTS) >= 140
    for prompt, accepted in RETENTION_TEST + RETENTION_DEV:
        assert all(option.strip() for option in accepted.split("|")), prompt
    for items in (RETENTION_TEST, RETENTION_DEV, [(p, "") for p in REHEARSAL_PROMPTS]):
        assert len({normalise_prompt(p) for p, _ in items}) == len(items)  # no repeat within a pool either


def test_no_question_is_asked_again_in_other_words_in_another_pool(monkeypatch):
    assert near_duplicates() == []
    import loraops.data.general_prompts as pools

    monkeypatch.setattr(pools, "REHEARSAL_PROMPTS", (*pools.REHEARSAL_PROMPTS, "Please tell me the capital of France."))
    assert [(a, b) for a, b, _ in pools.near_duplicates()] == [
        ("Please tell me the capital of France.", "What is the capital of France? Answer with one word.")]


def test_a_planted_overlap_is_found(monkeypatch):
    import loraops.data.general_prompts as pools

    monkeypatch.setattr(pools, "REHEARSAL_PROMPTS", (*pools.REHEARSAL_PROMPTS, "WHAT is 2 + 2 ?"))
    assert "rehearsal/test" in pools.pool_overlaps()


@pytest.mark.parametrize("share", [0.0, 0.2, 0.3, 0.5])
def test_rehearsal_rows_make_up_the_share_and_task_rows_stay_whole(share):
    task = [{"prompt": f"t{i}", "completion": "x"} for i in range(70)]
    rehearsal = [{"prompt": f"r{i}", "completion": "y"} for i in range(9)]
    mixed = mix_rehearsal(task, rehearsal, share, seed=3)
    drawn = [row for row in mixed if row["prompt"].startswith("r")]
    assert len(drawn) / len(mixed) == pytest.approx(share, abs=0.01)
    assert sorted(r["prompt"] for r in mixed if r["prompt"].startswith("t")) == sorted(r["prompt"] for r in task)
    assert mixed == mix_rehearsal(task, rehearsal, share, seed=3)  # the same inputs, the same data


def test_a_share_without_answers_is_a_clear_error():
    with pytest.raises(ConfigError, match="no rehearsal answers"):
        mix_rehearsal([{"prompt": "t", "completion": "x"}] * 10, [], 0.3, seed=0)
