"""The ``loraops`` command runs on mimalloc (loraops.core.allocator) unless LORAOPS_ALLOCATOR=system says not to."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from loraops.core.allocator import mimalloc_library
from tests.helpers.projects import loraops_cmd

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the preload is Linux's")

# What `loraops` does first, in a script that then reports the allocator it runs on and how often it started.
SCRIPT = textwrap.dedent("""
    import os, sys
    from loraops.core.allocator import active_allocator, exec_on_chosen_allocator
    with open(sys.argv[1], "a") as starts:
        starts.write("start\\n")
    exec_on_chosen_allocator([__file__, *sys.argv[1:]])
    print(active_allocator())
""")


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORAOPS_ALLOCATOR") and k != "LD_PRELOAD"}
    return {**env, **extra}


def _run(tmp_path, **extra: str) -> tuple[str, int]:
    script, starts = tmp_path / "which.py", tmp_path / "starts.txt"
    script.write_text(SCRIPT)
    out = subprocess.run([sys.executable, str(script), str(starts)], capture_output=True, text=True,
                         env=_clean_env(**extra), timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip(), len(starts.read_text().splitlines())


def test_mimalloc_is_installed_with_the_project():
    assert mimalloc_library() is not None


def test_the_process_restarts_once_on_mimalloc(tmp_path):
    assert _run(tmp_path) == ("mimalloc", 2)


def test_system_keeps_the_systems_malloc(tmp_path):
    assert _run(tmp_path, LORAOPS_ALLOCATOR="system") == ("system", 1)


def test_a_preload_that_fails_does_not_restart_forever(tmp_path):
    """ld.so only warns when a preload fails; the restarted process must then go on without it."""
    broken = tmp_path / "libmimalloc.so.3"
    broken.write_bytes(b"not a shared library")
    script, starts = tmp_path / "which.py", tmp_path / "starts.txt"
    script.write_text(SCRIPT.replace("from loraops.core.allocator import",
                                     f"import loraops.core.allocator as a; a.mimalloc_library = lambda: a.Path({str(broken)!r})\n"
                                     "from loraops.core.allocator import"))
    out = subprocess.run([sys.executable, str(script), str(starts)], capture_output=True, text=True,
                         env=_clean_env(), timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (out.stdout.strip(), len(starts.read_text().splitlines())) == ("system", 2)


def test_the_command_checks_the_choice_before_anything_else(tmp_path):
    out = subprocess.run([*loraops_cmd(), "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                         env=_clean_env(LORAOPS_ALLOCATOR="tcmalloc"))
    assert out.returncode == 2
    assert out.stderr.strip() == "error: LORAOPS_ALLOCATOR='tcmalloc' is not one of mimalloc, system"
    ok = subprocess.run([*loraops_cmd(), "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                        env=_clean_env())
    assert ok.returncode == 0 and "Usage: loraops" in ok.stdout, ok.stderr[-2000:]
