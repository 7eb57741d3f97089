"""The evaluation report (markdown): one comparison table of base, adapter and full fine-tune, and what it means.

MLflow logs it as an artifact (register stage) and the Prefect flow shows it as a markdown artifact, so
the same text answers "is this adapter worth it?" wherever the run is looked at.
"""

from __future__ import annotations

from typing import Any

from loraops.config import EvalParams
from loraops.core import Layout
from loraops.evaluation.records import EvaluationSummary
from loraops.modeling import safetensors_bytes
from loraops.training import BaselineRecord, TrainChoice, TrainRecord, read_baseline

TRAINING_KEYS = {"trainable_params", "total_params", "adapter_bytes", "adapter_to_base_size", "train_seconds",
                 "peak_memory_mb", "rehearsal_share", "rehearsal_rows", "rehearsal_tokens", "cpu_seconds",
                 "gpu_seconds", "energy_joules", "energy_method"}


def training_facts(layout: Layout) -> dict[str, dict[str, Any]]:
    """What each model cost to train, from metrics/train.json and metrics/baseline.json when present, and
    (``search``) what the rank search's trials cost together, from models/search/chosen.json."""
    facts: dict[str, dict[str, Any]] = {"base": {"trainable_params": 0, "train_seconds": 0.0}}
    if layout.train_metrics.is_file():
        facts["adapter"] = TrainRecord.read(layout.train_metrics).model_dump(include=TRAINING_KEYS)
    if layout.baseline_metrics.is_file():
        baseline = read_baseline(layout.baseline_metrics)
        if isinstance(baseline, BaselineRecord):
            full = baseline.model_dump(include=TRAINING_KEYS)
            base_bytes = safetensors_bytes(layout.base_model_dir)
            if (layout.full_model_dir / "config.json").is_file() and base_bytes:
                full["model_bytes"] = safetensors_bytes(layout.full_model_dir)
                full["adapter_to_base_size"] = full["model_bytes"] / base_bytes  # a full copy: about 1.0
            facts["full"] = full
    if layout.search_choice.is_file():
        choice = TrainChoice.read(layout.search_choice)
        if choice.total_energy_joules is not None:
            facts["search"] = {"energy_joules": choice.total_energy_joules, "energy_method": choice.energy_method,
                               "trials": choice.costed_trials}
    return facts


def energy_line(facts: dict[str, dict]) -> str | None:
    """"The adapter cost X % of the full fine-tune's energy", when both training records carry energy, and
    "the search cost N kJ over K trials", when the search recorded its cost."""
    adapter, full, search = facts.get("adapter", {}), facts.get("full", {}), facts.get("search", {})
    parts = []
    if adapter.get("energy_joules") and full.get("energy_joules"):
        methods = sorted({adapter.get("energy_method"), full.get("energy_method")} - {None})
        parts.append(f"the adapter cost {adapter['energy_joules'] / full['energy_joules'] * 100:.0f} % of the "
                     f"full fine-tune's energy ({adapter['energy_joules'] / 1000:.2f} kJ vs "
                     f"{full['energy_joules'] / 1000:.2f} kJ of training; {', '.join(methods)})")
    if search.get("energy_joules"):
        trials = search.get("trials")
        parts.append(f"the search cost {search['energy_joules'] / 1000:.2f} kJ over {trials} "
                     f"trial{'' if trials == 1 else 's'} (training and scoring them; {search.get('energy_method')})")
    return f"- **Energy**: {'; '.join(parts)}." if parts else None


def _num(value: Any, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


def _params(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value / 1e6:.2f} M" if value >= 1e5 else f"{value:,}"


def render_report(summary: EvaluationSummary, per_label: dict[str, dict], facts: dict[str, dict],
                  params: EvalParams) -> str:
    headline = summary.headline
    models = {name: scores.model_dump(exclude_none=True) for name, scores in summary.models.items()}
    pct = round(params.confidence * 100)
    lines = ["# Evaluation: base model vs adapter vs full fine-tune", "",
             f"{summary.test_items} test items (sha256 `{summary.test_set_sha256[:12]}`), greedy decoding, "
             f"same prompts for the trained models. Headline metric: **{headline}** with {pct} % bootstrap "
             f"intervals ({summary.bootstrap_samples} resamples of the test items).", ""]
    if summary.constrained:
        lines += ["Label answers are decoded within the label set (every answer is one label); "
                  "`accuracy_unconstrained` is the same model answering freely, on the same prompts.", ""]
    if summary.base_prompting is not None:
        how = summary.base_prompting
        lines += [f"The base model is asked at its best: the label set listed in its prompt, {how.shots} worked "
                  f"examples from the train split as earlier chat turns (never a test request), "
                  f"{'constrained' if how.constrained else 'unconstrained'} decoding.", ""]
    if "tfidf" in models:
        lines += ["`tfidf`: TF-IDF + logistic regression fit on the same train split (a classical reference; "
                  "reported, never gated on; its time is fitting plus predicting).", ""]
    extra = [m for m in ("accuracy_unconstrained", "macro_f1", "rouge_l", "perplexity")
             if any(m in s for s in models.values()) and m != headline]
    header = ["model", f"{headline} [{pct} % CI]", *extra, "retention (drop vs base)", "trainable params",
              "size vs base", "train time", "peak memory"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, scores in models.items():
        fact = facts.get(name, {})
        retention = ("–" if "retention" not in scores else
                     f"{scores['retention']:.3f} ({_num(scores.get('retention_drop'), '+.3f')}"
                     + ("" if scores.get("retention_drop_low") is None else
                        f" [{scores['retention_drop_low']:+.3f}, {scores['retention_drop_high']:+.3f}]") + ")")
        size = ("–" if name in ("base", "tfidf") or fact.get("adapter_to_base_size") is None
                else f"{fact['adapter_to_base_size'] * 100:.1f} %")
        row = [name + (" (cached)" if scores.get("cached") else ""),
               f"{scores[headline]:.3f} [{scores[f'{headline}_low']:.3f}, {scores[f'{headline}_high']:.3f}]",
               *[_num(scores.get(m), ".2f" if m == "perplexity" else ".3f") for m in extra], retention,
               _params(fact.get("trainable_params")), size,
               "–" if fact.get("train_seconds") is None else f"{fact['train_seconds']:.0f} s",
               "–" if fact.get("peak_memory_mb") is None else f"{fact['peak_memory_mb']:.0f} MB"]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    for key, diff in summary.differences.items():
        verdict = ("the interval excludes 0" if diff.low > 0 or diff.high < 0
                   else "the interval includes 0: no clear difference on this test set")
        lines.append(f"- **{key.replace('_', ' ')}** ({headline}, paired bootstrap): {diff.mean:+.3f} "
                     f"[{diff.low:+.3f}, {diff.high:+.3f}]; {verdict}.")
    share = summary.recovered_share
    if "full" in models:
        lines.append(f"- **Recovered share** of the full fine-tune's gain over base: "
                     + (f"{share * 100:.0f} %." if share is not None
                        else "undefined (the full fine-tune did not beat the base model)."))
    else:
        lines.append("- No full fine-tune (models/full) to compare with: run the baseline stage for it.")
    if (energy := energy_line(facts)) is not None:
        lines.append(energy)
    lines += ["", "Retention: share of the built-in general prompts (loraops.retention) answered right, "
              "rendered without the task's system prompt; drop = base minus model (positive = forgotten), "
              "with its paired bootstrap interval over the same items."]
    rehearsed = {name: fact for name, fact in facts.items() if fact.get("rehearsal_rows")}
    lines += [f"Rehearsal ({name}): {fact['rehearsal_rows']} of the training rows were the base model's own answers "
              f"to general prompts (share {fact['rehearsal_share']:.2f}, {fact['rehearsal_tokens']} answer tokens)."
              for name, fact in rehearsed.items()] or ["No rehearsal rows were mixed into training "
                                                       "(train.rehearsal.share is 0)."]
    lines.append("")
    adapter_labels = per_label.get("adapter")
    if adapter_labels:
        lines += ["## Per label (adapter)", "", "| label | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        lines += [f"| {label} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} |"
                  for label, v in adapter_labels.items()]
        lines.append("")
    return "\n".join(lines)
