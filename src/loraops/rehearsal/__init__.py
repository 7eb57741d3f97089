"""Rehearsal against forgetting: the base model answers the built-in rehearsal prompts once (greedy, no task
system prompt) and the ``train`` and ``baseline`` stages mix those pairs into training at
``train.rehearsal.share`` (the mixing rule: :func:`loraops.training.mix_rehearsal`)."""

from loraops.rehearsal.stage import RehearsalSummary, rehearsal_key, rehearsal_stage

__all__ = ["RehearsalSummary", "rehearsal_key", "rehearsal_stage"]
