"""``loraops compose``: one adapter built from registered versions of two or more models (one task each) on the
same base, with PEFT's weighted combination, scored on every source task and on retention, and registered as a
model of its own with lineage to its sources and gates against each source task's champion.

- **Sources** are ``MODEL@VERSION``, ``MODEL@ALIAS`` or ``MODEL`` (its champion), one per registered model. Each
  is checked as a served adapter is: its model folder against ``model.sha256``, its base against the local
  base (``models/base``, by content hash). Sources on different bases, a single source, a composition as a
  source, an unknown model or version: one error, nothing built, nothing registered.
- **Combination**: ``LoraModel.add_weighted_adapter`` with ``compose.combination`` (cat, linear, svd, ties,
  dare_linear, dare_ties, ...), ``compose.weights`` and ``compose.density``. PEFT folds each source's scaling
  into the combined weights and gives the result ``lora_alpha = r``, i.e. a scaling of 1, but copies
  ``use_rslora`` from the first source: with rsLoRA sources the result would be applied ``sqrt(r)`` times too
  strong, so it is saved with ``use_rslora`` off. DoRA and LoRA-bias sources are refused (PEFT combines them
  wrongly without saying so).
- **Each source's test set** is the one its version was scored on: the prepared folder its lineage records
  (``dvc.prepared.path``) under this project, or the folder ``--data MODEL=FOLDER`` names (that project's
  folder or its prepared folder); the first ``test_items`` rows of its ``test.jsonl`` must hash to the
  version's ``test_set.sha256``, or nothing is built (``loraops restore`` puts a version's data back).
- **Evaluation** is the evaluate stage's :func:`loraops.evaluation.run_model` on each task's rows with the eval
  params the source's run recorded (constrained decoding as that task was scored), plus the composed adapter
  and the base on the retention test pool, the drop with its paired bootstrap interval.
- **Registration** follows the pipeline's rules (:mod:`loraops.registry.register`): its own run, the served
  pyfunc, the upload read back and hashed, the version created incomplete and completed before any alias, the
  clean-up rule on failure. The run takes the sources' logged models as inputs and holds ``lineage.json`` and
  ``reports/composition.json``; the version's tags name the sources, the combination and every task's score.
- **Gates** (:func:`loraops.registry.gates.composition_gates`): on every source task the composed score is at
  least that task's champion's minus ``compose.max_task_loss``, and retention as for every version. A failing
  gate still registers the version (``challenger``); ``champion`` of the composed model moves only when all pass.

Every source's prompt spec is kept in the composed adapter (``compose_tasks.json``) and its signature takes an
optional ``task`` column: the registered pyfunc (and ``loraops serve``) asks and answers each row as the source
model its ``task`` names, and as the first source's task (whose prompt file it holds) where none is named.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loraops.config import PRUNING_COMBINATIONS, ComposeParams, EvalParams, Params, portable, tracking_params
from loraops.core import Layout, RegistryError, read_json, read_jsonl, write_json
from loraops.core.hashing import dvc_md5
from loraops.core.process import process_identity
from loraops.core.tracking import Tracking, git_tags, redact_url
from loraops.data import PROMPT_FILE
from loraops.evaluation import EvaluationSummary, generate_answers, load_model, retention_prompts, run_model, \
    score_retention
from loraops.evaluation.cache import rows_sha256
from loraops.evaluation.compare import uncertainty
from loraops.evaluation.uncertainty import mean_interval, paired_difference
from loraops.modeling import base_content_sha256, base_info, load_base
from loraops.registry.cleanup import OWNER_TAG, REGISTRATION_TAG, repair
from loraops.registry.composition import COMPOSED_TAG, COMPOSITION_FILE, TASKS_FILE, ComposedSource, CompositionRecord
from loraops.registry.hand_moves import check_champion
from loraops.registry.library import recorded_bases
from loraops.registry.lineage import MODEL_SHA256_TAG, base_model_tags, format_score, recorded_outputs
from loraops.registry.promotion import CHAMPION, promote, require_complete, version_evidence
from loraops.registry.register import (create_complete_version, create_registered_model, failed_registration,
                                       first_line, log_adapter_model, verify_uploaded)
from loraops.registry.serving import adapter_dir, download_verified
from loraops.registry.versions import version_lineage

COMPOSED_ADAPTER = "composed"  # the PEFT adapter name of the result while it is built
RETENTION_POOL = "test"  # the pool the evaluate stage and the gate score


@dataclass
class Source:
    """One source version, downloaded and checked, with the test rows it was scored on."""

    model: str
    version: Any
    adapter: Path
    evaluation: EvaluationSummary
    eval_params: EvalParams
    rows: list[dict]
    labels: list[str]
    data: Path


def parse_sources(texts: list[str]) -> list[tuple[str, str]]:
    """``MODEL@REF`` (a version number or an alias) or ``MODEL`` (its champion) -> ``[(model, ref)]``; at least
    two, one per registered model."""
    sources = []
    for text in texts:
        model, sep, ref = text.rpartition("@")
        if not sep:
            model, ref = text, CHAMPION
        if not model.strip() or not ref.strip():
            raise RegistryError(f"source {text!r}: expected MODEL, MODEL@VERSION or MODEL@ALIAS")
        sources.append((model.strip(), ref.strip()))
    if len(sources) < 2:
        raise RegistryError(f"compose needs two or more sources (MODEL@VERSION ...); got {len(sources)}")
    models = [m for m, _ in sources]
    twice = sorted({m for m in models if models.count(m) > 1})
    if twice:
        raise RegistryError(f"{', '.join(twice)} given more than once: compose takes one version per registered "
                            "model (one per task)")
    return sources


def parse_data(items: list[str]) -> dict[str, Path]:
    """``MODEL=FOLDER`` options -> ``{model: folder}``."""
    found = {}
    for item in items:
        model, sep, folder = item.partition("=")
        if not sep or not model.strip() or not folder.strip():
            raise RegistryError(f"--data {item!r}: expected MODEL=FOLDER")
        found[model.strip()] = Path(folder.strip()).expanduser()
    return found


def source_weights(params: ComposeParams, count: int) -> list[float]:
    if params.weights is None:
        return [1.0] * count
    if len(params.weights) != count:
        raise RegistryError(f"compose.weights has {len(params.weights)} values for {count} sources (one per source, "
                            "in the order given)")
    return list(params.weights)


# --- the sources ----------------------------------------------------------------------------------------------

def recorded_eval_params(tracking: Tracking, run_id: str, fallback: EvalParams) -> EvalParams:
    """The eval params the source's run logged (how its task was scored: constrained, metrics, headline), with
    this project's batch size; ``fallback`` where the run logged none that validate."""
    params = tracking.retry(tracking.client.get_run, run_id).data.params
    raw: dict[str, Any] = {}
    for field in EvalParams.model_fields:
        value = params.get(f"eval.{field}")
        if value is None:
            continue
        try:
            raw[field] = json.loads(value)
        except ValueError:  # a string param is logged as it reads (``label``), not as JSON
            raw[field] = value
    try:
        return EvalParams.model_validate({**fallback.model_dump(), **raw, "batch_size": fallback.batch_size})
    except ValueError:
        return fallback


def test_rows(layout: Layout, model: str, version: Any, lineage: dict[str, str], evaluation: EvaluationSummary,
              data: Path | None) -> tuple[list[dict], list[str], Path]:
    """The rows ``version`` was scored on, its labels and the folder they came from (module docstring)."""
    recorded = recorded_outputs(lineage).get("prepared")
    relative = Path(*recorded[0].parts) if recorded else None
    if data is not None:
        folder = data if (data / "test.jsonl").is_file() or relative is None else data / relative
    elif relative is not None:
        folder = layout.root / relative
    else:
        raise RegistryError(f"{model} version {version.version} records no prepared data (dvc.prepared.path); "
                            f"give --data {model}=FOLDER (its project or its prepared folder)")
    test = folder / "test.jsonl"
    restore = (f"give --data {model}=FOLDER (its project or its prepared folder), or put that version's data back "
               f"with `loraops restore {version.version} -S registry.model_name={model}` in its project")
    if not test.is_file():
        raise RegistryError(f"{model} version {version.version}: no test split at {test}; {restore}")
    rows = read_jsonl(test)[: evaluation.test_items]
    found = rows_sha256(rows)
    if len(rows) != evaluation.test_items or found != evaluation.test_set_sha256:
        raise RegistryError(f"{model} version {version.version} was scored on test set "
                            f"{evaluation.test_set_sha256[:12]}... ({evaluation.test_items} rows); the first "
                            f"{len(rows)} rows of {test} hash to {found[:12]}...: not the same test set; {restore}")
    labels = read_json(folder / "labels.json") if (folder / "labels.json").is_file() else []
    return rows, labels, folder


def _check_adapter(model: str, version: Any, adapter: Path) -> None:
    config = read_json(adapter / "adapter_config.json")
    if config.get("peft_type") != "LORA":
        raise RegistryError(f"{model} version {version.version} is a {config.get('peft_type')} adapter; compose "
                            "combines LoRA adapters only")
    for key, what in (("use_dora", "DoRA"), ("lora_bias", "LoRA bias")):
        if config.get(key):
            raise RegistryError(f"{model} version {version.version} uses {what}, which PEFT's weighted combination "
                                "gets wrong; compose refuses it")


def fetch_sources(tracking: Tracking, layout: Layout, params: Params, sources: list[tuple[str, str]],
                  data: dict[str, Path], into: Path) -> list[Source]:
    """Download and check every source (hash, completeness, base, adapter type, test set), all before any work."""
    unknown = sorted(set(data) - {m for m, _ in sources})
    if unknown:
        raise RegistryError(f"--data names {', '.join(unknown)}, which is not a source")
    fetched: list[tuple[str, Any, Path]] = []
    for index, (model, ref) in enumerate(sources):
        folder = into / f"source{index}"
        folder.mkdir()
        version, local = download_verified(tracking, model, ref, into=folder)
        require_complete(version, model)
        if version.tags.get(COMPOSED_TAG) == "true":
            raise RegistryError(f"{model} version {version.version} is itself a composition; compose its sources")
        fetched.append((model, version, local))
    check_bases(layout, fetched)
    found = []
    for model, version, local in fetched:
        adapter = adapter_dir(local)
        _check_adapter(model, version, adapter)
        evaluation, _ = version_evidence(tracking, version)
        if evaluation.model("adapter") is None:
            raise RegistryError(f"{model} version {version.version}: its eval.json scores no adapter")
        rows, labels, folder = test_rows(layout, model, version, version_lineage(tracking, version), evaluation,
                                         data.get(model))
        found.append(Source(model, version, adapter, evaluation,
                            recorded_eval_params(tracking, version.run_id, params.eval), rows, labels, folder))
    return found


def check_bases(layout: Layout, fetched: list[tuple[str, Any, Path]]) -> None:
    """Every source names one base, and it is the local one: different bases cannot be combined."""
    bases = {f"{model} v{version.version}": recorded_bases(version, local) for model, version, local in fetched}
    for who, recorded in bases.items():
        if len(recorded) != 1:
            raise RegistryError(f"{who} records {'no base' if not recorded else 'two bases'} (base_model.sha256); "
                                "register it again")
    named = {next(iter(r)) for r in bases.values()}
    if len(named) > 1:
        shown = ", ".join(f"{who} on {next(iter(r))[:12]}..." for who, r in bases.items())
        raise RegistryError(f"the sources were trained on different bases ({shown}); only adapters of one base "
                            "combine")
    local = base_content_sha256(layout.base_model_dir)
    if named != {local}:
        raise RegistryError(f"the sources were trained on base {next(iter(named))[:12]}..., not this project's base "
                            f"{local[:12]}... ({layout.base_model_dir}); compose in the project that has their base")


# --- building and scoring ----------------------------------------------------------------------------------

def build(base_dir: Path, adapters: list[Path], weights: list[float], params: ComposeParams, seed: int,
          out: Path) -> Path:
    """The combined adapter, saved under ``out``; returns its folder (adapter_config.json + safetensors)."""
    import torch
    from peft import PeftModel

    names = [f"source{i}" for i in range(len(adapters))]  # module names: a model name may hold a "."
    model = PeftModel.from_pretrained(load_base(base_dir), adapters[0], adapter_name=names[0], is_trainable=False)
    for name, folder in zip(names[1:], adapters[1:]):
        model.load_adapter(str(folder), adapter_name=name, is_trainable=False)
    options: dict[str, Any] = {}
    if params.combination in PRUNING_COMBINATIONS:
        options.update(density=params.density, majority_sign_method=params.majority_sign)
    if params.combination.endswith("svd"):
        options["svd_rank"] = params.svd_rank
    torch.manual_seed(seed)  # DARE drops values at random: the same seed gives the same adapter
    try:
        model.add_weighted_adapter(names, weights, COMPOSED_ADAPTER, combination_type=params.combination, **options)
    except (ValueError, TypeError) as exc:
        hint = " (cat and svd combine different ranks)" if "same r" in str(exc) else ""
        raise RegistryError(f"compose.combination {params.combination}: PEFT refused the sources: "
                            f"{str(exc).splitlines()[0]}{hint}") from None
    # The combined weights already carry each source's scaling; with use_rslora inherited from the first source
    # the result would be scaled by sqrt(r) instead of 1 (module docstring).
    model.peft_config[COMPOSED_ADAPTER].use_rslora = False
    model.save_pretrained(str(out), selected_adapters=[COMPOSED_ADAPTER], safe_serialization=True)
    return out / COMPOSED_ADAPTER


def add_prompts(composed: Path, sources: list[Source]) -> None:
    """The first source's prompt file (the task answered where a request names none) and every source's spec
    beside it, by model name (what a request's ``task`` names)."""
    shutil.copy2(sources[0].adapter / PROMPT_FILE, composed / PROMPT_FILE)
    write_json(composed / TASKS_FILE, {s.model: read_json(s.adapter / PROMPT_FILE) for s in sources})


def logged_model_id(version: Any) -> str | None:
    """The MLflow LoggedModel a version was registered from (stores leave ``model_id`` empty; its source names it)."""
    source = str(version.source or "")
    if getattr(version, "model_id", None):
        return version.model_id
    return source.removeprefix("models:/") if source.startswith("models:/m-") else None


def score(layout: Layout, params: Params, composed: Path, sources: list[Source],
          weights: list[float]) -> CompositionRecord:
    """The composed adapter on every source task's rows and on retention, through the evaluate stage's code."""
    project = params.eval
    boot = {"samples": project.bootstrap_samples, "confidence": project.confidence, "seed": project.bootstrap_seed}
    scored, kept = [], []
    for index, source in enumerate(sources):
        headline = source.evaluation.headline
        ep = source.eval_params.model_copy(update={"headline": headline, "retention": index == 0,
                                                   "retention_max_new_tokens": project.retention_max_new_tokens})
        run = run_model(layout.base_model_dir, source.rows, ep.batch_size, layout.root, adapter_dir=composed,
                        params=ep, labels=source.labels or None, unconstrained=False, retention_pool=RETENTION_POOL)
        value = run["metrics"].get(headline)
        if value is None:
            raise RegistryError(f"{source.model}: the composed adapter's run scored no {headline}")
        # The interval as the source's own evaluation drew it (its bootstrap params, recorded with its run).
        interval = uncertainty({"adapter": run}, ep, source.labels)[0]["adapter"]
        if index == 0:
            kept = [float(i["retained"]) for i in run["retention_items"]]
        own = source.evaluation.model("adapter")
        scored.append(ComposedSource(
            model=source.model, version=str(source.version.version), run_id=source.version.run_id,
            model_id=logged_model_id(source.version), model_sha256=source.version.tags[MODEL_SHA256_TAG],
            weight=weights[index], headline=headline, test_items=len(source.rows),
            test_set_sha256=source.evaluation.test_set_sha256, data=portable(str(source.data.resolve()), layout.root),
            score=float(value), score_low=interval["low"], score_high=interval["high"],
            source_score=own.score(headline) if own is not None else None))
    model, tokenizer = load_model(layout.base_model_dir)
    answers = generate_answers(model, tokenizer, retention_prompts(tokenizer, RETENTION_POOL), project.batch_size,
                               max_new_tokens=project.retention_max_new_tokens)
    base_retention, base_items = score_retention(answers, RETENTION_POOL)
    del model
    drop = paired_difference([float(i["retained"]) for i in base_items], kept, **boot)
    compose = params.compose
    pruning = compose.combination in PRUNING_COMBINATIONS
    return CompositionRecord(
        combination=compose.combination, weights=weights, density=compose.density if pruning else None,
        majority_sign=compose.majority_sign if pruning else None,
        svd_rank=compose.svd_rank if compose.combination.endswith("svd") else None, seed=params.project.seed,
        max_task_loss=compose.max_task_loss, base_model_sha256=base_content_sha256(layout.base_model_dir),
        sources=scored, retention=mean_interval(kept, **boot)["mean"], base_retention=base_retention,
        retention_drop=drop["mean"], retention_drop_low=drop["low"], retention_drop_high=drop["high"])


# --- registering -------------------------------------------------------------------------------------------

def _key(text: str) -> str:
    """A registered model's name as part of an MLflow tag or metric key (letters, digits, _ - . only)."""
    return re.sub(r"[^\w\-.]", "_", text)


def version_tags(record: CompositionRecord, base: dict[str, Any], git: dict[str, str]) -> dict[str, str]:
    """The composed version's short set of tags: its sources, combination, every task's score, retention, base."""
    tags = {COMPOSED_TAG: "true", "compose.sources": ", ".join(f"{s.model} v{s.version}" for s in record.sources),
            "compose.combination": record.combination, "compose.weights": json.dumps(record.weights),
            "compose.max_task_loss": f"{record.max_task_loss:g}", "git.commit": git.get("git.commit", "none"),
            **base_model_tags(base)}
    if record.density is not None:
        tags["compose.density"] = f"{record.density:g}"
    for s in record.sources:
        tags[f"task.{_key(s.model)}.{s.headline}"] = format_score(s.score, s.score_low, s.score_high)
    if record.retention_drop is not None:
        tags["adapter.retention_drop"] = f"{record.retention_drop:.4f}"
    return tags


def lineage(record: CompositionRecord, base: dict[str, Any], git: dict[str, str], run_id: str) -> dict[str, Any]:
    """``lineage.json`` of the composed run: the source versions (what ``loraops restore`` of a source brings
    back), base and git; no DVC outputs of its own (it was built from registered versions, not a pipeline run)."""
    return {"run_id": run_id, "composed_from": [{k: getattr(s, k) for k in ("model", "version", "run_id", "model_id",
                                                                            "model_sha256", "weight", "test_set_sha256")}
                                                for s in record.sources],
            "combination": record.combination, "git": git,
            "base_model": {k: base.get(k) for k in ("id", "revision", "licence", "content_sha256", "source")}}


def describe_run(name: str, record: CompositionRecord, number: str, decision: str) -> str:
    rows = "".join(f"| {s.model} v{s.version} | {s.weight:g} | {s.headline} | {s.score:.4f} "
                   f"[{s.score_low:.4f}, {s.score_high:.4f}] | "
                   f"{'-' if s.source_score is None else f'{s.source_score:.4f}'} | {s.test_items} |\n"
                   for s in record.sources)
    drop = "-" if record.retention_drop is None else (
        f"{record.retention_drop:+.4f} [{record.retention_drop_low:+.4f}, {record.retention_drop_high:+.4f}]")
    return (f"**{name} version {number}: {decision}**\n\nComposed with PEFT `{record.combination}` from the versions "
            f"below (gate: at most {record.max_task_loss:g} below each task's champion).\n\n"
            "| source | weight | metric | composed | source alone | test items |\n|---|---|---|---|---|---|\n"
            f"{rows}\nRetention drop (base minus composed): {drop}. Evidence: `reports/{COMPOSITION_FILE}`, "
            "lineage: `lineage.json`, gate reasons: the model version's description.")


def check_target(tracking: Tracking, name: str, sources: list[tuple[str, str]]) -> None:
    """The composed model is a registered model of its own: not a source, not one the pipeline registers into."""
    if not name.strip() or any(c in name for c in "/:'"):
        raise RegistryError(f"--name {name!r}: not a registered model name (no '/', ':' or quotes)")
    if name in {m for m, _ in sources}:
        raise RegistryError(f"--name {name!r} is one of the sources; a composition is registered as a model of its own")
    versions = tracking.retry(tracking.client.search_model_versions, f"name='{name}'")
    if any(v.tags.get(COMPOSED_TAG) != "true" for v in versions):
        raise RegistryError(f"{name} holds versions the pipeline registered; give the composition a model name of "
                            "its own")


def register(tracking: Tracking, layout: Layout, params: Params, name: str, composed: Path,
             record: CompositionRecord) -> dict[str, Any]:
    """Its own run, the pyfunc, a new version of ``name`` (alias ``challenger``), the gates."""
    import mlflow
    from mlflow.entities import LoggedModelInput

    client, retry = tracking.client, tracking.retry
    repaired = repair(tracking, name, params.promote.lock_ttl_seconds)
    moved = check_champion(tracking, name, params.promote)
    experiment_id = tracking.experiment_id(params.registry.experiment)
    base, git = base_info(layout), git_tags(layout.root)
    run = retry(client.create_run, experiment_id, run_name=f"compose {name}",
                tags={COMPOSED_TAG: "true", **git, **base_model_tags(base)})
    run_id = run.info.run_id
    version, status, creating, number = None, "FAILED", False, ""
    try:
        retry(mlflow.start_run, run_id=run_id)
        chosen = {k: v for k, v in tracking_params(params, layout.root).items() if k.startswith(("compose.", "eval."))}
        retry(mlflow.log_params, {**chosen, "compose.sources": ", ".join(f"{s.model}@{s.version}" for s in record.sources),
                                  "compose.model_name": name})
        inputs = [LoggedModelInput(s.model_id) for s in record.sources if s.model_id]
        if inputs:  # the UI's lineage: this run took the sources' logged models as inputs
            retry(client.log_inputs, run_id, models=inputs)
        metrics = {f"{_key(s.model)}.{s.headline}{end}": value for s in record.sources
                   for end, value in (("", s.score), ("_low", s.score_low), ("_high", s.score_high))}
        metrics.update({k: v for k in ("retention", "retention_drop", "retention_drop_low", "retention_drop_high")
                        if (v := getattr(record, k)) is not None})
        retry(mlflow.log_metrics, metrics)
        adapter_md5 = dvc_md5(composed)  # before the upload: the version records the bytes that were uploaded
        retry(mlflow.log_artifacts, str(composed), artifact_path="adapter")
        retry(mlflow.log_dict, record.to_json(), f"reports/{COMPOSITION_FILE}")
        retry(mlflow.log_dict, lineage(record, base, git, run_id), "lineage.json")
        info = log_adapter_model(tracking, composed, layout.base_model_dir, base)
        model_hash = retry(verify_uploaded, tracking, run_id, adapter_md5, info.model_uri)
        tags = {**version_tags(record, base, git), "dvc.adapter.md5": adapter_md5, MODEL_SHA256_TAG: model_hash,
                OWNER_TAG: process_identity(), REGISTRATION_TAG: "incomplete"}
        retry(create_registered_model, tracking, name)
        creating = True
        version = create_complete_version(tracking, name, info, run_id, tags)
        number = str(version.version)
        promotion = promote(tracking, name, number, params.promote, make_challenger=True)
        retry(mlflow.set_tags, {"decision": promotion["decision"], "registered_version": f"{name}/{number}",
                                "mlflow.note.content": describe_run(name, record, number, promotion["decision"])})
        status = "FINISHED"
    except Exception as exc:
        left = failed_registration(tracking, name, run_id, version, creating, "compose", exc)
        raise RegistryError(f"registering the composition in {redact_url(layout.tracking_uri())} failed: "
                            f"{first_line(exc)}; {left}") from None
    finally:
        with contextlib.suppress(Exception):
            mlflow.end_run(status)
    return {"model_name": name, "version": int(number), "run_id": run_id, "model_uri": f"models:/{name}/{number}",
            "decision": promotion["decision"], "gates": promotion["gates"], "reasons": promotion["reasons"],
            "repaired": repaired, "hand_move": moved.line if moved else None}


def compose(tracking: Tracking, layout: Layout, params: Params, name: str, sources: list[str],
            data: list[str] | None = None) -> dict[str, Any]:
    """Build, score and register the composition of ``sources`` as a new version of ``name`` (module docstring).
    Every check of the input runs before anything is built; nothing is registered when one fails."""
    parsed, folders = parse_sources(sources), parse_data(data or [])
    weights = source_weights(params.compose, len(parsed))
    if not (layout.base_model_dir / "config.json").is_file():
        raise RegistryError(f"{layout.base_model_dir}: no base model here; run the base_model stage first")
    check_target(tracking, name, parsed)
    with tempfile.TemporaryDirectory(prefix="loraops-compose-") as tmp:
        found = fetch_sources(tracking, layout, params, parsed, folders, Path(tmp))
        composed = build(layout.base_model_dir, [s.adapter for s in found], weights, params.compose,
                         params.project.seed, Path(tmp) / "built")
        add_prompts(composed, found)
        record = score(layout, params, composed, found, weights)
        result = register(tracking, layout, params, name, composed, record)
    return {**result, "composition": record.to_json()}
