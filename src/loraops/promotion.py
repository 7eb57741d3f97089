"""Moving the ``champion`` alias: gated, serialised between concurrent runs, recorded on every version.

MLflow has no conditional alias update, so a compare-and-set alone cannot stop two runs that both read
"champion = 3" from both moving it. The one atomic operation MLflow's stores offer is creating a
registered model under a unique name, so promotions take a short lease lock: the registered model
``<name>.promotion-lock`` (created atomically, deleted when done, broken by the next run when older
than ``promote.lock_ttl_seconds``, i.e. its holder died). Inside the lock the champion is read, the gates
are evaluated against it, the champion is re-read just before the alias moves (a lock broken as stale
shows up here, and the promotion starts over against the new champion), and the aliases are read back
afterwards as a final consistency check.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from loraops.config import PromoteParams
from loraops.errors import RegistryError
from loraops.gates import ChampionScore, GateOutcome, describe, evaluate_gates, gate_tags, passed
from loraops.retrying import Retrier

CHAMPION, PREVIOUS, CHALLENGER = "champion", "previous", "challenger"
REGISTRATION_TAG = "loraops.registration"  # "incomplete" until the version is fully registered


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def lock_name(model_name: str) -> str:
    return f"{model_name}.promotion-lock"


def alias_version(client: Any, name: str, alias: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if getattr(exc, "error_code", None) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


@contextlib.contextmanager
def registry_lock(client: Any, name: str, ttl: float, retry: Retrier) -> Iterator[str]:
    """Hold ``<name>.promotion-lock`` for the block; wait for a live holder, break a stale one."""
    from mlflow.exceptions import MlflowException

    owner, lock = uuid.uuid4().hex, lock_name(name)
    deadline = time.monotonic() + 2 * ttl
    while True:
        try:
            retry(client.create_registered_model, lock, tags={"owner": owner, "expires": str(time.time() + ttl)},
                  description=f"Held while a loraops run promotes a version of {name}; deleted afterwards.")
            break
        except MlflowException as exc:
            if getattr(exc, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
                raise
        try:
            held = client.get_registered_model(lock)
        except MlflowException:
            continue  # released between our create and this read
        if held.tags.get("owner") == owner:
            break  # our create went through but its answer was lost, and the retry found it
        if float(held.tags.get("expires", 0)) < time.time():
            # Its holder died: break the lock, unless it changed hands meanwhile.
            with contextlib.suppress(MlflowException):
                if client.get_registered_model(lock).tags.get("owner") == held.tags.get("owner"):
                    client.delete_registered_model(lock)
            continue
        if time.monotonic() > deadline:
            raise RegistryError(f"registered model {lock!r} is held by another promotion; retry later")
        time.sleep(0.1 + (uuid.uuid4().int % 200) / 1000)
    try:
        yield owner
    finally:
        with contextlib.suppress(Exception):
            if client.get_registered_model(lock).tags.get("owner") == owner:
                retry(client.delete_registered_model, lock)


def champion_score(version: Any | None, metric: str) -> ChampionScore | None:
    if version is None:
        return None
    tags = version.tags
    score = tags.get(f"eval.adapter.{metric}")
    return ChampionScore(str(version.version), float(score) if score not in (None, "", "None") else None,
                         tags.get("eval.test_set_sha256"))


def version_evidence(client: Any, version: Any) -> tuple[dict, dict | None]:
    """eval.json and validation.json as logged in the version's run (the evidence it was registered with)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            evaluation = json.loads(Path(client.download_artifacts(version.run_id, "reports/eval.json", tmp)).read_text())
        except Exception as exc:
            raise RegistryError(f"version {version.version}: its run {version.run_id} has no reports/eval.json "
                                f"({str(exc).splitlines()[0]})") from None
        try:
            validation = json.loads(Path(client.download_artifacts(version.run_id, "reports/validation.json", tmp))
                                    .read_text())
        except Exception:
            validation = None
    return evaluation, validation


def record_gates(client: Any, name: str, version: str, outcomes: list[GateOutcome], decision: str,
                 retry: Retrier, extra: dict[str, str] | None = None) -> None:
    tags = {**gate_tags(outcomes), "promotion.decision": decision, "promotion.evaluated_at": now(), **(extra or {})}
    for key, value in tags.items():
        retry(client.set_model_version_tag, name, version, key, value)
    retry(client.update_model_version, name, version, description=describe(outcomes, decision))


def move_champion(client: Any, name: str, version: str, old: Any | None, retry: Retrier) -> None:
    """previous -> old champion, champion -> version, then read both back (the final consistency check)."""
    if old is not None:
        retry(client.set_registered_model_alias, name, PREVIOUS, str(old.version))
        retry(client.set_model_version_tag, name, version, "promotion.replaced", str(old.version))
    retry(client.set_registered_model_alias, name, CHAMPION, version)
    retry(client.set_model_version_tag, name, version, "promotion.promoted_at", now())
    champion, previous = alias_version(client, name, CHAMPION), alias_version(client, name, PREVIOUS)
    if champion is None or str(champion.version) != version or \
            (old is not None and (previous is None or str(previous.version) != str(old.version))):
        raise RegistryError(f"{name}: aliases changed under the promotion of version {version} "
                            f"(champion={champion and champion.version}, previous={previous and previous.version})")


def promote(client: Any, name: str, version: str, params: PromoteParams, retry: Retrier,
            force_reason: str | None = None, max_rounds: int = 5) -> dict[str, Any]:
    """Run the gates for ``version`` and move ``champion`` to it if they all pass (or if forced).

    The gate outcomes and the decision are written to the version whatever the result.
    """
    version = str(version)
    target = retry(client.get_model_version, name, version)
    evaluation, validation = version_evidence(client, target)
    metric = str(evaluation.get("headline") or "accuracy")
    with registry_lock(client, name, params.lock_ttl_seconds, retry):
        for _ in range(max_rounds):
            old = alias_version(client, name, CHAMPION)
            outcomes = evaluate_gates(evaluation, validation, params, champion_score(old, metric), version)
            ok = passed(outcomes)
            already = old is not None and str(old.version) == version
            extra: dict[str, str] = {}
            if force_reason is not None:
                extra = {"promotion.forced_by": os.environ.get("LORAOPS_USER") or getpass.getuser(),
                         "promotion.forced_reason": force_reason, "promotion.forced_at": now()}
            decision = CHAMPION if (ok or force_reason is not None) else CHALLENGER
            if decision == CHAMPION and not ok:
                decision = "champion (forced)"
            if already and not ok and force_reason is None:
                decision = "champion (fails the gates now; `loraops rollback` demotes it)"
            record_gates(client, name, version, outcomes, decision, retry, extra)
            if not decision.startswith(CHAMPION) or already:
                break
            # Compare-and-set: the champion must still be the one the gates were evaluated against.
            again = alias_version(client, name, CHAMPION)
            if (again and str(again.version)) != (old and str(old.version)):
                continue
            move_champion(client, name, version, old, retry)
            break
        else:
            raise RegistryError(f"{name}: the champion kept changing during the promotion of version {version}")
    return {"version": int(version), "decision": decision, "gates": {o.name: o.status for o in outcomes},
            "previous": int(old.version) if old is not None and not already and decision.startswith(CHAMPION) else None}


def rollback(client: Any, name: str, params: PromoteParams, retry: Retrier) -> dict[str, Any]:
    """``champion`` back to ``previous``; ``previous`` then points at what that version had replaced."""
    with registry_lock(client, name, params.lock_ttl_seconds, retry):
        champion, previous = alias_version(client, name, CHAMPION), alias_version(client, name, PREVIOUS)
        if previous is None:
            raise RegistryError(f"{name}: no 'previous' alias, nothing to roll back to")
        if champion is not None and str(champion.version) == str(previous.version):
            raise RegistryError(f"{name}: 'previous' and 'champion' are both version {champion.version} "
                                "(an interrupted promotion); nothing to roll back to")
        retry(client.set_registered_model_alias, name, CHAMPION, str(previous.version))
        before = previous.tags.get("promotion.replaced")
        if before and before != str(previous.version) and _exists(client, name, before):
            retry(client.set_registered_model_alias, name, PREVIOUS, before)
        else:
            retry(client.delete_registered_model_alias, name, PREVIOUS)
        if champion is not None:
            retry(client.set_model_version_tag, name, str(champion.version), "promotion.rolled_back_at", now())
            retry(client.set_model_version_tag, name, str(champion.version), "promotion.decision", "rolled back")
        retry(client.set_model_version_tag, name, str(previous.version), "promotion.restored_at", now())
        check = alias_version(client, name, CHAMPION)
        if check is None or str(check.version) != str(previous.version):
            raise RegistryError(f"{name}: champion changed during the rollback")
    return {"champion": int(previous.version), "rolled_back": int(champion.version) if champion else None}


def _exists(client: Any, name: str, version: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_model_version(name, version)
        return True
    except MlflowException:
        return False


def check_and_repair(client: Any, name: str, grace_seconds: float, retry: Retrier) -> list[str]:
    """Delete versions a dead run left half-registered, so no alias or listing points at a broken version.

    A version is broken when its registration never finished (tag ``loraops.registration=incomplete`` or
    status not READY) for longer than ``grace_seconds`` (a registration still running is left alone).
    """
    from mlflow.exceptions import MlflowException

    try:
        versions = retry(client.search_model_versions, f"name='{name}'")
    except MlflowException as exc:
        if getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise
    repaired, cutoff = [], (time.time() - grace_seconds) * 1000
    for version in versions:
        unfinished = version.tags.get(REGISTRATION_TAG) == "incomplete" or version.status != "READY"
        if unfinished and version.creation_timestamp < cutoff:
            retry(client.delete_model_version, name, str(version.version))
            repaired.append(f"deleted version {version.version} (registration never finished)")
    return repaired
