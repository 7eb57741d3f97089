"""Against a real ``mlflow server`` process: concurrent promotions, a server killed mid-registration, and a
server that is not there at all."""

import sqlite3
import threading
import time

import pytest
from typer.testing import CliRunner

from loraops.cli import app
from loraops.config import PromoteParams
from loraops.core import RegistryError, write_json
from loraops.registry import lock_name, promote, repair
from tests.helpers.registry import client_for, evaluation, free_port, register, tracking_for

pytestmark = pytest.mark.integration


@pytest.fixture
def on_server(mlflow_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    return mlflow_server


def aliases(client, name) -> dict[str, str]:
    return {alias: str(v) for alias, v in client.get_registered_model(name).aliases.items()}


def assert_registry_intact(client, name) -> None:
    """Every version READY, fully registered and with its adapter uploaded; every alias on such a version."""
    versions = {v.version: v for v in client.search_model_versions(f"name='{name}'")}
    for version in versions.values():
        assert version.status == "READY", version
        assert version.tags.get("loraops.registration") == "complete", version.tags
        files = {f.path for f in client.list_artifacts(version.run_id, "adapter")}
        assert "adapter/adapter_model.safetensors" in files, (version.version, files)
    for alias, number in aliases(client, name).items():
        assert number in versions, f"alias {alias} points at missing version {number}"


def test_two_concurrent_promotions_leave_exactly_one_champion_and_a_correct_previous(on_server, trained_project):
    name, client = "concurrent", client_for(on_server.uri)
    first = register(trained_project, name, evaluation())
    # Two candidates held back by a strict gate, then promoted at the same moment with the default gates.
    held = [register(trained_project, name, evaluation(adapter=0.81), "promote.min_gain_over_base=0.9")["version"]
            for _ in range(2)]
    assert aliases(client, name)["champion"] == str(first["version"])
    barrier, results, errors = threading.Barrier(2), {}, []

    def promote_now(version: int) -> None:
        try:
            barrier.wait()
            results[version] = promote(tracking_for(trained_project, on_server.uri), name, str(version),
                                       PromoteParams())
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=promote_now, args=(v,)) for v in held]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert {r["decision"] for r in results.values()} == {"champion"}
    final = aliases(client, name)
    champion, previous = final["champion"], final["previous"]
    assert {champion, previous} == {str(v) for v in held}  # one after the other, never both from the same base
    assert client.get_model_version(name, champion).tags["promotion.replaced"] == previous
    assert client.get_model_version(name, previous).tags["promotion.replaced"] == str(first["version"])
    assert_registry_intact(client, name)
    with pytest.raises(Exception):
        client.get_registered_model(lock_name(name))  # the lock is released


def test_a_stale_lock_from_a_dead_run_is_broken(on_server, trained_project):
    import subprocess
    import sys

    from loraops.core.process import process_identity

    name, client = "stale-lock", client_for(on_server.uri)
    held = register(trained_project, name, evaluation(), "promote.min_gain_over_base=0.9")["version"]
    dead = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    identity = process_identity(dead.pid)
    dead.kill()
    dead.wait()
    # A lock whose holder was a process of this host that is gone: broken at once.
    client.create_registered_model(lock_name(name), tags={"owner": "dead-run", "holder": identity})
    started = time.monotonic()
    result = promote(tracking_for(trained_project, on_server.uri, 1), name, str(held), PromoteParams())
    assert result["decision"] == "champion" and aliases(client, name)["champion"] == str(held)
    assert time.monotonic() - started < 60  # not the 120 s TTL
    # A lock of an unknown holder (another host) that nobody renews: broken once it went a TTL unrenewed.
    client.create_registered_model(lock_name(name), tags={"owner": "other-host-run", "holder": "elsewhere:1:1"})
    started = time.monotonic()
    promote(tracking_for(trained_project, on_server.uri, 1), name, str(held), PromoteParams(lock_ttl_seconds=2))
    assert time.monotonic() - started >= 2


def runs_in(db) -> int:
    """Runs that registration has begun to fill (params are its first write; the pass's run itself is
    created before, when the command connects)."""
    with sqlite3.connect(db, timeout=10) as con:
        return con.execute("select count(distinct run_uuid) from params").fetchone()[0]


def test_server_killed_during_registration_fails_cleanly_and_leaves_no_broken_version(
        on_server, trained_project):
    server = on_server  # killed and restarted on the same database, artifacts and port
    name, client = "killed", client_for(server.uri)
    first = register(trained_project, name, evaluation())
    write_json(trained_project.eval_metrics, evaluation(adapter=0.82))
    before = runs_in(server.db)
    # The real `loraops stage register` command, in a thread so that this test can kill the server under it.
    outcome = {}
    overrides = ["-S", f"registry.model_name={name}", "-S", "registry.retries=2", "-S", "registry.backoff_seconds=0.2"]
    command = threading.Thread(target=lambda: outcome.update(result=CliRunner().invoke(
        app, ["stage", "register", "-p", str(trained_project.params_file), *overrides])))
    command.start()
    deadline = time.monotonic() + 120
    while runs_in(server.db) == before and command.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    server.kill()  # the run has its params; its artifacts and version are on their way
    command.join(timeout=180)
    result = outcome["result"]
    assert result.exit_code == 2, result.output
    assert "error: registration" in result.output and "failed" in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception

    server.start()
    repaired = repair(tracking_for(trained_project, server.uri, 1), name, grace_seconds=0)
    assert_registry_intact(client, name)
    assert aliases(client, name)["champion"] == str(first["version"])
    killed_run = client.search_runs([client.get_experiment_by_name("tiny").experiment_id],
                                    filter_string="tags.`loraops.stage` = 'pipeline'",
                                    order_by=["attributes.start_time DESC"], max_results=1)[0]
    leftovers = client.search_model_versions(f"name='{name}' and run_id='{killed_run.info.run_id}'")
    assert all(v.tags["loraops.registration"] == "complete" for v in leftovers), (leftovers, repaired)

    # The registry works again: the next run registers and promotes normally.
    again = register(trained_project, name, evaluation(adapter=0.82))
    assert again["decision"] == "champion" and aliases(client, name)["previous"] == str(first["version"])
    assert_registry_intact(client, name)


def test_unreachable_server_fails_cleanly_without_registering(trained_project, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(RegistryError, match="nothing was registered"):
        register(trained_project, "nowhere", evaluation())
