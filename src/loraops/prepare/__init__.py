"""The ``prepare`` stage: split the validated raw records (stratified, seeded) and render every row with the
base model's chat template (:mod:`loraops.data.prompts`), with opt-in, counted cleaning."""

from loraops.prepare.splitting import clean_records, prepare, split_records
from loraops.prepare.stage import prepare_stage

__all__ = ["clean_records", "prepare", "prepare_stage", "split_records"]
