"""Data: reading a source into raw records (the ``ingest`` stage), the built-in demo set, the prompt format that
training, evaluation and serving share, and reading the prepared splits."""

from loraops.data.ingest import SPLITS, ingest, ingest_stage, source_file
from loraops.data.prompts import PROMPT_FILE, prompt_spec, render_row, user_message
from loraops.data.splits import load_labels, load_splits

__all__ = ["PROMPT_FILE", "SPLITS", "ingest", "ingest_stage", "load_labels", "load_splits", "prompt_spec", "render_row",
           "source_file", "user_message"]
