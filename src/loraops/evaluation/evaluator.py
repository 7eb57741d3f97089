"""One evaluator for every model: the base model (``adapter_dir=None``), an adapter, a full fine-tune.

All of them go through the same prompts, batching, greedy decoding and answer normalisation, so their
scores differ only because the models differ. Scoring is :mod:`loraops.evaluation.metrics`; the stage that
compares models is :mod:`loraops.evaluation.compare`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from loraops.config import EvalParams
from loraops.core import ModelError
from loraops.evaluation.metrics import score_answers
from loraops.evaluation.retention import retention_prompts, score_retention
from loraops.modeling import device, load_base, load_for_inference, load_tokenizer, recorded_trust

def generate_answers(model: Any, tokenizer: Any, prompts: list[str], batch_size: int,
                     max_new_tokens: int) -> list[str]:
    """Greedy answers for ``prompts`` in batches (left padding so generation continues each prompt)."""
    import torch
    from tqdm.auto import tqdm

    # Prompts of similar length share a batch (less padding to compute); answers go back in input order.
    lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    answers: list[str] = [""] * len(prompts)
    for start in tqdm(range(0, len(prompts), batch_size), desc="generate", unit="batch"):
        chosen = order[start:start + batch_size]
        batch = tokenizer([prompts[i] for i in chosen], return_tensors="pt", padding=True,
                          add_special_tokens=False).to(device())
        with torch.inference_mode():
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        new_tokens = out[:, batch["input_ids"].shape[1]:]
        for i, text in zip(chosen, tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
            answers[i] = text
    return answers


def answer_nll(model: Any, tokenizer: Any, prompts: list[str], answers: list[str],
               batch_size: int) -> list[tuple[float, int]]:
    """Per item (summed NLL in nats, token count) of ``answers`` given ``prompts``, by teacher forcing.

    The prompt is context only: the loss covers the answer tokens, as in training.
    """
    import torch

    encoded = []
    for prompt, answer in zip(prompts, answers):
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        a = tokenizer(answer, add_special_tokens=False)["input_ids"]
        if not a:
            raise ValueError(f"reference answer {answer!r} has no tokens")
        encoded.append((p + a, len(p)))
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    out: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
    for start in range(0, len(order), batch_size):
        chosen = order[start:start + batch_size]
        width = max(len(encoded[i][0]) for i in chosen)
        ids = torch.full((len(chosen), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(chosen), width), dtype=torch.long)
        targets = torch.full((len(chosen), width), -100, dtype=torch.long)
        for row, i in enumerate(chosen):  # right padding: positions of real tokens do not move
            seq, n_prompt = encoded[i]
            ids[row, :len(seq)] = torch.tensor(seq)
            mask[row, :len(seq)] = 1
            targets[row, n_prompt:len(seq)] = torch.tensor(seq[n_prompt:])
        with torch.inference_mode():
            logits = model(input_ids=ids.to(device()), attention_mask=mask.to(device())).logits.float()
        shifted, labels = logits[:, :-1], targets[:, 1:].to(logits.device)
        loss = torch.nn.functional.cross_entropy(shifted.reshape(-1, shifted.shape[-1]), labels.reshape(-1),
                                                 ignore_index=-100, reduction="none").view(labels.shape)
        counts = (labels != -100).sum(dim=1)
        for row, i in enumerate(chosen):
            out[i] = (float(loss[row].sum()), int(counts[row]))
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


def run_model(base_dir: Path, rows: list[dict], batch_size: int, root: Path, adapter_dir: Path | None = None,
              model_dir: Path | None = None, params: EvalParams | None = None,
              labels: list[str] | None = None, retention_pool: str = "test") -> dict[str, Any]:
    """Everything the comparison needs from one model: metrics, per-item records, retention answers.
    ``retention_pool``: ``test`` for evaluate and the gate, ``dev`` for the search's trials."""
    params = params or EvalParams()
    if not rows:
        raise ValueError("no test rows to evaluate")
    model, tokenizer = load_model(base_dir, adapter_dir, model_dir)
    longest = max(len(tokenizer(r["completion"], add_special_tokens=False)["input_ids"]) for r in rows)
    started = time.perf_counter()
    raw = generate_answers(model, tokenizer, [r["prompt"] for r in rows], batch_size,
                           max_new_tokens=params.max_new_tokens or longest + 2)
    seconds = time.perf_counter() - started
    nll = None
    if "perplexity" in params.metric_names():
        nll = answer_nll(model, tokenizer, [r["prompt"] for r in rows], [r["completion"] for r in rows], batch_size)
    metrics, items = score_answers(raw, rows, nll, params, root, labels)
    metrics.update({"items": len(rows), "seconds": seconds, "items_per_second": len(rows) / seconds})
    retention_items: list[dict[str, Any]] = []
    if params.retention:
        answers = generate_answers(model, tokenizer, retention_prompts(tokenizer, retention_pool), batch_size,
                                   max_new_tokens=params.retention_max_new_tokens)
        metrics["retention"], retention_items = score_retention(answers, retention_pool)
    return {"metrics": metrics, "items": items, "retention_items": retention_items}


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
