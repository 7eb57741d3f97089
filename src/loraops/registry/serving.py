"""Serving an adapter through MLflow: a pyfunc that loads the adapter onto the local base model.

``mlflow.transformers`` would save full weights and, with PEFT on a local base, reload LoRA-targeted
base weights reinitialised; so the registered model holds only the adapter folder and references the
base model directory through ``model_config``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc

from loraops.config import PrepareParams
from loraops.core import read_json
from loraops.data import PROMPT_FILE, render_row
from loraops.evaluation import generate_answers, normalise_answer
from loraops.modeling import load_for_inference


def request_texts(model_input: Any) -> list[str]:
    """Accept a DataFrame or dict with a ``text`` column, a list of strings, or one string."""
    if isinstance(model_input, str):
        return [model_input]
    if hasattr(model_input, "columns") or isinstance(model_input, dict):
        if "text" not in model_input:
            raise ValueError("input needs a 'text' column")
        column = model_input["text"]
        if isinstance(column, str):
            return [column]
        values = list(column)
        # MLflow's schema check turns {"text": [a, b]} into one row whose cell is the list [a, b].
        if len(values) == 1 and not isinstance(values[0], str) and hasattr(values[0], "__iter__"):
            values = list(values[0])
        return [str(t) for t in values]
    return [str(t) for t in model_input]


def base_model_dir(context: Any) -> Path:
    """The local base model the adapter loads onto: the ``base_model`` file of the logged model (versions
    registered before it carry the path in ``model_config``)."""
    if "base_model" in (context.artifacts or {}):
        return Path(read_json(Path(context.artifacts["base_model"]))["base_model_dir"])
    return Path(context.model_config["base_model_dir"])


class AdapterModel(mlflow.pyfunc.PythonModel):
    """Input: a DataFrame with a ``text`` column (or a list of strings). Output: predicted labels."""

    def load_context(self, context: Any) -> None:
        adapter = Path(context.artifacts["adapter"])
        self.model, self.tokenizer = load_for_inference(base_model_dir(context), adapter)
        spec = read_json(adapter / PROMPT_FILE)
        self.labels = spec["labels"]
        self.prepare = PrepareParams(**spec["prepare"])
        self.batch_size = int((context.model_config or {}).get("batch_size", 16))

    def predict(self, context, model_input, params=None):  # no hints: MLflow would enforce a schema from them
        texts = request_texts(model_input)
        rows = [render_row({"text": t, "label": ""}, self.labels, self.tokenizer, self.prepare) for t in texts]
        longest = max(len(self.tokenizer(label, add_special_tokens=False)["input_ids"]) for label in self.labels)
        answers = generate_answers(self.model, self.tokenizer, [r["prompt"] for r in rows], self.batch_size,
                                   max_new_tokens=longest + 2)
        return [normalise_answer(a) for a in answers]
