"""Data: reading a source into raw records (the ``ingest`` stage), the built-in demo set, the prompt format that
training, evaluation and serving share, and reading the prepared splits."""

from loraops.data.answers import label_collisions, label_for_answer, normalise_answer
from loraops.data.ingest import SPLITS, ingest, ingest_stage, source_file
from loraops.data.prompts import (PROMPT_FILE, choose_shots, prompt_spec, prompt_template, render_base_row,
                                  render_prompt, render_row, user_message)
from loraops.data.splits import load_labels, load_splits

__all__ = ["PROMPT_FILE", "SPLITS", "choose_shots", "ingest", "ingest_stage", "label_collisions", "label_for_answer",
           "load_labels", "load_splits", "normalise_answer", "prompt_spec", "prompt_template", "render_base_row",
           "render_prompt", "render_row", "source_file", "user_message"]
