"""Clearing away half-made registrations: the one module that deletes MLflow model versions.

The rule, the only one:

    A model version may be deleted only when it is NOT marked complete (tag ``loraops.registration``),
    NO alias points at it, and either the caller created it (the failure path of the registration that
    made it) or the process that was registering it is gone: it has stayed incomplete for longer than
    ``promote.lock_ttl_seconds``, or its ``loraops.registration.owner`` names a process of this host that no
    longer runs. Anything else is never deleted: a version that looks broken but fails the rule is tagged
    ``loraops.registration.kept`` with the reason, and stays.

A complete version is never deleted, whatever failed after it was completed: a failure after promotion
leaves the new champion where it is. Every deletion in loraops goes through :func:`_delete_if_allowed`.
"""

from __future__ import annotations

import time
from typing import Any

from loraops.core.process import is_dead
from loraops.core.tracking import Tracking, is_missing

REGISTRATION_TAG = "loraops.registration"  # "incomplete" until the version is fully registered, then "complete"
OWNER_TAG = "loraops.registration.owner"  # the registering process (loraops.core.process.process_identity)
KEPT_TAG = "loraops.registration.kept"


def aliases_by_version(tracking: Tracking, name: str) -> dict[str, list[str]]:
    """``{version: [aliases]}`` of registered model ``name`` (search results leave aliases out)."""
    registered = tracking.retry(tracking.client.get_registered_model, name)
    by_version: dict[str, list[str]] = {}
    for alias, number in registered.aliases.items():
        by_version.setdefault(str(number), []).append(alias)
    return by_version


def why_kept(version: Any, aliases: list[str], *, created_here: bool, grace_seconds: float) -> str | None:
    """None when the rule allows deleting ``version``; otherwise the reason it must stay."""
    if version.tags.get(REGISTRATION_TAG) == "complete":
        return "it is marked complete"
    if aliases:
        return f"alias {', '.join(sorted(aliases))} points at it"
    if not created_here and not is_dead(version.tags.get(OWNER_TAG)) and \
            version.creation_timestamp >= (time.time() - grace_seconds) * 1000:
        return f"another run may still be registering it (younger than {grace_seconds:g} s)"
    return None


def _delete_if_allowed(tracking: Tracking, name: str, version: Any, *, created_here: bool,
                       grace_seconds: float) -> str | None:
    """Delete ``version`` if the rule allows; returns the reason it was kept (tagged on it), or None."""
    number = str(version.version)
    reason = why_kept(version, aliases_by_version(tracking, name).get(number, []), created_here=created_here,
                      grace_seconds=grace_seconds)
    if reason is None:
        tracking.retry(tracking.client.delete_model_version, name, number)
        return None
    if version.tags.get(REGISTRATION_TAG) != "complete":
        tracking.retry(tracking.client.set_model_version_tag, name, number, KEPT_TAG, reason)
    return reason


def discard_own(tracking: Tracking, name: str, number: str) -> str:
    """The failure path of a registration: remove the version it created, if the rule allows.
    Returns one line for the user saying what was left."""
    try:
        version = tracking.retry(tracking.client.get_model_version, name, number)
        reason = _delete_if_allowed(tracking, name, version, created_here=True, grace_seconds=0)
    except Exception:  # the server is gone: the next run's repair finds it
        return f"version {number} is tagged {REGISTRATION_TAG}=incomplete; the next run's check deletes it"
    if reason is None:
        return f"half-registered version {number} was deleted"
    return f"version {number} stays registered ({reason})"


def repair(tracking: Tracking, name: str, grace_seconds: float) -> list[str]:
    """Before a registration: delete what dead runs left half-registered (by the rule), so no listing or
    alias meets a broken version. Returns what was done, one line per version."""
    try:
        versions = tracking.retry(tracking.client.search_model_versions, f"name='{name}'")
    except Exception as exc:
        if is_missing(exc):
            return []
        raise
    done, cutoff = [], (time.time() - grace_seconds) * 1000
    for version in versions:
        unfinished = version.tags.get(REGISTRATION_TAG) == "incomplete" or version.status != "READY"
        if not unfinished or (version.creation_timestamp >= cutoff and not is_dead(version.tags.get(OWNER_TAG))):
            continue  # complete, or possibly still being registered by a live run: left alone
        reason = _delete_if_allowed(tracking, name, version, created_here=False, grace_seconds=grace_seconds)
        done.append(f"deleted version {version.version} (registration never finished)" if reason is None
                    else f"kept version {version.version}: {reason}")
    return done
