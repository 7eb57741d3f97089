"""The registered versions as ``loraops models`` lists them: aliases, scores with intervals, decision, gates."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from loraops.config import PROMOTION_GATES
from loraops.core.tracking import Tracking, is_missing
from loraops.registry.cleanup import aliases_by_version
from loraops.registry.composition import COMPOSED_TAG
from loraops.registry.gates import TASK_GATE, parse_summary
from loraops.registry.lineage import parse_score, pointer_tags
from loraops.registry.promotion import CHAMPION, alias_version


def _score(tags: dict[str, str], model: str, metric: str) -> tuple[float | None, float | None, float | None]:
    """A model's score and interval from the version tags (``adapter.accuracy``), or the older tags."""
    value, low, high = parse_score(tags.get(f"{model}.{metric}"))
    if value is None and f"eval.{model}.{metric}" in tags:
        value = parse_score(tags[f"eval.{model}.{metric}"])[0]
        low = parse_score(tags.get(f"eval.{model}.{metric}_low"))[0]
        high = parse_score(tags.get(f"eval.{model}.{metric}_high"))[0]
    return value, low, high


def _text(value: float | None) -> str | None:
    return None if value is None else f"{value:.4f}"


def gate_names(tags: dict[str, str]) -> tuple[str, ...]:
    """The gates a version is judged by: the pipeline's, or a composed version's (one per source task, retention)."""
    if tags.get(COMPOSED_TAG) != "true":
        return PROMOTION_GATES
    models = [part.rsplit(" v", 1)[0] for part in tags.get("compose.sources", "").split(", ") if part]
    return (*(f"{TASK_GATE}{m}" for m in models), "retention")


def version_rows(tracking: Tracking, name: str) -> list[dict[str, Any]]:
    """One row per version of ``name`` (none when the model does not exist), oldest first."""
    try:
        by_version = aliases_by_version(tracking, name)
    except Exception as exc:
        if is_missing(exc):
            return []
        raise
    rows = []
    versions = tracking.retry(tracking.client.search_model_versions, f"name='{name}'")
    for version in sorted(versions, key=lambda v: int(v.version)):
        tags = version.tags
        value, low, high = _score(tags, "adapter", "accuracy")
        gates = parse_summary(tags.get("gates"), gate_names(tags)) or \
            {g: tags.get(f"gate.{g}", "-") for g in PROMOTION_GATES}
        rows.append({"version": int(version.version), "aliases": sorted(by_version.get(str(version.version), [])),
                     "accuracy": _text(value), "interval": [_text(low), _text(high)],
                     "base": _text(_score(tags, "base", "accuracy")[0]),
                     "full": _text(_score(tags, "full", "accuracy")[0]),
                     "decision": tags.get("decision") or tags.get("promotion.decision", "not evaluated"),
                     "gates": gates, "forced_reason": tags.get("promotion.forced_reason"),
                     "hand_move": tags.get("hand_move.action"), "run_id": version.run_id})
    return rows


def champion_uri(tracking: Tracking, name: str) -> str | None:
    """``models:/<name>@champion`` when there is a champion, else None."""
    return f"models:/{name}@{CHAMPION}" if alias_version(tracking, name, CHAMPION) is not None else None


def version_of_run(tracking: Tracking, name: str, run_id: str) -> Any | None:
    """The version of ``name`` that run ``run_id`` registered, or None."""
    found = tracking.retry(tracking.client.search_model_versions, f"name='{name}' and run_id='{run_id}'")
    return found[0] if found else None


def version_lineage(tracking: Tracking, version: Any) -> dict[str, str]:
    """``dvc.NAME.path``/``dvc.NAME.md5`` of a version: from ``lineage.json`` on its run, or from its tags
    (versions registered before lineage.json). ``{}`` when neither has them."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = tracking.retry(tracking.client.download_artifacts, version.run_id, "lineage.json", tmp)
            lineage = json.loads(Path(local).read_text(encoding="utf-8"))
        except Exception:  # no lineage.json (an older version): its tags hold the same keys
            lineage = None
    found = pointer_tags(lineage) if isinstance(lineage, dict) else {}
    return found or {k: v for k, v in version.tags.items() if k.startswith("dvc.")}
