"""The ``rehearsal`` stage: ``data/rehearsal/answers.jsonl``, the base model's own greedy answers to the built-in
rehearsal prompts, as ``prompt``/``completion`` rows like prepared ones (completion = answer + eos; an answer
cut off at ``train.rehearsal.max_new_tokens`` is kept without eos, so the adapter does not learn to stop there).

Each prompt is a single user turn in the base's chat template without the task's system prompt
(:func:`loraops.evaluation.retention.general_prompt`), so the rows teach the adapter to keep answering general
requests as the base did when no task prompt is present. Answers are generated once per content key (the
base model's content sha256, the prompts, the generation settings, the device) and kept under
``.loraops/rehearsal/``; a re-run with the same key copies them instead of generating.
"""

from __future__ import annotations

import time
from pathlib import Path

from loraops.config import Params, RehearsalParams
from loraops.core import Layout, atomic_dir, read_json, read_jsonl, require, write_json, write_jsonl
from loraops.core.hashing import sha256_json
from loraops.core.records import Record
from loraops.data.general_prompts import REHEARSAL_PROMPTS
from loraops.evaluation import generate_answers, load_model
from loraops.evaluation.retention import general_prompt
from loraops.modeling import INFO_FILE, base_content_sha256, device

# Bumped when the way answers are produced changes (a new key, hence a new generation).
_FORMAT = 2


class RehearsalSummary(Record):
    """``data/rehearsal/summary.json``."""

    items: int
    answer_tokens: int  # tokens of the completions (answers + eos), what training on all of them would add
    seconds: float  # generation time of this run; 0 when the answers came from the cache
    cached: bool
    key: str
    max_new_tokens: int
    empty_answers: int  # answers that are only the eos token (kept: the base said nothing)
    truncated_answers: int  # answers cut off at max_new_tokens (kept, without eos)


def _base_sha(base_dir: Path) -> str:
    info_file = base_dir / INFO_FILE
    recorded = read_json(info_file).get("content_sha256") if info_file.is_file() else None
    return recorded or base_content_sha256(base_dir)


def rehearsal_key(base_dir: Path, settings: RehearsalParams, prompts: tuple[str, ...] = REHEARSAL_PROMPTS) -> str:
    """The content key of the answers: what they depend on (the share only decides how many are used)."""
    return sha256_json({"format": _FORMAT, "base_content_sha256": _base_sha(base_dir), "prompts": list(prompts),
                        "max_new_tokens": settings.max_new_tokens, "batch_size": settings.batch_size,
                        "device": device()})


def _generate(base_dir: Path, settings: RehearsalParams, prompts: tuple[str, ...]) -> tuple[list[dict], dict]:
    model, tokenizer = load_model(base_dir)
    rendered = [general_prompt(tokenizer, prompt) for prompt in prompts]
    started = time.perf_counter()
    answers = [a.strip() for a in generate_answers(model, tokenizer, rendered, settings.batch_size,
                                                   settings.max_new_tokens)]
    seconds = time.perf_counter() - started
    # An answer cut off at max_new_tokens gets no eos: training on it must not teach the adapter to stop there.
    lengths = [len(ids) for ids in tokenizer(answers, add_special_tokens=False)["input_ids"]]
    cut = [n >= settings.max_new_tokens for n in lengths]
    rows = [{"prompt": text, "completion": answer if stopped_short else f"{answer}{tokenizer.eos_token}"}
            for text, answer, stopped_short in zip(rendered, answers, cut)]
    tokens = sum(len(ids) for ids in tokenizer([r["completion"] for r in rows], add_special_tokens=False)["input_ids"])
    return rows, {"answer_tokens": tokens, "seconds": seconds, "empty_answers": sum(not a for a in answers),
                  "truncated_answers": sum(cut)}


def rehearsal_stage(params: Params, layout: Layout) -> dict:
    """``data/rehearsal/answers.jsonl`` and ``summary.json`` (generated, or copied from the cache by key)."""
    require(layout.base_model_dir)
    settings, prompts = params.train.rehearsal, REHEARSAL_PROMPTS
    key = rehearsal_key(layout.base_model_dir, settings, prompts)
    cached_rows, cached_meta = layout.rehearsal_cache / f"{key}.jsonl", layout.rehearsal_cache / f"{key}.json"
    cached = cached_rows.is_file() and cached_meta.is_file()
    if cached:
        rows, meta = read_jsonl(cached_rows), read_json(cached_meta)
    else:
        rows, meta = _generate(layout.base_model_dir, settings, prompts)
        write_jsonl(cached_rows, rows)
        write_json(cached_meta, meta)  # written last: its presence marks the entry complete
    summary = RehearsalSummary(items=len(rows), answer_tokens=meta["answer_tokens"],
                               seconds=0.0 if cached else meta["seconds"], cached=cached, key=key,
                               max_new_tokens=settings.max_new_tokens, empty_answers=meta["empty_answers"],
                               truncated_answers=meta["truncated_answers"])
    with atomic_dir(layout.rehearsal_answers.parent) as staging:  # both files or neither
        write_jsonl(staging / layout.rehearsal_answers.name, rows)
        summary.write(staging / layout.rehearsal_summary.name)
    return summary.to_json()
