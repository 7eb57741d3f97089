"""``champion`` moved outside loraops, found and handled before any loraops command uses the registry.

Anyone with access can move an alias in the MLflow UI (the version page's alias editor) or with a client;
nothing in MLflow runs the gates then. MLflow 3's registry webhooks (``model_version_alias.created``) would
report it, but only to an HTTP receiver the tracking server can reach (it refuses private addresses unless
told otherwise), and the project's own store has no server at all. So every loraops command that touches
the registry (``register``, ``models``, ``promote``, ``rollback``, ``predict``, ``restore``) first calls
:func:`check_champion`, which compares the alias with the version loraops last made champion (the registered
model's ``loraops.champion`` tag, :func:`loraops.registry.promotion.mark_champion`). When they differ:

- the gates run for the version the alias now names, against the champion it replaced, and the outcome is
  recorded on it like any promotion (``decision``, ``gates``, the table in the description), with
  ``hand_move.*`` tags: when it was found, between which times it happened, who did it (MLflow records no
  author for alias changes, and the tag says so), what it replaced and what loraops did;
- ``previous`` is set to the replaced champion;
- with ``promote.hand_moves: revert`` champion goes back to the replaced version (or is removed when there
  was none), and the line logged says so. The default, ``record``, keeps the move, recorded. Nothing is
  ever accepted silently.

The check reads two values without the promotion lock; only a mismatch takes the lock and reads again, so a
promotion in progress elsewhere (alias moved, marker not yet written) is waited for, not mistaken for a hand
move.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from loraops.config import PromoteParams
from loraops.core import RegistryError
from loraops.core.tracking import Tracking, is_missing
from loraops.registry.gates import GateOutcome, passed, summarise
from loraops.registry.promotion import (CHAMPION, CHAMPION_AT_TAG, CHAMPION_TAG, PREVIOUS, Evidence, PromotionLease,
                                        alias_version, gate_evidence, mark_champion, now, record_gates,
                                        registry_lock, repair_promotion)

log = logging.getLogger(__name__)
UNKNOWN_AUTHOR = "not recorded (MLflow keeps no author for alias changes)"


@dataclass(frozen=True)
class HandMove:
    """What the check found and did; ``line`` is the one line the command prints."""

    version: str | None  # what champion names now (None: the alias was removed)
    replaced: str | None  # what loraops had made champion
    gates: str  # the gates tag of the moved-to version ("all pass", "fail: ...", or why not evaluated)
    action: str  # "recorded" or "reverted"
    line: str


def _marker(tracking: Tracking, name: str) -> tuple[str | None, str | None] | None:
    """(version loraops made champion or None, when); None when loraops never recorded one."""
    try:
        model = tracking.retry(tracking.client.get_registered_model, name)
    except Exception as exc:
        if is_missing(exc):
            return None
        raise
    if CHAMPION_TAG not in model.tags:
        return None
    value = model.tags[CHAMPION_TAG]
    return (None if value == "none" else value), model.tags.get(CHAMPION_AT_TAG)


def _moved_by_loraops(version: Any, marked_at: str | None) -> bool:
    """The version's own promotion or rollback record is newer than the marker: loraops moved the alias and
    failed before writing the marker, which is not a hand move. (A version promoted by loraops earlier and
    moved back to by hand has an older record, so it counts as a hand move.)"""
    times = [version.tags.get(k) for k in ("promotion.promoted_at", "promotion.restored_at")]
    times = [t for t in times if t]
    return bool(times) and (marked_at is None or max(times) > marked_at)


def check_champion(tracking: Tracking, name: str, params: PromoteParams) -> HandMove | None:
    """Find a hand move of ``champion`` and record it (and revert it under ``promote.hand_moves: revert``);
    None when the alias is where loraops left it."""
    marker = _marker(tracking, name)
    current = alias_version(tracking, name, CHAMPION)
    if marker is None:
        if current is not None and _moved_by_loraops(current, None):
            mark_champion(tracking, name, str(current.version))  # a registry from before the marker existed
        elif current is None and _exists(tracking, name):
            mark_champion(tracking, name, None)
        if current is None or _moved_by_loraops(current, None):
            return None
    elif (marker[0] or None) == (str(current.version) if current is not None else None):
        return None
    with registry_lock(tracking, name, params.lock_ttl_seconds) as lease:
        # An interrupted promotion moved the alias too: finish or undo it first, it is no hand move.
        repair_promotion(tracking, lease, name)
        marker = _marker(tracking, name) or (None, None)
        current = alias_version(tracking, name, CHAMPION)
        now_version = str(current.version) if current is not None else None
        if marker[0] == now_version:
            return None  # a promotion elsewhere finished meanwhile
        if current is not None and _moved_by_loraops(current, marker[1]):
            mark_champion(tracking, name, now_version)
            return None
        return _handle(tracking, lease, name, params, current, marker)


def _handle(tracking: Tracking, lease: PromotionLease, name: str, params: PromoteParams, current: Any | None,
            marker: tuple[str | None, str | None]) -> HandMove:
    """Record (and under ``revert`` undo) the hand move, inside the promotion lease: every write is fenced."""
    client, retry = tracking.client, tracking.retry
    replaced, marked_at = marker
    found = now()
    window = f"after {marked_at}, before {found}" if marked_at else f"before {found}"
    revert = params.hand_moves == "revert"
    if current is None:
        action = "reverted" if revert and replaced is not None else "recorded"
        if replaced is not None:
            tags = {"hand_move.found_at": found, "hand_move.when": window, "hand_move.by": UNKNOWN_AUTHOR,
                    "hand_move.action": f"champion alias removed by hand; {action}"}
            for key, value in tags.items():
                retry(client.set_model_version_tag, name, replaced, key, value)
            if revert:
                lease.check(f"moving {CHAMPION} back to version {replaced}")
                retry(client.set_registered_model_alias, name, CHAMPION, replaced)
        if not revert or replaced is None:
            mark_champion(tracking, name, None)
        line = (f"{name}: the champion alias (version {replaced}) was removed outside loraops ({window}); "
                + (f"reverted: champion is version {replaced} again (promote.hand_moves: revert)" if revert
                   else "recorded; there is no champion now (promote.hand_moves: record)"))
        log.warning(line)
        return HandMove(None, replaced, "not evaluated", action, line)

    version = str(current.version)
    outcomes, gates, evidence = _gates(tracking, name, version, replaced, params)
    action = "reverted" if revert else "recorded"
    verdict = "not evaluated" if not outcomes else ("passes the gates" if passed(outcomes) else "fails the gates")
    decision = (f"not champion (moved to champion by hand, reverted; {verdict})" if revert
                else f"champion (moved by hand; {verdict})")
    tags = {"hand_move.found_at": found, "hand_move.when": window, "hand_move.by": UNKNOWN_AUTHOR,
            "hand_move.replaced": replaced or "none", "hand_move.action": action}
    note = (f"**Moved to champion outside loraops** ({window}; author {UNKNOWN_AUTHOR}), replacing "
            f"{'version ' + replaced if replaced else 'no champion'}; "
            + ("moved back by loraops (promote.hand_moves: revert)." if revert
               else "kept and recorded (promote.hand_moves: record)."))
    if outcomes:
        record_gates(tracking, lease, name, version, outcomes, decision, tags, evidence.evaluation, [note])
    else:
        lease.check(f"recording the hand move to version {version}")
        for key, value in {**tags, "gates": gates, "decision": decision}.items():
            retry(client.set_model_version_tag, name, version, key, value)
    lease.check(f"{'reverting' if revert else 'recording'} the hand move of {CHAMPION}")
    if revert:
        if replaced is not None and _version_exists(tracking, name, replaced):
            retry(client.set_registered_model_alias, name, CHAMPION, replaced)
        else:
            retry(client.delete_registered_model_alias, name, CHAMPION)
        mark_champion(tracking, name, replaced)
        line = (f"{name}: champion was moved to version {version} outside loraops ({window}); gates: {gates}; "
                f"reverted: champion is " + (f"version {replaced} again" if replaced else "unset again")
                + " (promote.hand_moves: revert)")
    else:
        if replaced is not None and replaced != version and _version_exists(tracking, name, replaced):
            retry(client.set_registered_model_alias, name, PREVIOUS, replaced)
        mark_champion(tracking, name, version)
        line = (f"{name}: champion was moved to version {version} outside loraops ({window}); gates: {gates}; "
                f"recorded on the version, previous = {replaced or 'none'} (promote.hand_moves: record; "
                "set it to revert to move such changes back)")
    log.warning(line)
    return HandMove(version, replaced, gates, action, line)


def _gates(tracking: Tracking, name: str, version: str, replaced: str | None,
           params: PromoteParams) -> tuple[list[GateOutcome], str, Evidence]:
    """The gates for ``version`` against the champion it replaced; ([], why, no evidence) when its evidence
    is missing."""
    target = tracking.retry(tracking.client.get_model_version, name, version)
    try:
        evidence = gate_evidence(tracking, target)
    except RegistryError as exc:
        return [], f"not evaluated ({exc})", Evidence()
    old = tracking.retry(tracking.client.get_model_version, name, replaced) if replaced and \
        _version_exists(tracking, name, replaced) else None
    outcomes = evidence.gates(tracking, params, old, version)
    return outcomes, summarise(outcomes), evidence


def _exists(tracking: Tracking, name: str) -> bool:
    return tracking.exists(tracking.client.get_registered_model, name)


def _version_exists(tracking: Tracking, name: str, version: str) -> bool:
    return tracking.exists(tracking.client.get_model_version, name, version)
