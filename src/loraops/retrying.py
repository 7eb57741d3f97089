"""Bounded retries with exponential backoff for calls to the MLflow tracking server.

MLflow's own HTTP retries (7 by default, backoff factor 2: minutes of waiting) are turned off unless the
user set ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, so that ``registry.retries`` and ``registry.backoff_seconds``
alone decide how long a run waits for a server that is down before failing cleanly.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)

# Errors that say the request itself is wrong: retrying would give the same answer.
PERMANENT_CODES = {"RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE",
                   "NOT_FOUND", "PERMISSION_DENIED", "UNAUTHENTICATED", "INVALID_STATE", "BAD_REQUEST"}


def quiet_mlflow_client() -> None:
    """Our retries instead of MLflow's (unless the user set theirs), and no download progress bars."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


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
                            str(exc).splitlines()[0][:200], attempt + 1, self.retries, wait)
                time.sleep(wait)
        raise AssertionError("unreachable")
