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
import os
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from loraops.config import PromoteParams
from loraops.core import RegistryError
from loraops.core.tracking import Tracking, is_missing
from loraops.evaluation import EvaluationSummary
from loraops.evaluation.comparison import markdown_table
from loraops.registry.gates import ChampionScore, GateOutcome, describe, evaluate_gates, passed, summarise
from loraops.registry.lineage import parse_score
from loraops.validation import ValidationSummary

CHAMPION, PREVIOUS, CHALLENGER = "champion", "previous", "challenger"
# On the registered model: the version loraops last made champion, and when. A champion alias that differs
# was moved outside loraops (loraops.registry.hand_moves).
CHAMPION_TAG, CHAMPION_AT_TAG = "loraops.champion", "loraops.champion_at"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def lock_name(model_name: str) -> str:
    return f"{model_name}.promotion-lock"


def alias_version(tracking: Tracking, name: str, alias: str) -> Any | None:
    """The version ``alias`` points at, or None (no such alias or no such model)."""
    try:
        return tracking.retry(tracking.client.get_model_version_by_alias, name, alias)
    except Exception as exc:
        if is_missing(exc):
            return None
        raise


@contextlib.contextmanager
def registry_lock(tracking: Tracking, name: str, ttl: float) -> Iterator[str]:
    """Hold ``<name>.promotion-lock`` for the block; wait for a live holder, break a stale one."""
    from mlflow.exceptions import MlflowException

    client, retry = tracking.client, tracking.retry
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
    """The champion's headline score and test set, from its tags (``adapter.<metric>``, ``test_set.sha256``;
    versions registered before these names carry ``eval.adapter.<metric>`` and ``eval.test_set_sha256``)."""
    if version is None:
        return None
    tags = version.tags
    score, _, _ = parse_score(tags.get(f"adapter.{metric}") or tags.get(f"eval.adapter.{metric}"))
    return ChampionScore(str(version.version), score,
                         tags.get("test_set.sha256") or tags.get("eval.test_set_sha256"))


def version_evidence(tracking: Tracking, version: Any) -> tuple[EvaluationSummary, ValidationSummary | None]:
    """eval.json and validation.json as logged in the version's run (the evidence it was registered with)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = tracking.retry(tracking.client.download_artifacts, version.run_id, "reports/eval.json", tmp)
            evaluation = EvaluationSummary.read(Path(local))
        except Exception as exc:
            raise RegistryError(f"version {version.version}: its run {version.run_id} has no readable "
                                f"reports/eval.json ({str(exc).splitlines()[0]})") from None
        try:
            local = tracking.retry(tracking.client.download_artifacts, version.run_id, "reports/validation.json", tmp)
            validation = ValidationSummary.read(Path(local))
        except Exception:
            validation = None
    return evaluation, validation


def record_gates(tracking: Tracking, name: str, version: str, outcomes: list[GateOutcome], decision: str,
                 extra: dict[str, str] | None = None, evaluation: EvaluationSummary | None = None,
                 notes: list[str] | None = None) -> None:
    """``decision`` and ``gates`` tags on the version; the description holds the gate table with each gate's
    reason, when it was evaluated, and the comparison of base, adapter and full fine-tune."""
    client, retry = tracking.client, tracking.retry
    tags = {"gates": summarise(outcomes), "decision": decision, **(extra or {})}
    for key, value in tags.items():
        retry(client.set_model_version_tag, name, version, key, value)
    comparison = markdown_table(evaluation) if evaluation is not None else None
    retry(client.update_model_version, name, version,
          description=describe(outcomes, decision, comparison, [*(notes or []), f"Gates evaluated {now()}."]))


def mark_champion(tracking: Tracking, name: str, version: str | None) -> None:
    """Record on the registered model which version loraops made champion (None: no champion). Written after
    the alias and the version's ``promotion.promoted_at``/``restored_at``, so a failure in between is told
    apart from a hand move by those times (loraops.registry.hand_moves)."""
    retry, client = tracking.retry, tracking.client
    retry(client.set_registered_model_tag, name, CHAMPION_TAG, version or "none")
    retry(client.set_registered_model_tag, name, CHAMPION_AT_TAG, now())


def move_champion(tracking: Tracking, name: str, version: str, old: Any | None) -> None:
    """previous -> old champion, champion -> version, then read both back (the final consistency check)."""
    client, retry = tracking.client, tracking.retry
    if old is not None:
        retry(client.set_registered_model_alias, name, PREVIOUS, str(old.version))
        retry(client.set_model_version_tag, name, version, "promotion.replaced", str(old.version))
    retry(client.set_registered_model_alias, name, CHAMPION, version)
    retry(client.set_model_version_tag, name, version, "promotion.promoted_at", now())
    mark_champion(tracking, name, version)
    champion, previous = alias_version(tracking, name, CHAMPION), alias_version(tracking, name, PREVIOUS)
    if champion is None or str(champion.version) != version or \
            (old is not None and (previous is None or str(previous.version) != str(old.version))):
        raise RegistryError(f"{name}: aliases changed under the promotion of version {version} "
                            f"(champion={champion and champion.version}, previous={previous and previous.version})")


def promote(tracking: Tracking, name: str, version: str, params: PromoteParams,
            force_reason: str | None = None, max_rounds: int = 5) -> dict[str, Any]:
    """Run the gates for ``version`` and move ``champion`` to it if they all pass (or if forced).

    The gate outcomes and the decision are written to the version whatever the result.
    """
    version = str(version)
    target = tracking.retry(tracking.client.get_model_version, name, version)
    evaluation, validation = version_evidence(tracking, target)
    metric = evaluation.headline
    with registry_lock(tracking, name, params.lock_ttl_seconds):
        for _ in range(max_rounds):
            old = alias_version(tracking, name, CHAMPION)
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
            record_gates(tracking, name, version, outcomes, decision, extra, evaluation)
            if not decision.startswith(CHAMPION) or already:
                break
            # Compare-and-set: the champion must still be the one the gates were evaluated against.
            again = alias_version(tracking, name, CHAMPION)
            if (again and str(again.version)) != (old and str(old.version)):
                continue
            move_champion(tracking, name, version, old)
            break
        else:
            raise RegistryError(f"{name}: the champion kept changing during the promotion of version {version}")
    return {"version": int(version), "decision": decision, "gates": {o.name: o.status for o in outcomes},
            "previous": int(old.version) if old is not None and not already and decision.startswith(CHAMPION) else None}


def rollback(tracking: Tracking, name: str, params: PromoteParams) -> dict[str, Any]:
    """``champion`` back to ``previous``; ``previous`` then points at what that version had replaced."""
    client, retry = tracking.client, tracking.retry
    with registry_lock(tracking, name, params.lock_ttl_seconds):
        champion, previous = alias_version(tracking, name, CHAMPION), alias_version(tracking, name, PREVIOUS)
        if previous is None:
            raise RegistryError(f"{name}: no 'previous' alias, nothing to roll back to")
        if champion is not None and str(champion.version) == str(previous.version):
            raise RegistryError(f"{name}: 'previous' and 'champion' are both version {champion.version} "
                                "(an interrupted promotion); nothing to roll back to")
        retry(client.set_registered_model_alias, name, CHAMPION, str(previous.version))
        before = previous.tags.get("promotion.replaced")
        if before and before != str(previous.version) and _exists(tracking, name, before):
            retry(client.set_registered_model_alias, name, PREVIOUS, before)
        else:
            retry(client.delete_registered_model_alias, name, PREVIOUS)
        if champion is not None:
            retry(client.set_model_version_tag, name, str(champion.version), "promotion.rolled_back_at", now())
            retry(client.set_model_version_tag, name, str(champion.version), "decision", "rolled back")
        retry(client.set_model_version_tag, name, str(previous.version), "promotion.restored_at", now())
        mark_champion(tracking, name, str(previous.version))
        check = alias_version(tracking, name, CHAMPION)
        if check is None or str(check.version) != str(previous.version):
            raise RegistryError(f"{name}: champion changed during the rollback")
    return {"champion": int(previous.version), "rolled_back": int(champion.version) if champion else None}


def _exists(tracking: Tracking, name: str, version: str) -> bool:
    try:
        tracking.retry(tracking.client.get_model_version, name, version)
        return True
    except Exception as exc:
        if is_missing(exc):
            return False
        raise
