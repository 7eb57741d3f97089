"""Crash safety of training on the tiny model: SIGKILL midway, torn checkpoints, fingerprinted runs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loraops.training.checkpoints import MANIFEST, problem_with
from loraops.config import LoraParams, PrepareParams, TrainParams
from loraops.data.demo import generate_demo_dataset
from loraops.modeling import load_tokenizer
from loraops.prepare import prepare
from loraops.training import train

REPO = Path(__file__).resolve().parents[2]
# dropout on and eval every 3 steps, so RNG, optimizer, scheduler and early-stopping state all must resume.
PARAMS = {"method": "lora", "max_steps": 10, "batch_size": 4, "learning_rate": 1e-2, "warmup_steps": 2,
          "logging_steps": 1, "eval_steps": 3, "save_steps": 4, "progress_bar": False}
# The resumed run must end where a clean one does; on CPU it matches to float rounding.
LOSS_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def splits(tiny_base):
    rows = generate_demo_dataset(seed=3, train_per_intent=5, test_per_intent=2)
    rendered, _, _ = prepare(rows, load_tokenizer(tiny_base), PrepareParams(max_length=384), seed=3)
    return rendered


def spawn(spec: dict, tmp: Path, name: str) -> tuple[subprocess.Popen, Path, Path]:
    spec_path, out = tmp / f"{name}.json", tmp / f"{name}.out.json"
    spec_path.write_text(json.dumps(spec))
    proc = subprocess.Popen([sys.executable, "-m", "tests.helpers.train_script", str(spec_path), str(out)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc, spec_path, out


def test_sigkill_midway_then_rerun_resumes_and_ends_where_a_clean_run_does(tiny_base, splits, tmp_path):
    work = tmp_path / "work"
    spec = {"base_dir": str(tiny_base), "splits": splits, "params": PARAMS, "seed": 11, "work_dir": str(work)}
    proc, spec_path, _ = spawn({**spec, "hang_at": 6}, tmp_path, "killed")
    flag = spec_path.with_suffix(".hanging")
    deadline = time.monotonic() + 120
    while not flag.exists():
        assert proc.poll() is None, f"training exited early: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "training never reached step 6"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # no chance to clean up, like an OOM kill or a lost machine
    proc.wait()
    (run_dir,) = work.glob("run-*")
    assert (run_dir / "checkpoint-4" / MANIFEST).is_file() and not (run_dir / "checkpoint-8").exists()

    proc, _, out = spawn(spec, tmp_path, "resumed")  # the same command again, no flag
    assert proc.wait(timeout=180) == 0, proc.stderr.read()[-3000:]
    resumed = json.loads(out.read_text())
    assert resumed["metrics"]["resumed_from_step"] == 4
    assert resumed["steps_run"] == [5, 6, 7, 8, 9, 10]  # finished steps are not redone
    assert [r["step"] for r in resumed["curve"]] == list(range(1, 11))  # curve restored from the checkpoint

    _, clean, curves = train(tiny_base, splits, TrainParams(**PARAMS), 11, 384, tmp_path / "clean",
                             LoraParams(r=4, alpha=8))
    assert clean.resumed_from_step == 0
    assert abs(resumed["metrics"]["val_loss"] - clean.val_loss) < LOSS_TOLERANCE
    for got, want in zip(resumed["curve"], curves.train):
        assert abs(got["train_loss"] - want["train_loss"]) < LOSS_TOLERANCE, (got, want)


def test_torn_checkpoint_is_skipped_with_a_warning_and_the_previous_one_used(tiny_base, splits, tmp_path):
    params = TrainParams(**{**PARAMS, "max_steps": 8, "eval_steps": None, "early_stopping_patience": None})
    lora = LoraParams(r=4, alpha=8)
    _, first, _ = train(tiny_base, splits, params, 2, 384, tmp_path, lora)
    (run_dir,) = tmp_path.glob("run-*")
    assert problem_with(run_dir / "checkpoint-4") is None and problem_with(run_dir / "checkpoint-8") is None
    weights = run_dir / "checkpoint-8" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # torn write
    with pytest.warns(UserWarning, match=r"checkpoint-8: skipping incomplete checkpoint: .*truncated"):
        _, again, _ = train(tiny_base, splits, params, 2, 384, tmp_path, lora)
    assert again.resumed_from_step == 4 and again.steps == 8
    assert abs(again.val_loss - first.val_loss) < LOSS_TOLERANCE


def test_each_kind_of_damage_is_detected(tiny_base, splits, tmp_path):
    import shutil

    params = TrainParams(**{**PARAMS, "max_steps": 2, "save_steps": 2, "eval_steps": None,
                            "early_stopping_patience": None})
    train(tiny_base, splits, params, 2, 384, tmp_path / "work", LoraParams(r=2, alpha=4))
    intact = next(tmp_path.glob("work/run-*/checkpoint-2"))
    assert problem_with(intact) is None
    for damage, expected in [("flip_byte", "sha256"), ("no_manifest", "no manifest"), ("missing_file", "missing")]:
        checkpoint = shutil.copytree(intact, tmp_path / damage / "checkpoint-2")
        target = checkpoint / "optimizer.pt"
        if damage == "flip_byte":
            data = bytearray(target.read_bytes())
            data[len(data) // 2] ^= 0xFF
            target.write_bytes(bytes(data))
        elif damage == "no_manifest":
            (checkpoint / MANIFEST).unlink()
        else:
            target.unlink()
        assert expected in (problem_with(checkpoint) or ""), damage


def test_changed_input_never_resumes_a_stale_run(tiny_base, splits, tmp_path):
    params = TrainParams(**{**PARAMS, "max_steps": 2, "save_steps": 2, "eval_steps": None,
                            "early_stopping_patience": None})
    train(tiny_base, splits, params, 2, 384, tmp_path, LoraParams(r=2, alpha=4))
    old = {p.name for p in tmp_path.glob("run-*")}
    changed = params.model_copy(update={"learning_rate": 5e-3})
    _, record, _ = train(tiny_base, splits, changed, 2, 384, tmp_path, LoraParams(r=2, alpha=4))
    assert record.resumed_from_step == 0 and record.steps == 2
    assert {p.name for p in tmp_path.glob("run-*")}.isdisjoint(old)  # the stale run was removed
