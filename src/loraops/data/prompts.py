"""How a request is put to the model: the chat-template rendering that training, evaluation and serving share.

A prepared row keeps the raw ``text``/``label`` beside the rendered ``prompt`` (everything up to the
assistant's turn) and ``completion`` (the answer plus end-of-turn token). The adapter carries its prompt
spec (:func:`prompt_spec`, in ``loraops_prompt.json``) so that serving renders a request exactly as
training did.
"""

from __future__ import annotations

from typing import Any

from loraops.config import PrepareParams

PROMPT_FILE = "loraops_prompt.json"


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


def prompt_spec(labels: list[str], params: PrepareParams) -> dict[str, Any]:
    """What serving needs to render a request exactly as training did."""
    return {"labels": labels, "prepare": params.model_dump()}
