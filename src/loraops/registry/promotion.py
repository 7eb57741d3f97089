"""Moving the ``champion`` alias: gated, serialised between concurrent runs, recorded on every version.

MLflow has no conditional alias update, so a compare-and-set alone cannot stop two runs that both read
"champion = 3" from both moving it. The one atomic operation MLflow's stores offer is creating a
registered model under a unique name, so promotions hold a lease: the registered model
``<name>.promotion-lock`` (see :class:`PromotionLease`).

- **Renewed.** While the lease is held, a background thread renews it every ``lock_ttl_seconds / 4``
  (an ``update_registered_model``, which the tracking server stamps with its own clock).
- **Expiry never compares two machines' clocks.** A waiting run breaks the lock only after it has watched
  the lock go unrenewed (same owner, same server timestamp) for ``lock_ttl_seconds`` of its own monotonic
  clock, or at once when the lock's holder is a process of this host that no longer runs.
- **Fenced.** The holder writes its token to the registered model (tag ``loraops.promotion.fence``) when it
  takes the lease; before every alias or decision write it checks that the token is still its own and that
  it renewed the lease within the last ``lock_ttl_seconds / 2``. A run whose lease was broken under it
  stops before writing, and says so.

Inside the lease the previous promotion's leftovers are repaired (:func:`repair_promotion`), the champion is
read, the gates are evaluated against it, the champion is re-read just before the alias moves (a changed
champion starts the round over), and the aliases are read back afterwards. A promotion writes in an order
whose every prefix is repairable: ``decision = promoting`` and ``promotion.replaced`` first, then
``champion``, then ``previous``, then the final decision; a crash anywhere leaves exactly one champion (the
new or the old one), and the next promotion finishes or undoes what is left.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from loraops.config import PromoteParams
from loraops.core import RegistryError
from loraops.core.process import is_dead, process_identity
from loraops.core.tracking import Tracking, is_missing
from loraops.evaluation import EvaluationSummary
from loraops.evaluation.comparison import markdown_table
from loraops.registry.cleanup import REGISTRATION_TAG
from loraops.registry.composition import COMPOSED_TAG, COMPOSITION_FILE, CompositionRecord
from loraops.registry.gates import (ChampionScore, GateOutcome, composition_gates, describe, evaluate_gates, passed,
                                    summarise)
from loraops.registry.lineage import parse_score
from loraops.validation import ValidationSummary

CHAMPION, PREVIOUS, CHALLENGER = "champion", "previous", "challenger"
DECISION_TAG = "decision"  # on every evaluated version: champion, challenger, ... (promoting while it moves)
PROMOTING = "promoting"  # the decision while the alias is moving; the next promotion repairs one left behind
INTERRUPTED_DECISION = "challenger (promotion interrupted; `loraops promote N` runs it again)"
FENCE_TAG = "loraops.promotion.fence"
# On the registered model: the version loraops last made champion, and when. A champion alias that differs
# was moved outside loraops (loraops.registry.hand_moves).
CHAMPION_TAG, CHAMPION_AT_TAG = "loraops.champion", "loraops.champion_at"
log = logging.getLogger(__name__)


class LeaseLost(RegistryError):
    """The promotion lock was broken under its holder (it went unrenewed too long); nothing more is written."""


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


def _error_code(exc: BaseException) -> str | None:
    return getattr(exc, "error_code", None)


class PromotionLease:
    """The promotion lock of registered model ``name``, held by this process (see the module docstring)."""

    def __init__(self, tracking: Tracking, name: str, ttl: float):
        self.tracking, self.name, self.ttl = tracking, name, float(ttl)
        self.lock = lock_name(name)
        self.owner = uuid.uuid4().hex
        self.renewed_at = 0.0  # monotonic time at which the last successful renewal was sent
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- taking and releasing ------------------------------------------------------------------------------
    def acquire(self, wait: float | None = None) -> None:
        """Take the lock: wait for a live holder, break a dead one; RegistryError after ``wait`` seconds."""
        from mlflow.exceptions import MlflowException

        client, retry = self.tracking.client, self.tracking.retry
        deadline = time.monotonic() + (3 * self.ttl if wait is None else wait)
        watched: tuple | None = None  # (owner, server timestamp, description) of the holder we watch
        watched_since = 0.0
        while True:
            sent = time.monotonic()
            try:
                retry(client.create_registered_model, self.lock,
                      tags={"owner": self.owner, "holder": process_identity()},
                      description=f"Held while a loraops run promotes a version of {self.name}; deleted afterwards.")
                break
            except MlflowException as exc:
                if _error_code(exc) != "RESOURCE_ALREADY_EXISTS":
                    raise
            try:
                held = client.get_registered_model(self.lock)
            except MlflowException:
                continue  # released between our create and this read
            if held.tags.get("owner") == self.owner:
                break  # our create went through but its answer was lost, and the retry found it
            marker = (held.tags.get("owner"), held.last_updated_timestamp, held.description)
            if marker != watched:
                watched, watched_since = marker, time.monotonic()
            dead_holder = is_dead(held.tags.get("holder"))
            if dead_holder or time.monotonic() - watched_since > self.ttl:
                # Unrenewed for a whole lease (or its holder is gone): break it, unless it changed hands
                # meanwhile. Two breakers racing here are told apart by the fencing token below.
                log.warning("breaking promotion lock %s of owner %s (%s)", self.lock, marker[0],
                            "its process is gone" if dead_holder else f"unrenewed for {self.ttl:g} s")
                with contextlib.suppress(MlflowException):
                    if client.get_registered_model(self.lock).tags.get("owner") == marker[0]:
                        client.delete_registered_model(self.lock)
                watched = None
                continue
            if time.monotonic() > deadline:
                raise RegistryError(f"registered model {self.lock!r} is held by another promotion "
                                    f"(renewed within the last {self.ttl:g} s); retry later")
            time.sleep(0.1 + (uuid.uuid4().int % 200) / 1000)
        self.renewed_at = sent
        # The fencing token: from now on a holder whose lease was broken finds someone else's token here.
        retry(client.set_registered_model_tag, self.name, FENCE_TAG, self.owner)
        self._thread = threading.Thread(target=self._renew_loop, name=f"renew {self.lock}", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.ttl)
        if self.lost is not None:
            return  # it is someone else's lock now (or nobody's): never delete that
        with contextlib.suppress(Exception):
            if self.tracking.client.get_registered_model(self.lock).tags.get("owner") == self.owner:
                self.tracking.retry(self.tracking.client.delete_registered_model, self.lock)

    # -- keeping it -----------------------------------------------------------------------------------------
    def _renew_loop(self) -> None:
        import mlflow

        # A client of its own: the renewal never waits behind (or retries inside) the promotion's calls.
        client = mlflow.MlflowClient(tracking_uri=self.tracking.uri, registry_uri=self.tracking.uri)
        count = 0
        while not self._stop.wait(self.ttl / 4):
            sent = time.monotonic()
            try:
                owner = client.get_registered_model(self.lock).tags.get("owner")
                if owner != self.owner:
                    self.lost = f"the lock is now held by {owner or 'nobody'}"
                    return
                count += 1
                client.update_registered_model(self.lock, description=f"Held by a loraops promotion of "
                                                                      f"{self.name}; renewal {count}.")
                self.renewed_at = sent
            except Exception as exc:  # noqa: BLE001 - the server may be slow or away: try again next period
                if is_missing(exc):
                    self.lost = "the lock was deleted (broken by another promotion)"
                    return
                log.warning("could not renew %s: %s", self.lock, str(exc).splitlines()[0][:200])

    def check(self, before: str) -> None:
        """Raise :class:`LeaseLost` unless this process still holds the lease; call before every write."""
        if self.lost is None and time.monotonic() - self.renewed_at > self.ttl / 2:
            self.lost = f"not renewed for {time.monotonic() - self.renewed_at:.0f} s"
        if self.lost is None:
            fence = self.tracking.retry(self.tracking.client.get_registered_model, self.name).tags.get(FENCE_TAG)
            if fence != self.owner:
                self.lost = "another promotion took the lock over (fencing token changed)"
        if self.lost is not None:
            raise LeaseLost(f"{self.name}: the promotion lock was lost before {before} ({self.lost}); "
                            "stopped without writing it")


@contextlib.contextmanager
def registry_lock(tracking: Tracking, name: str, ttl: float) -> Iterator[PromotionLease]:
    """Hold the promotion lease of ``name`` for the block."""
    lease = PromotionLease(tracking, name, ttl)
    lease.acquire()
    try:
        yield lease
    finally:
        lease.release()


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


@dataclass(frozen=True)
class Evidence:
    """What a version's gates are evaluated from: a pipeline version's eval.json and validation.json, or a
    composed version's composition record (whose gates compare with its sources' champions)."""

    evaluation: EvaluationSummary | None = None
    validation: ValidationSummary | None = None
    composition: CompositionRecord | None = None

    def gates(self, tracking: Tracking, params: PromoteParams, champion: Any | None,
              version: str) -> list[GateOutcome]:
        """The outcomes for ``version`` against its model's ``champion`` (a version or None)."""
        if self.composition is not None:
            # Each source task's champion now: the composed version must keep up with what each task serves.
            champions = {s.model: champion_score(alias_version(tracking, s.model, CHAMPION), s.headline)
                         for s in self.composition.sources}
            return composition_gates(self.composition, champions, params)
        assert self.evaluation is not None
        return evaluate_gates(self.evaluation, self.validation, params,
                              champion_score(champion, self.evaluation.headline), version)


def gate_evidence(tracking: Tracking, version: Any) -> Evidence:
    """The evidence ``version`` was registered with, read back from its run (:class:`Evidence`)."""
    if version.tags.get(COMPOSED_TAG) != "true":
        evaluation, validation = version_evidence(tracking, version)
        return Evidence(evaluation, validation)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = tracking.retry(tracking.client.download_artifacts, version.run_id,
                                   f"reports/{COMPOSITION_FILE}", tmp)
            return Evidence(composition=CompositionRecord.read(Path(local)))
        except Exception as exc:
            raise RegistryError(f"version {version.version}: its run {version.run_id} has no readable "
                                f"reports/{COMPOSITION_FILE} ({str(exc).splitlines()[0]})") from None


def record_gates(tracking: Tracking, lease: PromotionLease | None, name: str, version: str,
                 outcomes: list[GateOutcome], decision: str, extra: dict[str, str] | None = None,
                 evaluation: EvaluationSummary | None = None, notes: list[str] | None = None) -> None:
    """``decision`` and ``gates`` tags on the version; the description holds the gate table with each gate's
    reason, when it was evaluated, and the comparison of base, adapter and full fine-tune. Inside a
    promotion the lease is checked first (``lease`` None: a caller that moves no alias)."""
    client, retry = tracking.client, tracking.retry
    tags = {"gates": summarise(outcomes), DECISION_TAG: decision, **(extra or {})}
    if lease is not None:
        lease.check(f"recording the gates of version {version}")
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


def move_champion(tracking: Tracking, lease: PromotionLease, name: str, version: str, old: Any | None,
                  decision: str, outcomes: list[GateOutcome], evaluation: EvaluationSummary | None = None) -> None:
    """champion -> version, previous -> old champion, then the final decision, then read both back.

    In this order every prefix is repairable (:func:`repair_promotion`): ``promotion.replaced`` names the
    old champion before the alias moves, and ``previous`` follows ``champion``, never the other way round.
    """
    client, retry = tracking.client, tracking.retry
    if old is not None:
        lease.check(f"recording what version {version} replaces")
        retry(client.set_model_version_tag, name, version, "promotion.replaced", str(old.version))
    lease.check(f"moving {CHAMPION} to version {version}")
    retry(client.set_registered_model_alias, name, CHAMPION, version)
    if old is not None:
        lease.check(f"moving {PREVIOUS} to version {old.version}")
        retry(client.set_registered_model_alias, name, PREVIOUS, str(old.version))
    lease.check(f"recording the promotion of version {version}")
    retry(client.set_model_version_tag, name, version, "promotion.promoted_at", now())
    retry(client.set_model_version_tag, name, version, DECISION_TAG, decision)
    retry(client.update_model_version, name, version,
          description=describe(outcomes, decision, markdown_table(evaluation) if evaluation is not None else None,
                               [f"Promoted {now()}."]))
    mark_champion(tracking, name, version)
    champion, previous = alias_version(tracking, name, CHAMPION), alias_version(tracking, name, PREVIOUS)
    if champion is None or str(champion.version) != version or \
            (old is not None and (previous is None or str(previous.version) != str(old.version))):
        raise RegistryError(f"{name}: aliases changed under the promotion of version {version} "
                            f"(champion={champion and champion.version}, previous={previous and previous.version})")


def repair_promotion(tracking: Tracking, lease: PromotionLease, name: str) -> list[str]:
    """Finish or undo what an interrupted promotion or rollback left (call inside the lease).

    The invariant: ``previous`` points at the version the champion replaced (its ``promotion.replaced``) and
    exists only then; a version is marked ``promoting`` only while its promotion runs. Returns one line per
    repair.
    """
    client, retry = tracking.client, tracking.retry
    done: list[str] = []
    champion, previous = alias_version(tracking, name, CHAMPION), alias_version(tracking, name, PREVIOUS)
    if champion is not None:
        replaced = champion.tags.get("promotion.replaced")
        if replaced == str(champion.version) or (replaced and not _exists(tracking, name, replaced)):
            replaced = None
        current = str(previous.version) if previous is not None else None
        if current != replaced:
            lease.check(f"repairing {PREVIOUS}")
            if replaced is None:
                retry(client.delete_registered_model_alias, name, PREVIOUS)
            else:
                retry(client.set_registered_model_alias, name, PREVIOUS, replaced)
            done.append(f"{PREVIOUS} moved from {current} to {replaced} (what champion {champion.version} replaced)")
    promoting = retry(client.search_model_versions, f"name='{name}' and tag.`{DECISION_TAG}` = '{PROMOTING}'")
    for version in promoting:
        number = str(version.version)
        lease.check(f"repairing the decision of version {number}")
        if champion is not None and str(champion.version) == number:
            decision = "champion (forced)" if version.tags.get("promotion.forced_by") else CHAMPION
            retry(client.set_model_version_tag, name, number, "promotion.promoted_at", now())
            mark_champion(tracking, name, number)  # loraops moved this alias: no hand move to find
        else:
            decision = INTERRUPTED_DECISION
        retry(client.set_model_version_tag, name, number, DECISION_TAG, decision)
        done.append(f"version {number}: interrupted promotion recorded as {decision!r}")
    for line in done:
        log.warning("%s: %s", name, line)
    return done


def require_complete(version: Any, name: str) -> None:
    """Only a fully registered version may hold an alias (README: *Half-made versions*)."""
    state = version.tags.get(REGISTRATION_TAG)
    if state != "complete" or getattr(version, "status", "READY") != "READY":
        raise RegistryError(f"{name} version {version.version} is not a complete registration "
                            f"({REGISTRATION_TAG}={state}, status {getattr(version, 'status', '?')}); "
                            "refusing to give it an alias")


def promote(tracking: Tracking, name: str, version: str, params: PromoteParams,
            force_reason: str | None = None, max_rounds: int = 5, make_challenger: bool = False) -> dict[str, Any]:
    """Run the gates for ``version`` and move ``champion`` to it if they all pass (or if forced).

    ``version`` must be complete. The gate outcomes and the decision are written to the version whatever the
    result. ``make_challenger`` (a new registration) also moves ``challenger`` to it, inside the same lease,
    unless a newer version holds it already.
    """
    version = str(version)
    target = tracking.retry(tracking.client.get_model_version, name, version)
    require_complete(target, name)
    evidence = gate_evidence(tracking, target)
    with registry_lock(tracking, name, params.lock_ttl_seconds) as lease:
        repaired = repair_promotion(tracking, lease, name)
        if make_challenger:
            current = alias_version(tracking, name, CHALLENGER)
            if current is None or int(current.version) < int(version):
                lease.check(f"moving {CHALLENGER} to version {version}")
                tracking.retry(tracking.client.set_registered_model_alias, name, CHALLENGER, version)
        for _ in range(max_rounds):
            old = alias_version(tracking, name, CHAMPION)
            outcomes = evidence.gates(tracking, params, old, version)
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
            moving = decision.startswith(CHAMPION) and not already
            record_gates(tracking, lease, name, version, outcomes, PROMOTING if moving else decision, extra,
                         evidence.evaluation)
            if not moving:
                break
            # Compare-and-set: the champion must still be the one the gates were evaluated against.
            again = alias_version(tracking, name, CHAMPION)
            if (again and str(again.version)) != (old and str(old.version)):
                continue
            move_champion(tracking, lease, name, version, old, decision, outcomes, evidence.evaluation)
            break
        else:
            raise RegistryError(f"{name}: the champion kept changing during the promotion of version {version}")
    return {"version": int(version), "decision": decision, "gates": {o.name: o.status for o in outcomes},
            "reasons": {o.name: o.reason for o in outcomes},
            "previous": int(old.version) if old is not None and not already and decision.startswith(CHAMPION) else None,
            "repaired": repaired}


def rollback(tracking: Tracking, name: str, params: PromoteParams) -> dict[str, Any]:
    """``champion`` back to ``previous``; ``previous`` then points at what that version had replaced."""
    client, retry = tracking.client, tracking.retry
    with registry_lock(tracking, name, params.lock_ttl_seconds) as lease:
        repair_promotion(tracking, lease, name)
        champion, previous = alias_version(tracking, name, CHAMPION), alias_version(tracking, name, PREVIOUS)
        if previous is None:
            raise RegistryError(f"{name}: no 'previous' alias, nothing to roll back to")
        if champion is not None and str(champion.version) == str(previous.version):
            raise RegistryError(f"{name}: 'previous' and 'champion' are both version {champion.version} "
                                "(an interrupted promotion); nothing to roll back to")
        lease.check(f"moving {CHAMPION} back to version {previous.version}")
        retry(client.set_registered_model_alias, name, CHAMPION, str(previous.version))
        before = previous.tags.get("promotion.replaced")
        lease.check(f"moving {PREVIOUS}")
        if before and before != str(previous.version) and _exists(tracking, name, before):
            retry(client.set_registered_model_alias, name, PREVIOUS, before)
        else:
            retry(client.delete_registered_model_alias, name, PREVIOUS)
        lease.check("recording the rollback")
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
    return tracking.exists(tracking.client.get_model_version, name, version)
