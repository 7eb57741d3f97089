"""The rehearsal stage on the tiny model (the base's own answers, cached by content key) and the rehearsal rows
reaching the adapter's and the full fine-tune's training data at the configured share."""

import shutil

import pytest

import loraops.rehearsal.stage as rehearsal_module
from loraops.config import load_params
from loraops.core import ConfigError, read_json, read_jsonl, write_json, write_jsonl
from loraops.data.demo import generate_demo_dataset
from loraops.data.general_prompts import REHEARSAL_PROMPTS
from loraops.modeling import INFO_FILE, load_tokenizer
from loraops.prepare import prepare
from loraops.rehearsal import rehearsal_key
from loraops.training import read_baseline, rehearsal_count, training_splits
from tests.helpers.projects import new_project, run_stages

SHARE = ["train.rehearsal.share=0.3"]


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_base):
    layout = new_project(tmp_path_factory.mktemp("rehearsal") / "project", tiny_base, search={"enabled": False},
                         train={"rehearsal": {"max_new_tokens": 8}})
    params = load_params(layout.params_file)
    run_stages(layout, "base_model")
    rows = generate_demo_dataset(seed=1, train_per_intent=6, test_per_intent=2)
    splits, labels, _ = prepare(rows, load_tokenizer(layout.base_model_dir), params.prepare, seed=1)
    for name, split in splits.items():
        write_jsonl(layout.prepared_dir / f"{name}.jsonl", split)
    write_json(layout.prepared_dir / "labels.json", labels)
    first = run_stages(layout, "rehearsal")["rehearsal"]
    return layout, first


def test_the_stage_writes_the_bases_answers_to_every_rehearsal_prompt(project):
    layout, first = project
    rows = read_jsonl(layout.rehearsal_answers)
    tokenizer = load_tokenizer(layout.base_model_dir)
    params = load_params(layout.params_file)
    assert len(rows) == len(REHEARSAL_PROMPTS) == first["items"]
    # eos closes every answer the base ended itself; one cut off at max_new_tokens has none.
    ended = [r["completion"].endswith(tokenizer.eos_token) for r in rows]
    assert ended.count(False) == first["truncated_answers"]
    for row, closed in zip(rows, ended):
        tokens = len(tokenizer(row["completion"], add_special_tokens=False)["input_ids"])
        assert tokens <= 9 and (closed or tokens >= 8)
    # A plain user turn: the task's system prompt is not there, the rehearsal prompt is.
    assert all(params.prepare.system_prompt not in r["prompt"] for r in rows)
    assert [p in r["prompt"] for p, r in zip(REHEARSAL_PROMPTS, rows)] == [True] * len(rows)
    summary = read_json(layout.rehearsal_summary)
    assert summary == first and summary["cached"] is False and summary["seconds"] > 0
    assert 0 < summary["answer_tokens"] <= len(rows) * 9  # at most 8 new tokens + eos each


def test_a_rerun_with_the_same_key_generates_nothing_and_a_change_generates_again(project, monkeypatch):
    layout, first = project
    before = read_jsonl(layout.rehearsal_answers)

    def no_generation(*args):
        raise AssertionError("generated although the key is the same")

    with monkeypatch.context() as patched:
        patched.setattr(rehearsal_module, "_generate", no_generation)
        again = run_stages(layout, "rehearsal")["rehearsal"]
    assert again["cached"] is True and again["seconds"] == 0 and again["key"] == first["key"]
    assert read_jsonl(layout.rehearsal_answers) == before
    shorter = run_stages(layout, "rehearsal", overrides=["train.rehearsal.max_new_tokens=2"])["rehearsal"]
    assert shorter["cached"] is False and shorter["key"] != first["key"]
    assert shorter["max_new_tokens"] == 2
    with monkeypatch.context() as patched:
        patched.setattr(rehearsal_module, "REHEARSAL_PROMPTS", REHEARSAL_PROMPTS[:5])
        fewer = run_stages(layout, "rehearsal")["rehearsal"]
    assert fewer["cached"] is False and fewer["items"] == 5 and fewer["key"] != first["key"]
    run_stages(layout, "rehearsal")  # back to the full pool (from the cache) for the tests below


def test_the_key_follows_the_bases_content(project, tmp_path):
    layout, first = project
    params = load_params(layout.params_file).train.rehearsal
    copy = tmp_path / "base"
    shutil.copytree(layout.base_model_dir, copy)
    (copy / INFO_FILE).unlink()  # computed from the files: the same as the recorded content hash
    assert rehearsal_key(copy, params) == first["key"]
    config = copy / "tokenizer_config.json"
    config.write_text(config.read_text() + "\n")
    assert rehearsal_key(copy, params) != first["key"]


def test_rehearsal_rows_reach_the_adapter_and_the_full_fine_tune_at_the_share(project):
    layout, _ = project
    params = load_params(layout.params_file, SHARE)
    task = read_jsonl(layout.prepared_dir / "train.jsonl")
    splits, added = training_splits(params, layout, params.train.rehearsal.share)
    rehearsal_prompts = {r["prompt"] for r in read_jsonl(layout.rehearsal_answers)}
    drawn = [r for r in splits["train"] if r["prompt"] in rehearsal_prompts]
    assert len(drawn) == added["rehearsal_rows"] == rehearsal_count(len(task), 0.3) > 0
    assert len(drawn) / len(splits["train"]) == pytest.approx(0.3, abs=0.02)
    assert splits["val"] == read_jsonl(layout.prepared_dir / "val.jsonl")  # val loss judges the task only
    results = run_stages(layout, "search", "train", "baseline", overrides=SHARE)
    for record in (results["train"], read_baseline(layout.baseline_metrics).to_json()):
        assert record["rehearsal_share"] == 0.3 and record["rehearsal_rows"] == len(drawn)
        assert record["rehearsal_tokens"] == added["rehearsal_tokens"] > 0
    off = run_stages(layout, "train")["train"]
    assert off["rehearsal_rows"] == 0 and off["rehearsal_tokens"] == 0


def test_a_share_without_the_rehearsal_stage_is_a_clear_error(project, tmp_path):
    layout, _ = project
    moved = tmp_path / "answers.jsonl"
    shutil.move(layout.rehearsal_answers, moved)
    try:
        with pytest.raises(ConfigError, match="run the rehearsal stage first"):
            training_splits(load_params(layout.params_file, SHARE), layout, 0.3)
        assert training_splits(load_params(layout.params_file), layout, 0.0)[1]["rehearsal_rows"] == 0  # share 0: fine
    finally:
        shutil.move(moved, layout.rehearsal_answers)
