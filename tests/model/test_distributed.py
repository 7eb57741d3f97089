"""One training job on two processes (DDP over gloo, ``torchrun``) against the same job on one."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import loraops
from loraops.config import LoraParams, PrepareParams, TrainParams
from loraops.core import ConfigError
from loraops.data.demo import generate_demo_dataset
from loraops.modeling import load_tokenizer
from loraops.prepare import prepare
from loraops.training import train
from loraops.training.checkpoints import MANIFEST
from loraops.training.trainer import per_device_batch

REPO = Path(__file__).resolve().parents[2]
# Global batch 4: 2 examples per process under two. A checkpoint at step 2 so that each process writes its
# RNG state into it and rank 0 alone seals it. No dropout: each process draws its own masks, one process
# draws others, and the comparison would measure that instead of the batch.
PARAMS = {"method": "lora", "max_steps": 4, "batch_size": 4, "learning_rate": 1e-2, "warmup_steps": 0,
          "logging_steps": 1, "eval_steps": None, "early_stopping_patience": None, "save_steps": 2,
          "progress_bar": False}
LORA = {"r": 4, "alpha": 8, "dropout": 0.0}
SEED = 7
# Per-step losses agree to float rounding (measured: 5e-7; the two-process loss takes the full forward pass
# through the DDP wrapper, one process the answer positions only). Twice the global batch (each process
# taking all 4) moved them by 0.02 to 0.04.
LOSS_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def splits(tiny_base):
    rows = generate_demo_dataset(seed=3, train_per_intent=4, test_per_intent=1)
    rendered, _, _ = prepare(rows, load_tokenizer(tiny_base), PrepareParams(max_length=384), seed=3)
    return rendered


def test_two_processes_optimise_what_one_does_and_only_rank_0_writes(tiny_base, splits, tmp_path):
    spec_path, out, work = tmp_path / "spec.json", tmp_path / "out.json", tmp_path / "work2"
    spec_path.write_text(json.dumps({"base_dir": str(tiny_base), "splits": splits, "params": PARAMS, "seed": SEED,
                                     "work_dir": str(work), "lora": LORA}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(Path(loraops.__file__).parents[1]), str(REPO), os.environ.get("PYTHONPATH", "")])}
    started = time.monotonic()
    # --standalone: a rendezvous on a free local port, so parallel test runs do not collide on 29500.
    # Its own session: a hung run is killed with its workers, which would outlive torchrun otherwise.
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             "-m", "tests.helpers.train_script", str(spec_path), str(out)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
    assert proc.returncode == 0, stderr[-3000:]
    two = json.loads(out.read_text())
    assert two["process_group_size"] == 2 and two["metrics"]["processes"] == 2, two  # really two processes

    _, record, curves = train(tiny_base, splits, TrainParams(**PARAMS), SEED, 384, tmp_path / "work1",
                              LoraParams(**LORA))
    assert record.processes == 1
    one = [row["train_loss"] for row in curves.train]
    assert [row["step"] for row in two["curve"]] == [row["step"] for row in curves.train] == [1, 2, 3, 4]
    assert two["curve"][-1]["train_loss"] < two["curve"][0]["train_loss"]  # it trained
    assert [row["train_loss"] for row in two["curve"]] == pytest.approx(one, abs=LOSS_TOLERANCE)

    # The checkpoint holds both processes' RNG states, and rank 0's manifest lists them.
    checkpoint = next(work.glob("run-*/checkpoint-2"))
    listed = json.loads((checkpoint / MANIFEST).read_text())["files"]
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= set(listed), sorted(listed)
    print(f"two-process run {time.monotonic() - started:.1f}s")  # noqa: T201 (the timing for the README)


def test_a_batch_that_does_not_divide_among_processes_is_refused():
    assert per_device_batch(8, 2) == 4
    with pytest.raises(ConfigError, match="train.batch_size=6 does not divide among 4 processes"):
        per_device_batch(6, 4)


def test_sharded_engines_and_single_process_stages_are_refused_under_a_launcher(tiny_project, monkeypatch):
    from loraops.config import load_params
    from loraops.core import Layout
    from loraops.pipeline import run_stage
    from loraops.training import training_arguments

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch` with an FSDP config sets
    with pytest.raises(ConfigError, match="FSDP is not supported"):
        training_arguments(TrainParams(), 0, tiny_project / "work", evaluate=False, save=False)
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it; refused before any stage work
    layout = Layout(tiny_project)
    with pytest.raises(ConfigError, match="stage evaluate runs in one process"):
        run_stage("evaluate", load_params(tiny_project / "params.yaml", []), layout)
