"""One lock per project: a second `loraops run`, `loraops stage` or retrain in the same folder stops at once with
a message naming the holder, and the lock never outlives its holder."""

import os
import signal
import subprocess
import sys
import time

import pytest

from loraops.core import Layout
from loraops.core.process import ProjectBusy, is_alive_here, is_dead, process_identity, project_lock
from tests.helpers.projects import loraops_cmd

HOLD = ("import sys, time; from pathlib import Path; from loraops.core.process import project_lock; "
        "cm = project_lock(Path(sys.argv[1]), 'test holder'); cm.__enter__(); print('held', flush=True); "
        "time.sleep(600)")


def test_a_second_command_in_the_same_project_stops_with_a_clear_message(tiny_project):
    layout = Layout(tiny_project)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(layout.cache_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = subprocess.run([*loraops_cmd(), "stage", "ingest"], cwd=tiny_project, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 2, result.stderr
        line = result.stderr.strip().splitlines()[-1]
        assert "another loraops process is working on this project" in line and "test holder" in line
        assert f"pid {holder.pid}" in line and "Traceback" not in result.stderr
        assert not layout.raw_data.exists()  # it wrote nothing
        with pytest.raises(ProjectBusy):
            from flows.pipeline import pipeline
            pipeline.fn(root=str(tiny_project))
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The kernel released the lock with its dead holder: the next command takes it.
    with project_lock(layout.cache_dir, "after"):
        pass


def test_process_identities_tell_a_dead_process_from_a_live_one():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    identity = process_identity(child.pid)
    assert is_alive_here(identity) and not is_dead(identity)
    child.kill()
    child.wait()
    time.sleep(0.1)
    assert is_dead(identity) and not is_alive_here(identity)
    assert not is_dead("another-host:1:123") and not is_alive_here("another-host:1:123")
    assert not is_dead(None) and not is_dead("garbage")
    assert is_alive_here(process_identity()) and os.getpid() == int(process_identity().split(":")[1])
