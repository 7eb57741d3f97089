"""Runs loraops.training.train in its own process for the crash tests: ``python -m tests.helpers.train_script
SPEC OUT``.

SPEC (JSON) holds base_dir, splits, params, seed, work_dir and optionally ``hang_at``: after that step the
process writes ``SPEC.hanging`` and sleeps, so the test can SIGKILL it at a known point between checkpoints;
optionally ``lora`` (LoraParams fields). Under ``torchrun -m tests.helpers.train_script`` rank 0 writes OUT,
with the size of the process group the Trainer trained in.
"""

import json
import sys
import time
from pathlib import Path

from transformers import TrainerCallback

from loraops.config import LoraParams, TrainParams
from loraops.core.distributed import is_main
from loraops.training import train


class StepRecorder(TrainerCallback):
    def __init__(self, hang_at: int | None, flag: Path):
        self.steps: list[int] = []
        self.hang_at, self.flag = hang_at, flag

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)
        if state.global_step == self.hang_at:
            self.flag.write_text("hanging")
            time.sleep(600)


def main() -> None:
    spec_path, out = Path(sys.argv[1]), Path(sys.argv[2])
    spec = json.loads(spec_path.read_text())
    recorder = StepRecorder(spec.get("hang_at"), spec_path.with_suffix(".hanging"))
    lora = LoraParams(**spec.get("lora", {"r": 4, "alpha": 8}))
    _, record, curves = train(Path(spec["base_dir"]), spec["splits"], TrainParams(**spec["params"]), spec["seed"],
                              384, Path(spec["work_dir"]), lora, callbacks=[recorder])
    import torch.distributed as dist

    group = dist.get_world_size() if dist.is_initialized() else 1
    if is_main():
        out.write_text(json.dumps({"metrics": record.to_json(), "curve": curves.train, "steps_run": recorder.steps,
                                   "process_group_size": group}))


if __name__ == "__main__":
    main()
