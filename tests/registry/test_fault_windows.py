"""Faults at every window of registration and promotion, against real stores: the registering process killed
(SIGKILL) between any two of its writes, the tracking server killed there, a live promoter whose lease
expires while it is stopped, and the lease kept alive past its TTL by renewal. After each: no broken
version, exactly one champion (the new or the previous one), and the next run repairs what is left."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from loraops.config import PromoteParams
from loraops.core import write_json
from loraops.registry import INTERRUPTED_DECISION, REGISTRATION_TAG, lock_name, promote
from loraops.registry.promotion import registry_lock
from tests.helpers import faults
from tests.helpers.registry import client_for, evaluation, register, tracking_for

pytestmark = pytest.mark.integration


def aliases(client, name) -> dict[str, str]:
    return {alias: str(v) for alias, v in client.get_registered_model(name).aliases.items()}


def assert_consistent(client, name, *, repaired: bool) -> dict[str, str]:
    """What must hold at any time: every alias on a complete version, one champion. Once repaired also: no
    incomplete version, no decision left 'promoting', previous is what the champion replaced, no lock."""
    versions = {str(v.version): v for v in client.search_model_versions(f"name='{name}'")}
    now = aliases(client, name)
    for alias, number in now.items():
        assert versions[number].tags.get(REGISTRATION_TAG) == "complete", (alias, versions[number].tags)
    assert "champion" in now
    if repaired:
        assert all(v.tags.get(REGISTRATION_TAG) == "complete" for v in versions.values()), versions
        assert not [v for v in versions.values() if v.tags.get("decision") == "promoting"]
        assert now.get("previous") == versions[now["champion"]].tags.get("promotion.replaced")
        with pytest.raises(Exception):
            client.get_registered_model(lock_name(name))
    return now


def register_command(layout, name: str, *extra: str) -> list[str]:
    return ["stage", "register", "-p", str(layout.params_file), "-S", f"registry.model_name={name}",
            "-S", "registry.retries=1", "-S", "registry.backoff_seconds=0.1", *extra]


@pytest.mark.parametrize("window", faults.WINDOWS, ids=[w.name for w in faults.WINDOWS])
def test_registration_killed_at_each_window_then_the_next_run_repairs(trained_project, monkeypatch, window):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    name, client = f"window-{window.name}", client_for(trained_project.local_tracking_uri())
    first = str(register(trained_project, name, evaluation())["version"])
    write_json(trained_project.eval_metrics, evaluation(adapter=0.82))
    killed = faults.run(window.fault, *register_command(trained_project, name))
    assert killed.returncode == -signal.SIGKILL and faults.READY_MARK in killed.stdout, killed.stderr[-2000:]

    after_crash = assert_consistent(client, name, repaired=False)
    newest = max(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
    assert after_crash["champion"] in {first, str(newest)}  # exactly one champion: the old or the new one

    again = register(trained_project, name, evaluation(adapter=0.83))
    assert again["decision"] == "champion"
    final = assert_consistent(client, name, repaired=True)
    assert final["champion"] == str(again["version"]) and final["challenger"] == str(again["version"])


@pytest.mark.parametrize("window", [faults.WINDOWS[0], faults.WINDOWS[5]], ids=lambda w: w.name)
def test_tracking_server_killed_at_a_window_fails_cleanly_and_the_next_run_repairs(mlflow_server, trained_project,
                                                                                  monkeypatch, window):
    server = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    name, client = f"server-{window.name}", client_for(server.uri)
    first = str(register(trained_project, name, evaluation())["version"])
    write_json(trained_project.eval_metrics, evaluation(adapter=0.82))
    fault = window.fault.rsplit(":", 1)[0] + ":kill-server"
    failed = faults.run(fault, *register_command(trained_project, name),
                        env={"LORAOPS_FAULT_SERVER_PGID": str(os.getpgid(server.proc.pid))})
    assert failed.returncode == 2 and "error: registration" in failed.stderr, failed.stderr[-2000:]
    assert "Traceback" not in failed.stderr
    server.start()
    after_crash = assert_consistent(client, name, repaired=False)
    assert after_crash["champion"] in {first, str(max(int(v.version) for v in
                                                      client.search_model_versions(f"name='{name}'")))}
    again = register(trained_project, name, evaluation(adapter=0.83))
    assert again["decision"] == "champion"
    assert assert_consistent(client, name, repaired=True)["champion"] == str(again["version"])


def test_a_live_promoter_whose_lease_expires_stops_before_writing(trained_project, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    name, client = "lease-expiry", client_for(trained_project.local_tracking_uri())
    register(trained_project, name, evaluation())
    held = [str(register(trained_project, name, evaluation(adapter=0.81), "promote.min_gain_over_base=0.9")["version"])
            for _ in range(2)]
    ttl = "promote.lock_ttl_seconds=3"
    # A: `loraops promote` stopped (SIGSTOP) inside its lease, after recording its gates, before the alias moves.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(faults.REPO / "src"), str(faults.REPO)]))
    stopped = subprocess.Popen(faults.command("after:update_model_version:promoting:stop", "promote", held[0], "-p",
                                              str(trained_project.params_file), "-S", f"registry.model_name={name}",
                                              "-S", ttl), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    for line in stopped.stdout:
        if faults.READY_MARK in line:
            break
    else:
        pytest.fail(f"the fault never fired: {stopped.stderr.read()[-2000:]}")
    deadline = time.monotonic() + 30
    while Path(f"/proc/{stopped.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # B: a second promotion waits out the unrenewed lease (A is alive, only stopped), breaks it and promotes.
    started = time.monotonic()
    result = promote(tracking_for(trained_project, trained_project.local_tracking_uri()), name, held[1],
                     PromoteParams(lock_ttl_seconds=3))
    assert result["decision"] == "champion" and time.monotonic() - started >= 3
    stopped.send_signal(signal.SIGCONT)
    out, err = stopped.communicate(timeout=120)
    assert stopped.returncode == 2, (out, err)
    assert "promotion lock was lost" in err and "stopped without writing it" in err, err
    final = aliases(client, name)
    assert final["champion"] == held[1]  # A never wrote over B's promotion
    assert client.get_model_version(name, held[0]).tags["decision"] == INTERRUPTED_DECISION
    assert_consistent(client, name, repaired=True)


def test_a_lease_held_past_its_ttl_is_renewed_and_never_broken(trained_project):
    uri = trained_project.local_tracking_uri()
    client, name = client_for(uri), "lease-renewed"
    client.create_registered_model(name)
    released, acquired = {}, {}

    def hold() -> None:
        with registry_lock(tracking_for(trained_project, uri), name, ttl=2):
            time.sleep(6)  # three TTLs: only renewals keep it
            released["at"] = time.monotonic()

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.5)
    with registry_lock(tracking_for(trained_project, uri), name, ttl=2):
        acquired["at"] = time.monotonic()
    holder.join()
    assert acquired["at"] >= released["at"]


def test_promote_refuses_a_version_that_is_not_complete(trained_project, monkeypatch):
    from typer.testing import CliRunner

    from loraops.cli import app

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    name, client = "incomplete-promote", client_for(trained_project.local_tracking_uri())
    good = register(trained_project, name, evaluation())
    half = client.create_model_version(name, source=client.get_model_version(name, str(good["version"])).source,
                                       run_id=good["run_id"], tags={REGISTRATION_TAG: "incomplete"}).version
    result = CliRunner().invoke(app, ["promote", str(half), "--force", "--reason", "test", "-p",
                                      str(trained_project.params_file), "-S", f"registry.model_name={name}"])
    assert result.exit_code == 2 and "not a complete registration" in result.output, result.output
    assert aliases(client, name) == {"champion": str(good["version"]), "challenger": str(good["version"])}
