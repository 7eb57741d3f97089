"""Which process holds what: process identities that survive pid reuse, and the one lock per project.

A process identity is ``host:pid:start`` (``start`` is the kernel's start time of the process), written
wherever a process claims something another process may later have to judge as abandoned: a search trial,
a half-made model version, the promotion lock. :func:`is_dead` answers only when it can be sure (same host,
and that pid is gone or is another process now); a process on another host is never judged dead from here,
so there the caller falls back to its time limit.

:func:`project_lock` is the lock ``loraops run``, ``loraops stage`` and the retrain flow take on a project
folder, so two of them never interleave their writes to the same outputs (checkpoints, atomic folders, the
uploaded adapter). It is an ``flock`` on ``.loraops/project.lock``: the kernel releases it when the holder
dies, so it can never be left stale.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

from loraops.core.errors import LoraopsError

LOCK_FILE = "project.lock"


class ProjectBusy(LoraopsError):
    """Another loraops process holds the project's lock."""


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or None when it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22, counted after the command name, which is in parentheses and may itself hold spaces.
    return stat.rsplit(")", 1)[1].split()[19]


def process_identity(pid: int | None = None) -> str:
    """``host:pid:start`` of this process (or ``pid``)."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_time(pid) or '?'}"


def _local_process(identity: str | None) -> tuple[int, str] | None:
    """(pid, start time) when ``identity`` names a process of this host that can be checked; None otherwise."""
    if not identity:
        return None
    try:
        host, pid_text, start = identity.rsplit(":", 2)
        pid = int(pid_text)
    except ValueError:
        return None
    if host != socket.gethostname() or start == "?" or pid <= 0 or not Path("/proc").is_dir():
        return None
    return pid, start


def is_dead(identity: str | None) -> bool:
    """True only when ``identity`` names a process of this host that no longer runs (a reused pid counts
    as gone). Unknown, malformed or other hosts' identities are never dead from here."""
    local = _local_process(identity)
    if local is None:
        return False
    now = _start_time(local[0])
    return now is None or now != local[1]


def is_alive_here(identity: str | None) -> bool:
    """True only when ``identity`` names a process of this host that still runs (the same process, not a
    reused pid). False for other hosts and whenever it cannot be told."""
    local = _local_process(identity)
    return local is not None and _start_time(local[0]) == local[1]


@contextlib.contextmanager
def project_lock(cache_dir: Path, what: str) -> Iterator[None]:
    """Hold the project's lock (``cache_dir/project.lock``) for the block; :class:`ProjectBusy` at once,
    naming the holder, when another process holds it."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / LOCK_FILE
    handle = path.open("a+")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            try:
                holder = json.loads(handle.read() or "{}")
            except ValueError:
                holder = {}
            raise ProjectBusy(
                f"{cache_dir.parent}: another loraops process is working on this project "
                f"({holder.get('what', 'unknown')}, pid {holder.get('pid', '?')}, since {holder.get('since', '?')}); "
                f"wait for it to finish (lock {path})") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"what": what, "pid": os.getpid(), "identity": process_identity(),
                                 "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv[:3]}))
        handle.flush()
        yield
    finally:
        handle.close()  # closing the descriptor releases the flock
