"""The one way loraops talks to MLflow: one connection per project and one retry layer for every call.

:func:`connect` points MLflow at the project's own store (``mlflow.db`` and ``mlartifacts/`` beside
``params.yaml``) or at ``MLFLOW_TRACKING_URI`` when that is set, and returns a :class:`Tracking` that holds
the client and the :class:`Retrier`. Every call to the tracking server goes through ``tracking.retry``:
``registry.retries`` tries after the first, waiting ``registry.backoff_seconds * 2**attempt``. MLflow's own
HTTP retries (7 by default, minutes of waiting) are off unless the user set
``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, and the Prefect flows do not retry these calls again: this is the only
layer that retries the tracking server (the README's *Retries* says who retries what). A database store
(``postgresql://``, ``mysql://``, ``mssql://``) is reached once under the same retries before MLflow opens it:
MLflow creates its SQLAlchemy engine with ten tries of its own (about 100 s of waiting), which would
otherwise run inside every one of ours.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable, Protocol, TypeVar

from loraops.core.errors import RegistryError
from loraops.core.layout import Layout

T = TypeVar("T")
log = logging.getLogger(__name__)

# Errors that say the request itself is wrong: retrying would give the same answer.
PERMANENT_CODES = {"RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE",
                   "NOT_FOUND", "PERMISSION_DENIED", "UNAUTHENTICATED", "INVALID_STATE", "BAD_REQUEST"}


class RetryPolicy(Protocol):
    """What the retry layer needs from params (``registry.retries`` / ``registry.backoff_seconds``)."""

    retries: int
    backoff_seconds: float


def quiet_mlflow_client() -> None:
    """Our retries instead of MLflow's (unless the user set theirs), no telemetry, no progress bars."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def error_code(exc: BaseException) -> str | None:
    return getattr(exc, "error_code", None)


def transient(exc: BaseException) -> bool:
    """Connection failures, timeouts, 5xx and database-busy errors are worth another try."""
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        return error_code(exc) not in PERMANENT_CODES
    import requests

    return isinstance(exc, (requests.exceptions.RequestException, OSError, TimeoutError)) or \
        type(exc).__name__ in {"OperationalError", "MaxRetryError"}


class Retrier:
    """``retrier(fn, *args)`` calls ``fn`` and retries transient failures with exponential backoff."""

    def __init__(self, retries: int, backoff_seconds: float):
        self.retries = retries
        self.backoff_seconds = backoff_seconds

    def __call__(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        for attempt in range(self.retries + 1):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if attempt == self.retries or not transient(exc):
                    raise
                wait = self.backoff_seconds * 2 ** attempt
                log.warning("%s failed (%s); retry %d/%d in %.1fs", getattr(fn, "__name__", fn),
                            redact_url((str(exc).splitlines() or [""])[0][:200]), attempt + 1, self.retries, wait)
                time.sleep(wait)
        raise AssertionError("unreachable")


def is_missing(exc: BaseException) -> bool:
    """MLflow's way of saying "no such run/model/alias" (the codes differ between stores)."""
    return error_code(exc) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


@dataclass
class Tracking:
    """A connection to the project's tracking store: ``client`` (explicit ids) and ``retry`` (the one retry
    layer). The fluent API (``mlflow.start_run``) points at the same store after :func:`connect`."""

    layout: Layout
    uri: str
    client: Any
    retry: Retrier

    def experiment_id(self, name: str) -> str:
        """The experiment ``name``, created on first use (artifacts beside the project's own store)."""
        found = self.retry(self.client.get_experiment_by_name, name)
        if found is not None:
            return found.experiment_id
        location = self.layout.artifact_root.as_uri() if self.uri == self.layout.local_tracking_uri() else None
        try:
            return self.retry(self.client.create_experiment, name, artifact_location=location)
        except Exception as exc:
            if error_code(exc) != "RESOURCE_ALREADY_EXISTS":  # created by a concurrent run meanwhile
                raise
            return self.retry(self.client.get_experiment_by_name, name).experiment_id

    def exists(self, get: Any, *args: Any) -> bool:
        """Whether ``get(*args)`` (a client getter: a registered model, a version) finds something; "not
        found" is False, any other failure is raised after the retries."""
        try:
            self.retry(get, *args)
            return True
        except Exception as exc:
            if is_missing(exc):
                return False
            raise


DATABASE_SCHEMES = {"postgresql", "mysql", "mssql"}  # MLflow's SQLAlchemy stores on a server (not sqlite)


def reach_database(uri: str) -> None:
    """Open and close one connection to a database tracking store (no pool kept)."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(uri, poolclass=NullPool)
    try:
        with engine.connect():
            pass
    finally:
        engine.dispose()


def connect(layout: Layout, policy: RetryPolicy) -> Tracking:
    """Point MLflow at the project's store (or ``MLFLOW_TRACKING_URI``); the only place loraops does so."""
    import mlflow

    quiet_mlflow_client()
    uri = layout.tracking_uri()
    retry = Retrier(policy.retries, policy.backoff_seconds)
    if uri.split(":", 1)[0].split("+", 1)[0].lower() in DATABASE_SCHEMES:
        try:
            retry(reach_database, uri)
        except Exception as exc:
            if not transient(exc):
                raise
            reason = (redact_url(str(getattr(exc, "orig", None) or exc)).strip().splitlines() or [""])[0]
            raise RegistryError(f"{redact_url(uri)}: the tracking database does not answer "
                                f"({policy.retries} retries): {reason}") from None
    exported = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    # set_tracking_uri also exports MLFLOW_TRACKING_URI; undo that so the user's setting stays the only source.
    if exported is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    return Tracking(layout, uri, client, retry)


# A URL's user-info (``user:password@``) and the query parameters that commonly carry credentials.
# Greedy up to the last "@" of the URL, so an unescaped "@" or "/" in a password is still covered.
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^\s'\"<>]*)@")
_SECRET_QUERY = re.compile(r"(?P<key>[?&;](?:password|passwd|pwd|pass|token|access_token|secret|secret_key|"
                           r"access_key|api_key|apikey|key|sig|signature|x-amz-signature|x-amz-credential|"
                           r"x-amz-security-token|sslpassword)=)[^&;\s'\"<>]*", re.IGNORECASE)


def redact_url(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced by ``***``: the password of a user-info
    (``postgresql://user:***@host/db``; a bare token ``https://***@host``) and credential-like query
    parameters (``?password=***``). The one redaction every output, tag, log line and error goes through;
    it takes a single URL or any text that may contain URLs (a dvc error, an exception message)."""
    def userinfo(match: re.Match) -> str:
        user, sep, _ = match["userinfo"].partition(":")
        return f"{match['scheme']}{user}:***@" if sep else f"{match['scheme']}***@"

    return _SECRET_QUERY.sub(lambda m: f"{m['key']}***", _URL_USERINFO.sub(userinfo, str(text)))


def git_tags(root: Path) -> dict[str, str]:
    """``git.commit`` and ``git.dirty`` of the project, for the runs and versions it makes."""
    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else ""

    commit = git("rev-parse", "HEAD")
    return {"git.commit": commit or "none", "git.dirty": str(bool(git("status", "--porcelain"))).lower()}
