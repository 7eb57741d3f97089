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

import os
import tempfile
from pathlib import Path
from typing import Any

import mlflow.pyfunc

from loraops.config import PrepareParams
from loraops.core import LoraopsError, RegistryError, read_json
from loraops.core.tracking import Tracking, is_missing
from loraops.data import PROMPT_FILE, label_for_answer, render_prompt, render_row
from loraops.evaluation import generate_answers
from loraops.modeling import load_for_inference, verify_base_model
from loraops.registry.composition import TASKS_FILE
from loraops.registry.lineage import MODEL_SHA256_TAG, model_sha256
from loraops.registry.row_routing import row_router


def _column(model_input: Any, name: str) -> list[Any] | None:
    """The values of column ``name`` of a DataFrame or dict input (``None`` when it has none)."""
    if not (hasattr(model_input, "columns") or isinstance(model_input, dict)) or name not in model_input:
        return None
    column = model_input[name]
    if isinstance(column, str) or not hasattr(column, "__iter__"):
        return [column]
    values = list(column)
    # MLflow's schema check turns {"text": [a, b]} into one row whose cell is the list [a, b].
    if len(values) == 1 and not isinstance(values[0], str) and hasattr(values[0], "__iter__"):
        values = list(values[0])
    return values


def request_texts(model_input: Any) -> list[str]:
    """Accept a DataFrame or dict with a ``text`` column, a list of strings, or one string."""
    if isinstance(model_input, str):
        return [model_input]
    if hasattr(model_input, "columns") or isinstance(model_input, dict):
        values = _column(model_input, "text")
        if values is None:
            raise ValueError("input needs a 'text' column")
        return [str(t) for t in values]
    return [str(t) for t in model_input]


def request_tasks(model_input: Any, rows: int) -> list[str | None]:
    """The ``task`` asked of each of ``rows`` rows: the input's optional ``task`` column (one value is every
    row's), ``None`` where a row names none (a missing cell of a DataFrame reads as NaN)."""
    values = _column(model_input, "task")
    if values is None:
        return [None] * rows
    if len(values) == 1:
        values = values * rows
    if len(values) != rows:
        raise ValueError(f"input has {rows} texts but {len(values)} tasks")
    tasks: list[str | None] = []
    for i, value in enumerate(values):
        if value is None or (isinstance(value, float) and value != value):  # None or NaN: not asked
            tasks.append(None)
        elif isinstance(value, str):
            tasks.append(value)
        else:
            raise ValueError(f"row {i}: 'task' must be a string (a source model's name)")
    return tasks


BASE_DIR_ENV = "LORAOPS_BASE_MODEL_DIR"  # at load time: where this machine keeps the base (its hash still checked)


def base_model_reference(context: Any) -> tuple[Path, str | None]:
    """The local base model the adapter loads onto and the content hash it must have. Both come from the
    ``base_model`` file of the logged model (versions registered before it carry both in ``model_config``);
    ``LORAOPS_BASE_MODEL_DIR`` at load time points at another copy of the base (another machine's path), which
    must still have the recorded hash: the hash never comes from the caller. (An environment variable, not a
    load-time ``model_config``: MLflow only accepts overrides of keys logged with the model, and logs those as
    run params, where no machine path belongs.)"""
    if "base_model" in (context.artifacts or {}):
        reference = read_json(Path(context.artifacts["base_model"]))
    else:
        reference = dict(context.model_config or {})
    base_dir = os.environ.get(BASE_DIR_ENV) or reference["base_model_dir"]
    return Path(base_dir), reference.get("base_model_sha256")


class PromptSpec:
    """How one adapter is asked and answers: its ``loraops_prompt.json`` (labels, the template rendered at
    training time, the prepare params of versions registered before the template was stored)."""

    def __init__(self, spec: dict[str, Any]):
        self.labels: list[str] = spec["labels"]
        self.template: str | None = spec.get("template")
        self.prepare = PrepareParams(**spec["prepare"])

    @classmethod
    def read(cls, adapter_dir: Path) -> PromptSpec:
        return cls(read_json(adapter_dir / PROMPT_FILE))

    def prompt(self, text: str, tokenizer: Any) -> str:
        if self.template is not None:
            return render_prompt(self.template, text)
        return render_row({"text": text, "label": ""}, self.labels, tokenizer, self.prepare)["prompt"]

    def answer_tokens(self, tokenizer: Any) -> int:
        """Enough new tokens for the longest label and its end-of-turn."""
        return max(len(tokenizer(label, add_special_tokens=False)["input_ids"]) for label in self.labels) + 2


class TaskError(LoraopsError, ValueError):
    """A request asks a task the adapter does not answer (the message names it and the known ones)."""


class AdapterTasks:
    """The tasks one adapter answers, each with its prompt spec.

    A composition (``loraops compose``: ``compose_tasks.json`` beside its prompt file) answers each source
    model's task, asked by the source model's name, and its first source's when none is named (its prompt
    file is a copy of that source's). Any other adapter answers its own task only; ``own`` names it (the
    registered model, where the caller knows it)."""

    def __init__(self, adapter_dir: Path, own: str | None = None):
        first = read_json(adapter_dir / PROMPT_FILE)
        tasks_file = adapter_dir / TASKS_FILE
        self.composed = tasks_file.is_file()
        if self.composed:
            raw = read_json(tasks_file)
            self.specs = {name: PromptSpec(spec) for name, spec in raw.items()}
            # The file's keys are sorted, not in source order: the first source is the one the prompt file copies.
            self.default_task: str | None = next((n for n, spec in raw.items() if spec == first), next(iter(raw)))
            self.default = self.specs[self.default_task]
        else:
            self.default, self.default_task = PromptSpec(first), own
            self.specs = {own: self.default} if own is not None else {}

    @property
    def names(self) -> list[str]:
        return sorted(self.specs)

    def spec(self, task: str | None, who: str = "this model") -> PromptSpec:
        """The prompt spec of ``task`` (the default task's for ``None``), or a :class:`TaskError` in one line."""
        if task is None:
            return self.default
        found = self.specs.get(task)
        if found is not None:
            return found
        if not self.composed:
            only = f"; it answers its own task {self.default_task!r} only" if self.default_task is not None else ""
            raise TaskError(f"task {task!r}: {who} is not a composition{only} (leave 'task' out)")
        raise TaskError(f"task {task!r} is not one of {who}'s tasks ({', '.join(self.names)})")


class _RowAdapters:
    """The model, with each generated row routed to its own named adapter
    (:func:`loraops.registry.row_routing.row_router`: stacked per-row sums, PEFT's ``adapter_names`` as fallback).

    :func:`loraops.evaluation.generate_answers` batches prompts in its own order; a row is recognised by its
    prompt tokens, so every row keeps its adapter whatever the order (identical prompts for different adapters
    are taken first come, first served, which is the order a stable sort keeps)."""

    def __init__(self, model: Any, tokenizer: Any, prompts: list[str], adapter_names: list[str]):
        from collections import defaultdict, deque

        self.model = model
        self.queues: dict[tuple[int, ...], Any] = defaultdict(deque)
        for ids, name in zip(tokenizer(prompts, add_special_tokens=False)["input_ids"], adapter_names):
            self.queues[tuple(ids)].append(name)

    def generate(self, input_ids: Any, attention_mask: Any, **kwargs: Any) -> Any:
        names = [self.queues[tuple(ids[mask.bool()].tolist())].popleft()
                 for ids, mask in zip(input_ids.cpu(), attention_mask.cpu())]
        return row_router(self.model).generate(names, input_ids=input_ids, attention_mask=attention_mask, **kwargs)


def answer_texts(model: Any, tokenizer: Any, specs: list[PromptSpec], texts: list[str], batch_size: int,
                 adapter_names: list[str] | None = None) -> list[str]:
    """The label answered for each text: row ``i`` is asked as ``specs[i]`` says and, with ``adapter_names``,
    answered by the PEFT adapter of that name (one mixed batch). The one answering path of the registered
    pyfunc and of ``loraops serve``: the same prompts, decoding and answer-to-label mapping. Answers are
    decoded within each row's label set, as the evaluate stage scored them: every answer is one label."""
    if not texts:
        return []
    prompts = [spec.prompt(text, tokenizer) for spec, text in zip(specs, texts)]
    generator = model if adapter_names is None else _RowAdapters(model, tokenizer, prompts, adapter_names)
    answers = generate_answers(generator, tokenizer, prompts, batch_size,
                               max_new_tokens=max(spec.answer_tokens(tokenizer) for spec in set(specs)),
                               labels=[list(spec.labels) for spec in specs] if all(s.labels for s in specs) else None,
                               # per-row adapters: the rows' prompt beginnings have different key/value caches
                               share_prefix=adapter_names is None)
    return [label_for_answer(answer, spec.labels) for answer, spec in zip(answers, specs)]


class AdapterModel(mlflow.pyfunc.PythonModel):
    """Input: a DataFrame with a ``text`` column (or a list of strings) and, for a composition, an optional
    ``task`` column (a source model's name; its first source's task where left out). Output: predicted labels,
    each row asked and answered as its task's prompt spec says."""

    def load_context(self, context: Any) -> None:
        adapter = Path(context.artifacts["adapter"])
        base_dir, base_sha256 = base_model_reference(context)
        verify_base_model(base_dir, base_sha256)
        self.model, self.tokenizer = load_for_inference(base_dir, adapter)
        self.tasks = AdapterTasks(adapter)
        self.labels = self.tasks.default.labels
        self.batch_size = int((context.model_config or {}).get("batch_size", 16))

    def predict(self, context, model_input, params=None):  # no hints: MLflow would enforce a schema from them
        texts = request_texts(model_input)
        specs = [self.tasks.spec(task) for task in request_tasks(model_input, len(texts))]  # all checked first
        return answer_texts(self.model, self.tokenizer, specs, texts, self.batch_size)


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


def download_verified(tracking: Tracking, name: str, ref: str, into: Path | None = None) -> tuple[Any, Path]:
    """(the model version, a local copy of its model folder) for version (or alias) ``ref`` of ``name``, the
    copy's content hash checked against the version's ``model.sha256``; a mismatch is a :class:`RegistryError`.
    The copy goes into ``into`` (an empty folder the caller owns and removes) or a new temporary folder."""
    version = _resolve(tracking, name, ref)
    expected = version.tags.get(MODEL_SHA256_TAG)
    if not expected:
        raise RegistryError(f"{name} version {version.version} records no {MODEL_SHA256_TAG}; its model cannot be "
                            "checked before it runs, so it is not loaded (register it again)")
    folder = into if into is not None else Path(tempfile.mkdtemp(prefix=f"loraops-{name}-{version.version}-"))
    local = Path(mlflow.artifacts.download_artifacts(version.source, dst_path=str(folder), tracking_uri=tracking.uri))
    actual = model_sha256(local)
    if actual != expected:
        raise RegistryError(f"{name} version {version.version}: the model artifacts' sha256 {actual[:16]}... is not "
                            f"the registered {MODEL_SHA256_TAG} {expected[:16]}... (changed in the artifact store?); "
                            "refusing to load it")
    return version, local


def load_verified(tracking: Tracking, name: str, ref: str) -> Any:
    """The pyfunc of version (or alias) ``ref`` of ``name``, loaded from a local copy whose content hash was
    checked against the version's ``model.sha256`` first; a mismatch is a :class:`RegistryError` and no code
    from the artifact runs."""
    _, local = download_verified(tracking, name, ref)
    return mlflow.pyfunc.load_model(str(local))


def accepts_task(model: Any) -> bool:
    """Whether a loaded pyfunc's signature has the ``task`` column: MLflow drops input columns its signature
    lacks (with a warning), so a composition registered before tasks could be asked would answer every row
    as its first source's task."""
    schema = model.metadata.get_input_schema()
    return schema is not None and "task" in schema.input_names()


def predict_verified(tracking: Tracking, name: str, ref: str, texts: list[str], task: str | None = None) -> list[str]:
    """The labels version (or alias) ``ref`` of ``name`` answers for ``texts``, through its registered pyfunc
    (loaded as :func:`load_verified` loads it), each asked as ``task``: a source model's name for a
    composition, or ``name`` itself for any other model. A task the model does not answer is a
    :class:`TaskError` in one line, before the model loads."""
    version, local = download_verified(tracking, name, ref)
    tasks = AdapterTasks(adapter_dir(local), own=name)
    if task is not None:
        tasks.spec(task, who=name)
    model = mlflow.pyfunc.load_model(str(local))
    if task is None or not tasks.composed:
        return list(model.predict({"text": texts}))
    if not accepts_task(model):
        raise TaskError(f"{name} version {version.version} was registered before a composition could be asked per "
                        "task (its signature has no 'task' column); compose it again to ask by task")
    return list(model.predict({"text": texts, "task": [task] * len(texts)}))


def adapter_dir(local: Path) -> Path:
    """The adapter folder inside a downloaded loraops model (the one holding its prompt file)."""
    found = sorted(local.rglob(PROMPT_FILE))
    if not found:
        raise RegistryError(f"{local}: the model holds no {PROMPT_FILE}; not a loraops adapter")
    return found[0].parent
