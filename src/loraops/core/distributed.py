"""Which process of a multi-process launch this is (``torchrun``, ``accelerate launch``: DDP or FSDP).

The launchers set ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in every process before Python starts, so these answers hold
before the process group exists (the Trainer creates it with its ``TrainingArguments``) and in code that never
touches torch (the CLI's lock, a stage's outputs). One process is the default: plain ``python`` sets neither.
Rank 0 is the only one that writes outputs; :func:`barrier` and :func:`from_main` order the others around
its writes once the process group is up.
"""

from __future__ import annotations

import os
from typing import TypeVar

T = TypeVar("T")


def world_size() -> int:
    """How many processes train together (1 outside a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's global rank (0 outside a launcher)."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's rank on its machine: the GPU it trains on."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def sharded_engine() -> str | None:
    """"FSDP" or "DeepSpeed" when ``accelerate launch`` was configured for one (its environment says so),
    else None. They shard the weights, so rank 0 alone does not hold the model it would save."""
    for name, key in (("FSDP", "ACCELERATE_USE_FSDP"), ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED")):
        if os.environ.get(key, "").lower() in ("1", "true", "yes"):
            return name
    return None


def is_main() -> bool:
    """True in the one process that writes outputs."""
    return rank() == 0


def _group_up() -> bool:
    if world_size() == 1:
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    """Wait until every process got here (nothing to wait for in one process)."""
    if _group_up():
        import torch.distributed as dist

        dist.barrier()


def from_main(value: T) -> T:
    """Rank 0's ``value`` in every process (picklable values), so all of them act on one decision."""
    if not _group_up():
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
