"""How a request is put to the model: the chat-template rendering that training, evaluation and serving share.

A prepared row keeps the raw ``text``/``label`` beside the rendered ``prompt`` (everything up to the
assistant's turn) and ``completion`` (the answer plus end-of-turn token). The adapter carries its prompt
spec (:func:`prompt_spec`, in ``loraops_prompt.json``) so that serving renders a request exactly as
training did.
"""

from __future__ import annotations

from typing import Any

from loraops.config import PrepareParams
from loraops.core import ModelError

PROMPT_FILE = "loraops_prompt.json"
# Where the request goes in a rendered template; replaced in the template only, never searched in the text.
TEXT_SLOT = "<<loraops:request-text>>"


def user_message(text: str, labels: list[str], params: PrepareParams) -> str:
    lines = ["Classify the intent of this customer request."]
    if params.list_labels_in_prompt:
        lines.append("Intents: " + ", ".join(labels))
    lines += [f"Request: {text}", "Answer with the intent name only."]
    return "\n".join(lines)


def render_row(row: dict, labels: list[str], tokenizer: Any, params: PrepareParams) -> dict[str, Any]:
    messages = [{"role": "system", "content": params.system_prompt},
                {"role": "user", "content": user_message(row["text"], labels, params)}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return {"text": row["text"], "label": row["label"], "prompt": prompt,
            "completion": f"{row['label']}{tokenizer.eos_token}"}


def choose_shots(train_rows: list[dict], labels: list[str], count: int,
                 exclude_texts: set[str] = frozenset()) -> list[dict]:
    """``count`` worked examples for a few-shot prompt: one per label in turn (labels in order, the first
    train row of each), so with at least ``count`` labels no label repeats; rows whose text is in
    ``exclude_texts`` (the test requests) are never shots. Deterministic: the same train split gives the
    same shots, which the base model's evaluation cache relies on."""
    pools = {label: [r for r in train_rows if r["label"] == label and r["text"] not in exclude_texts]
             for label in labels}
    shots: list[dict] = []
    depth = 0
    while len(shots) < count and any(len(pool) > depth for pool in pools.values()):
        shots += [pool[depth] for pool in pools.values() if len(pool) > depth][:count - len(shots)]
        depth += 1
    return shots


def render_base_row(row: dict, labels: list[str], tokenizer: Any, params: PrepareParams,
                    shots: list[dict]) -> dict[str, Any]:
    """The base model's request at its best: the label set listed once (system message), ``shots`` as
    earlier chat turns (user: request, assistant: label, exactly as a completion reads), then the request.
    Same keys as :func:`render_row`, so the evaluator scores it the same way."""
    plain = params.model_copy(update={"list_labels_in_prompt": False})
    messages = [{"role": "system", "content": f"{params.system_prompt}\nIntents: {', '.join(labels)}"}]
    for shot in shots:
        messages += [{"role": "user", "content": user_message(shot["text"], labels, plain)},
                     {"role": "assistant", "content": shot["label"]}]
    messages.append({"role": "user", "content": user_message(row["text"], labels, plain)})
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return {"text": row["text"], "label": row["label"], "prompt": prompt,
            "completion": f"{row['label']}{tokenizer.eos_token}"}


def prompt_template(labels: list[str], tokenizer: Any, params: PrepareParams, rows: list[dict]) -> str | None:
    """The prompt as rendered at training time, with :data:`TEXT_SLOT` where the request goes: serving fills
    it in instead of rendering again, so neither a later code change nor another chat template changes what
    the model is asked. None when the chat template does not insert a request verbatim (checked on ``rows``,
    rendered the training way); serving then renders with the code and the base's template."""
    template = render_row({"text": TEXT_SLOT, "label": ""}, labels, tokenizer, params)["prompt"]
    if template.count(TEXT_SLOT) != 1:
        return None
    if any(render_prompt(template, row["text"]) != row["prompt"] for row in rows):
        return None
    return template


def render_prompt(template: str, text: str) -> str:
    """A request in a stored template (:func:`prompt_template`)."""
    if template.count(TEXT_SLOT) != 1:
        raise ModelError(f"{PROMPT_FILE}: the stored prompt template has {template.count(TEXT_SLOT)} request slots, "
                         "not 1")
    before, _, after = template.partition(TEXT_SLOT)
    return before + text + after


def prompt_spec(labels: list[str], params: PrepareParams, template: str | None = None) -> dict[str, Any]:
    """What serving needs to render a request exactly as training did: the labels, the prepare params and
    the rendered template (:func:`prompt_template`)."""
    return {"labels": labels, "prepare": params.model_dump(), "template": template}
