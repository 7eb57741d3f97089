"""Fault injection at a window of registration or promotion: the real ``loraops`` command in a child process
whose MLflow client is made to SIGKILL itself, SIGSTOP itself, or SIGKILL the tracking server at one exact
call. Nothing is mocked: every call before (and, for a stopped process, after) the fault reaches the real
store. Used by tests/registry/test_fault_windows.py and bench/bench_faults.py.

    python -m tests.helpers.faults "after:create_model_version:-:kill" stage register -p params.yaml ...

A fault is ``WHEN:METHOD:MATCH:ACTION``: ``WHEN`` is ``before`` or ``after`` the ``MlflowClient`` method
``METHOD`` runs, on its first call whose arguments' repr contains ``MATCH`` (``-``: any call; quote an
argument, ``'champion'``, so that a model name containing the word does not match); ``ACTION`` is ``kill``
(SIGKILL this process), ``stop`` (SIGSTOP it; the test sends SIGCONT) or ``kill-server`` (SIGKILL the process
group in ``LORAOPS_FAULT_SERVER_PGID``, then go on).
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
READY_MARK = "LORAOPS_FAULT_FIRED"


@dataclass(frozen=True)
class Window:
    """A named window of registration/promotion and the fault that opens it."""

    name: str
    fault: str
    what: str


# Every window between two writes of a registration and its promotion, in the order they happen.
WINDOWS = (
    Window("version-created", "after:create_model_version:-:kill",
           "the version exists, tagged incomplete, no alias"),
    Window("version-complete", "after:set_model_version_tag:'complete':kill",
           "the version is complete, no alias points at it yet"),
    Window("lock-taken", "after:create_registered_model:promotion-lock:kill",
           "the promotion lock is held, nothing moved"),
    Window("challenger-moved", "after:set_registered_model_alias:'challenger':kill",
           "challenger points at the new version, the gates not yet recorded"),
    Window("gates-recorded", "after:update_model_version:promoting:kill",
           "the gates and decision 'promoting' are recorded, champion not moved"),
    Window("champion-moved", "after:set_registered_model_alias:'champion':kill",
           "champion points at the new version, previous not yet moved"),
    Window("previous-moved", "after:set_registered_model_alias:'previous':kill",
           "both aliases moved, the final decision not recorded, the lock still held"),
)


def install(fault: str) -> None:
    """Patch ``mlflow.MlflowClient`` so that ``fault`` fires once."""
    import mlflow

    when, method, match, action = fault.split(":", 3)
    original = getattr(mlflow.MlflowClient, method)
    fired = {"done": False}

    def fire() -> None:
        fired["done"] = True
        print(READY_MARK, flush=True)
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "stop":
            os.kill(os.getpid(), signal.SIGSTOP)
        elif action == "kill-server":
            os.killpg(int(os.environ["LORAOPS_FAULT_SERVER_PGID"]), signal.SIGKILL)
        else:
            raise ValueError(f"unknown fault action {action!r}")

    @functools.wraps(original)
    def patched(self: Any, *args: Any, **kwargs: Any) -> Any:
        hit = not fired["done"] and (match == "-" or match in repr((args, kwargs)))
        if hit and when == "before":
            fire()
        result = original(self, *args, **kwargs)
        if hit and when == "after":
            fire()
        return result

    setattr(mlflow.MlflowClient, method, patched)


def command(fault: str, *args: str) -> list[str]:
    """The command line that runs ``loraops ARGS`` with ``fault`` installed."""
    return [sys.executable, "-m", "tests.helpers.faults", fault, *args]


def run(fault: str, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``loraops ARGS`` with ``fault`` to the end (a kill ends it with -9)."""
    full_env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO),
                                                            os.environ.get("PYTHONPATH", "")]), **(env or {}))
    return subprocess.run(command(fault, *args), cwd=cwd or REPO, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def main() -> None:
    fault, args = sys.argv[1], sys.argv[2:]
    install(fault)
    from loraops.cli import app

    app(args=args, prog_name="loraops")


if __name__ == "__main__":
    main()
