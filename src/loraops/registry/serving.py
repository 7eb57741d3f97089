"""Serving an adapter through MLflow: a pyfunc that loads the adapter onto the local base model.

``mlflow.transformers`` would save full weights and, with PEFT on a local base, reload LoRA-targeted
base weights reinitialised; so the registered model holds only the adapter folder and references the
base model directory through ``model_config``. The version is self-contained all the same:

- the base it needs is named by content (``base_model_sha256`` in the model's ``base_model.json``) and checked at load
  (:func:`loraops.modeling.verify_base_model`): another base is a clear error, never a silently wrong model;
- the prompt is the one rendered at training time (``loraops_prompt.json`` holds the template), so a later
  change of the code or of the base's chat template cannot change what the model is asked;
- the answer is decoded within the label set (the evaluator's constraint) and mapped back to the original
  label (the model is scored on normalised answers);
- :func:`load_verified` checks the model folder against the hash recorded on the version before MLflow runs
  the model's code ("model from code": whoever can write the artifact store could otherwise run code here).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import mlflow.pyfunc

from loraops.config import PrepareParams
from loraops.core import RegistryError, read_json
from loraops.core.tracking import Tracking, is_missing
from loraops.data import PROMPT_FILE, label_for_answer, render_prompt, render_row
from loraops.evaluation import generate_answers
from loraops.modeling import load_for_inference, verify_base_model
from loraops.registry.lineage import MODEL_SHA256_TAG, model_sha256


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


def base_model_reference(context: Any) -> tuple[Path, str | None]:
    """The local base model the adapter loads onto and the content hash it must have. Both come from the
    ``base_model`` file of the logged model (versions registered before it carry both in ``model_config``);
    ``model_config={"base_model_dir": ...}`` at load time points at another copy of the base (another
    machine's path), which must still have the recorded hash: the hash is never taken from the caller."""
    config = dict(context.model_config or {})
    if "base_model" in (context.artifacts or {}):
        reference = read_json(Path(context.artifacts["base_model"]))
    else:
        reference = config
    base_dir = config.get("base_model_dir") or reference["base_model_dir"]
    return Path(base_dir), reference.get("base_model_sha256")


class AdapterModel(mlflow.pyfunc.PythonModel):
    """Input: a DataFrame with a ``text`` column (or a list of strings). Output: predicted labels."""

    def load_context(self, context: Any) -> None:
        adapter = Path(context.artifacts["adapter"])
        base_dir, base_sha256 = base_model_reference(context)
        verify_base_model(base_dir, base_sha256)
        self.model, self.tokenizer = load_for_inference(base_dir, adapter)
        spec = read_json(adapter / PROMPT_FILE)
        self.labels = spec["labels"]
        self.template = spec.get("template")
        self.prepare = PrepareParams(**spec["prepare"])
        self.batch_size = int((context.model_config or {}).get("batch_size", 16))

    def prompts(self, texts: list[str]) -> list[str]:
        if self.template is not None:
            return [render_prompt(self.template, t) for t in texts]
        return [render_row({"text": t, "label": ""}, self.labels, self.tokenizer, self.prepare)["prompt"]
                for t in texts]

    def predict(self, context, model_input, params=None):  # no hints: MLflow would enforce a schema from them
        texts = request_texts(model_input)
        # Decoded within the label set, as the evaluate stage scored it: every answer is one label (the
        # constraint allows as many new tokens as the longest label needs).
        answers = generate_answers(self.model, self.tokenizer, self.prompts(texts), self.batch_size,
                                   max_new_tokens=1, labels=self.labels)
        return [label_for_answer(a, self.labels) for a in answers]


def _resolve(tracking: Tracking, name: str, ref: str) -> Any:
    client, retry = tracking.client, tracking.retry
    try:
        if ref.isdigit():
            return retry(client.get_model_version, name, ref)
        return retry(client.get_model_version_by_alias, name, ref)
    except Exception as exc:
        if is_missing(exc):
            raise RegistryError(f"{name} has no version or alias {ref!r} (see `loraops models`)") from None
        raise


def load_verified(tracking: Tracking, name: str, ref: str) -> Any:
    """The pyfunc of version (or alias) ``ref`` of ``name``, loaded from a local copy whose content hash was
    checked against the version's ``model.sha256`` first; a mismatch is a :class:`RegistryError` and no code
    from the artifact runs."""
    version = _resolve(tracking, name, ref)
    expected = version.tags.get(MODEL_SHA256_TAG)
    if not expected:
        raise RegistryError(f"{name} version {version.version} records no {MODEL_SHA256_TAG}; its model cannot be "
                            "checked before it runs, so it is not loaded (register it again)")
    folder = Path(tempfile.mkdtemp(prefix=f"loraops-{name}-{version.version}-"))
    local = Path(mlflow.artifacts.download_artifacts(version.source, dst_path=str(folder), tracking_uri=tracking.uri))
    actual = model_sha256(local)
    if actual != expected:
        raise RegistryError(f"{name} version {version.version}: the model artifacts' sha256 {actual[:16]}... is not "
                            f"the registered {MODEL_SHA256_TAG} {expected[:16]}... (changed in the artifact store?); "
                            "refusing to load it")
    return mlflow.pyfunc.load_model(str(local))
