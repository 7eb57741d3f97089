"""The registered versions as ``loraops models`` lists them: aliases, scores with intervals, decision, gates."""

from __future__ import annotations

from typing import Any

from loraops.config import PROMOTION_GATES
from loraops.core.tracking import Tracking, is_missing
from loraops.registry.cleanup import aliases_by_version
from loraops.registry.promotion import CHAMPION, alias_version


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
        rows.append({"version": int(version.version), "aliases": sorted(by_version.get(str(version.version), [])),
                     "accuracy": tags.get("eval.adapter.accuracy"),
                     "interval": [tags.get("eval.adapter.accuracy_low"), tags.get("eval.adapter.accuracy_high")],
                     "base": tags.get("eval.base.accuracy"), "full": tags.get("eval.full.accuracy"),
                     "decision": tags.get("promotion.decision", "not evaluated"),
                     "gates": {g: tags.get(f"gate.{g}", "-") for g in PROMOTION_GATES},
                     "forced_reason": tags.get("promotion.forced_reason"), "run_id": version.run_id})
    return rows


def champion_uri(tracking: Tracking, name: str) -> str | None:
    """``models:/<name>@champion`` when there is a champion, else None."""
    return f"models:/{name}@{CHAMPION}" if alias_version(tracking, name, CHAMPION) is not None else None


def version_of_run(tracking: Tracking, name: str, run_id: str) -> Any | None:
    """The version of ``name`` that run ``run_id`` registered, or None."""
    found = tracking.retry(tracking.client.search_model_versions, f"name='{name}' and run_id='{run_id}'")
    return found[0] if found else None
