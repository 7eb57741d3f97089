"""One evaluator for every model: the base model (``adapter_dir=None``), an adapter, a full fine-tune.

All of them go through the same batching, greedy decoding (constrained to the label set on label tasks) and
answer normalisation. The trained models get the prepared prompts; on a label task the base model, which
was never taught the labels, is asked at its best instead (the labels listed, worked examples from the
train split): the comparison is with the base model prompted well, not with one that never saw the
label names. Scoring is :mod:`loraops.evaluation.metrics`; the stage that
compares models is :mod:`loraops.evaluation.compare`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from loraops.config import EvalParams, PrepareParams
from loraops.core import ModelError
from loraops.data import choose_shots, render_base_row
from loraops.evaluation.constrained import batch_prefix_fn, row_constraints
from loraops.evaluation.metrics import load_metric, normalise_answer, score_answers
from loraops.evaluation.prefix import SharedPrefix
from loraops.evaluation.retention import retention_prompts, score_retention
from loraops.modeling import device, load_base, load_for_inference, load_tokenizer, recorded_trust
from loraops.training.loss import logits_at


def generate_answers(model: Any, tokenizer: Any, prompts: list[str], batch_size: int,
                     max_new_tokens: int, *, labels: list[str] | list[list[str]] | None = None,
                     share_prefix: bool = True) -> list[str]:
    """Greedy answers for ``prompts`` in batches (left padding so generation continues each prompt).

    With ``labels`` every answer is exactly one of them (``constrained.LabelConstraint``; at least as many
    new tokens as the longest label needs): one label list for every prompt, or one list per prompt (a
    mixed batch of adapters with label sets of their own). ``None`` decodes unconstrained.
    ``share_prefix``: the prompts' common beginning is computed once and reused by every batch
    (:mod:`loraops.evaluation.prefix`; same tokens at the same positions); off where the rows of a batch
    run different weights (per-row adapters), whose prefix caches would differ.
    """
    import torch
    from tqdm.auto import tqdm

    constraints = row_constraints(tokenizer, labels, len(prompts))
    if constraints is not None:
        max_new_tokens = max(max_new_tokens, *(c.longest for c in constraints))
    encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    # Prompts of similar length share a batch (less padding to compute); answers go back in input order.
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    shared = SharedPrefix.of(model, encoded, device()) if share_prefix else None
    answers: list[str] = [""] * len(prompts)
    for start in tqdm(range(0, len(prompts), batch_size), desc="generate", unit="batch"):
        chosen = order[start:start + batch_size]
        if shared is None:
            batch = tokenizer([prompts[i] for i in chosen], return_tensors="pt", padding=True,
                              add_special_tokens=False).to(device())
        else:
            batch = shared.generation_batch([encoded[i] for i in chosen], tokenizer.pad_token_id)
        width = batch["input_ids"].shape[1]
        constrained = {} if constraints is None else {
            "prefix_allowed_tokens_fn": batch_prefix_fn([constraints[i] for i in chosen], width)}
        with torch.inference_mode():
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                 **constrained)
        new_tokens = out[:, width:]
        for i, text in zip(chosen, tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
            answers[i] = text
    return answers


def answer_nll(model: Any, tokenizer: Any, prompts: list[str], answers: list[str],
               batch_size: int, *, share_prefix: bool = True) -> list[tuple[float, int]]:
    """Per item (summed NLL in nats, token count) of ``answers`` given ``prompts``, by teacher forcing.

    The prompt is context only: the loss covers the answer tokens, as in training. ``share_prefix`` as in
    :func:`generate_answers`: the prompts' common beginning is computed once, each batch runs the rest.
    """
    import torch

    encoded = []
    for prompt, answer in zip(prompts, answers):
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        a = tokenizer(answer, add_special_tokens=False)["input_ids"]
        if not a:
            raise ValueError(f"reference answer {answer!r} has no tokens")
        encoded.append((p + a, len(p)))
    shared = SharedPrefix.of(model, [seq[:n] for seq, n in encoded], device()) if share_prefix else None
    skip = len(shared) if shared is not None else 0  # tokens of every row the prefix cache stands for
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    out: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
    for start in range(0, len(order), batch_size):
        chosen = order[start:start + batch_size]
        width = max(len(encoded[i][0]) for i in chosen) - skip
        ids = torch.full((len(chosen), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(chosen), width), dtype=torch.long)
        targets = torch.full((len(chosen), width), -100, dtype=torch.long)
        for row, i in enumerate(chosen):  # right padding: positions of real tokens do not move
            seq, n_prompt = encoded[i]
            ids[row, :len(seq) - skip] = torch.tensor(seq[skip:])
            mask[row, :len(seq) - skip] = 1
            targets[row, n_prompt - skip:len(seq) - skip] = torch.tensor(seq[n_prompt:])
        inputs = ({"input_ids": ids.to(device()), "attention_mask": mask.to(device())} if shared is None
                  else shared.forward_inputs(ids, mask))
        labels = targets[:, 1:].to(device())
        rows, cols = (labels != -100).nonzero(as_tuple=True)
        with torch.inference_mode():
            # Logits at the answer positions only: the prompt's (most of a few-shot prompt) are never needed.
            logits = logits_at(model, inputs, rows, cols).float()
            loss = torch.nn.functional.cross_entropy(logits, labels[rows, cols], reduction="none")
        sums = torch.zeros(len(chosen), dtype=loss.dtype, device=loss.device).index_add_(0, rows, loss)
        counts = torch.zeros(len(chosen), dtype=torch.long, device=loss.device).index_add_(
            0, rows, torch.ones_like(rows))
        for row, i in enumerate(chosen):
            out[i] = (float(sums[row]), int(counts[row]))
    return out


def load_model(base_dir: Path, adapter_dir: Path | None = None, model_dir: Path | None = None) -> tuple[Any, Any]:
    """Base model, base + adapter, or a full fine-tune saved as a plain transformers folder (``model_dir``)."""
    if model_dir is None:
        return load_for_inference(base_dir, adapter_dir)
    if adapter_dir is not None:
        raise ValueError("give adapter_dir or model_dir, not both")
    if not (model_dir / "config.json").is_file():
        raise ModelError(f"{model_dir}: no config.json; run the baseline stage first")
    trust = recorded_trust(base_dir)  # a fine-tune of a base runs that base's code only if the param said so
    model = load_base(model_dir, trust_remote_code=trust)
    model.eval()
    # Same tokenizer as every other model: the full fine-tune's copy when it has one, else the base's.
    tokenizer_dir = model_dir if (model_dir / "tokenizer_config.json").is_file() else base_dir
    return model, load_tokenizer(tokenizer_dir, padding_side="left", trust_remote_code=trust)


def base_prompts(rows: list[dict], labels: list[str], tokenizer: Any, params: EvalParams,
                 prepare: PrepareParams, shots_from: list[dict] | None) -> tuple[list[str], dict[str, Any]]:
    """The base model's prompts at its best (label set listed, ``eval.base_shots`` train examples as chat
    turns, never a test request) and how it was prompted (``base_prompting`` in eval.json)."""
    shots = choose_shots(shots_from or [], labels, params.base_shots, {r["text"] for r in rows})
    prompts = [render_base_row(r, labels, tokenizer, prepare, shots)["prompt"] for r in rows]
    return prompts, {"labels_listed": True, "shots": len(shots), "constrained": params.constrained}


def run_model(base_dir: Path, rows: list[dict], batch_size: int, root: Path, adapter_dir: Path | None = None,
              model_dir: Path | None = None, params: EvalParams | None = None,
              labels: list[str] | None = None, *, shots_from: list[dict] | None = None,
              prepare: PrepareParams | None = None, retention_pool: str = "test",
              unconstrained: bool = True, trained_model: Any = None) -> dict[str, Any]:
    """Everything the comparison needs from one model: metrics, per-item records, retention answers.

    On a label task (``labels`` given) answers are decoded within the label set when ``eval.constrained``
    (``accuracy`` is then the constrained one; with ``unconstrained``, ``accuracy_unconstrained``, from a
    second pass over the same batches, stands beside it), and the base model (no adapter, no model_dir) is
    asked at its best (:func:`base_prompts`, with shots from ``shots_from``, the train split, and
    ``prepare``'s system prompt). ``retention_pool``: ``test`` for evaluate and the gate, ``dev`` for the
    search's trials (which also skip the unconstrained pass: it informs the report, not the choice).
    ``trained_model``: an adapter still in memory on ``base_dir``'s full-precision base (a search trial's, just
    trained), scored as the same adapter loaded from disk would be, without loading the base again; it is put
    in eval mode, and ``adapter_dir`` and ``model_dir`` stay None.
    """
    params = params or EvalParams()
    if not rows:
        raise ValueError("no test rows to evaluate")
    if trained_model is None:
        model, tokenizer = load_model(base_dir, adapter_dir, model_dir)
    elif adapter_dir is not None or model_dir is not None:
        raise ValueError("give trained_model, adapter_dir or model_dir, not several")
    else:
        model, tokenizer = trained_model.eval(), load_tokenizer(base_dir, padding_side="left")
    label_task = params.task == "label" and bool(labels)
    prompts, prompting = [r["prompt"] for r in rows], None
    if label_task and adapter_dir is None and model_dir is None and trained_model is None:
        prompts, prompting = base_prompts(rows, labels, tokenizer, params, prepare or PrepareParams(), shots_from)
    constraint = labels if label_task and params.constrained else None
    longest = max(len(tokenizer(r["completion"], add_special_tokens=False)["input_ids"]) for r in rows)
    max_new_tokens = params.max_new_tokens or longest + 2
    started = time.perf_counter()
    raw = generate_answers(model, tokenizer, prompts, batch_size, max_new_tokens, labels=constraint)
    seconds = time.perf_counter() - started
    nll = None
    if "perplexity" in params.metric_names():
        nll = answer_nll(model, tokenizer, prompts, [r["completion"] for r in rows], batch_size)
    metrics, items = score_answers(raw, rows, nll, params, root, labels)
    metrics.update({"items": len(rows), "seconds": seconds, "items_per_second": len(rows) / seconds})
    if constraint is not None and unconstrained:  # nothing hidden: what the model answers when it may say anything
        free = [normalise_answer(a) for a in generate_answers(model, tokenizer, prompts, batch_size, max_new_tokens)]
        for item, answer in zip(items, free):
            item["unconstrained"] = answer
        metrics["accuracy_unconstrained"] = load_metric("accuracy", root).compute(
            predictions=free, references=[i["label"] for i in items])["accuracy"]
    retention_items: list[dict[str, Any]] = []
    if params.retention:
        answers = generate_answers(model, tokenizer, retention_prompts(tokenizer, retention_pool), batch_size,
                                   max_new_tokens=params.retention_max_new_tokens)
        metrics["retention"], retention_items = score_retention(answers, retention_pool)
    result = {"metrics": metrics, "items": items, "retention_items": retention_items}
    return result if prompting is None else {**result, "prompting": prompting}


def evaluate_model(base_dir: Path, rows: list[dict], batch_size: int, root: Path, adapter_dir: Path | None = None,
                   *, model_dir: Path | None = None, params: EvalParams | None = None,
                   labels: list[str] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score one model on prepared ``rows``; returns (metrics, per-item predictions).

    ``adapter_dir=None`` and ``model_dir=None`` is the base model; ``model_dir`` is a full fine-tune.
    Without ``params`` the defaults apply minus retention (accuracy, macro-F1, perplexity).
    """
    params = params or EvalParams(retention=False)
    result = run_model(base_dir, rows, batch_size, root, adapter_dir, model_dir, params, labels)
    return result["metrics"], result["items"]
