"""Lineage: from a champion's recorded lineage alone (lineage.json on its run) DVC restores the exact dataset
and adapter. And the registry
commands of the CLI (models, promote, --force --reason, rollback, predict) on the project's SQLite store."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from loraops.cli import app
from loraops.core import Layout, read_json
from loraops.core.hashing import dvc_md5
from loraops.registry import restore_pointers, version_lineage
from tests.helpers.projects import dvc
from tests.helpers.registry import client_for, evaluation, register, tracking_for

pytestmark = pytest.mark.integration


def files(path: Path) -> dict[str, bytes]:
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_champion_lineage_alone_lets_dvc_restore_the_exact_dataset_and_adapter(trained_project, tmp_path,
                                                                              monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    layout = trained_project
    assert register(layout, "lineage", evaluation())["decision"] == "champion"
    # What `loraops run` does after the flow (and `dvc repro` after each stage): record outputs in dvc.lock.
    dvc(layout.root, "commit", "--force", "ingest", "prepare", "search", "train")
    champion = client_for(layout.local_tracking_uri()).get_model_version_by_alias("lineage", "champion")
    tags = version_lineage(tracking_for(layout, layout.local_tracking_uri()), champion)
    assert champion.tags["dataset.md5"] == tags["dvc.dataset.md5"]  # the one hash also on the version itself
    lock = {o["path"]: o["md5"] for stage in yaml.safe_load((layout.root / "dvc.lock").read_text())["stages"].values()
            for o in stage.get("outs", [])}
    for name in ("dataset", "prepared", "adapter"):
        assert tags[f"dvc.{name}.md5"] == lock[tags[f"dvc.{name}.path"]], name  # the hash dvc.lock records
    dvc(layout.root, "push", "ingest", "prepare", "search", "train")

    # A fresh DVC repository that knows only the remote and the champion's lineage.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=fresh, check=True)
    dvc(fresh, "init", "-q")
    dvc(fresh, "remote", "add", "-d", "team", str(layout.root / ".dvc-storage"))
    pointers = restore_pointers(tags, fresh)
    assert set(pointers) == {"dataset", "prepared", "adapter"}
    dvc(fresh, "pull", *[str(p.relative_to(fresh)) for p in pointers.values()])
    for name, original in (("dataset", layout.raw_data), ("prepared", layout.prepared_dir),
                           ("adapter", layout.adapter_dir)):
        restored = fresh / tags[f"dvc.{name}.path"]
        assert files(restored) == files(original), name
        assert dvc_md5(restored) == tags[f"dvc.{name}.md5"]


def test_registry_commands(trained_project, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = ["-p", str(trained_project.params_file)]  # registry.model_name: tiny-intent
    client = client_for(trained_project.local_tracking_uri())
    runner = CliRunner()
    empty = runner.invoke(app, ["models", *params])
    assert empty.exit_code == 0 and "tiny-intent: no versions registered" in empty.stdout
    held = register(trained_project, "tiny-intent", evaluation(diff_low=-0.05))["version"]

    listed = runner.invoke(app, ["models", "--json", *params])
    assert listed.exit_code == 0, listed.output
    row = next(r for r in json.loads(listed.stdout) if r["version"] == held)
    assert row["gates"]["beats_base"] == "fail" and row["aliases"] == ["challenger"] and row["accuracy"] == "0.8000"
    table = runner.invoke(app, ["models", *params])
    assert "FAIL" in table.stdout and "challenger" in table.stdout

    gated = runner.invoke(app, ["promote", str(held), *params])
    assert gated.exit_code == 1 and f"version {held}: challenger" in gated.stdout
    assert "champion" not in client.get_registered_model("tiny-intent").aliases
    no_champion = runner.invoke(app, ["predict", "hello", *params])
    assert no_champion.exit_code == 2 and "no champion" in no_champion.output
    no_previous = runner.invoke(app, ["rollback", *params])
    assert no_previous.exit_code == 2 and "no 'previous'" in no_previous.output
    no_reason = runner.invoke(app, ["promote", str(held), "--force", *params])
    assert no_reason.exit_code == 2 and "--reason" in no_reason.output

    monkeypatch.setenv("LORAOPS_USER", "alice")
    forced = runner.invoke(app, ["promote", str(held), "--force", "--reason", "hotfix for ticket 12", *params])
    assert forced.exit_code == 0, forced.output
    tags = client.get_model_version("tiny-intent", str(held)).tags
    assert tags["promotion.forced_by"] == "alice" and tags["promotion.forced_reason"] == "hotfix for ticket 12"
    assert tags["promotion.forced_at"] and tags["decision"] == "champion (forced)"
    assert tags["gates"] == "fail: beats_base"  # the override is recorded next to the gate it overrode
    assert client.get_registered_model("tiny-intent").aliases["champion"] == held

    answered = runner.invoke(app, ["predict", "where is my parcel", "I want a refund", *params])
    assert answered.exit_code == 0, answered.output
    assert len(answered.stdout.split("\n")) == 3  # one line per text
    assert read_json(trained_project.prepared_dir / "labels.json")  # the served labels come from here


def test_loraops_restore_puts_back_a_versions_outputs_by_number_and_by_run_id(trained_project, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = tmp_path / "project"
    shutil.copytree(trained_project.root, root, symlinks=True)  # its own copy: this test breaks the outputs
    layout = Layout(root)
    registered = register(layout, "restored", evaluation())
    dvc(root, "commit", "--force", "ingest", "prepare", "search", "train")
    dvc(root, "push", "ingest", "prepare", "search", "train")
    originals = {path: files(path) for path in (layout.raw_data, layout.prepared_dir, layout.adapter_dir)}
    cli = ["-p", str(layout.params_file), "-S", "registry.model_name=restored"]

    for ref in (str(registered["version"]), registered["run_id"]):
        layout.raw_data.write_text('{"text": "not the registered data", "label": "x", "split": null}\n')
        shutil.rmtree(layout.adapter_dir)
        shutil.rmtree(layout.prepared_dir)
        result = CliRunner().invoke(app, ["restore", ref, *cli])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["version"] == registered["version"]
        for path, content in originals.items():
            assert files(path) == content, (ref, path)
    assert not list(root.glob(".restore-*"))  # the staging folder is gone

    unknown = CliRunner().invoke(app, ["restore", "99", *cli])
    assert unknown.exit_code == 2 and "restored has no version 99" in unknown.output


def test_every_registry_command_takes_the_model_name_from_a_set_override(trained_project, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    registered = register(trained_project, "named-by-override", evaluation())
    cli = ["-p", str(trained_project.params_file), "-S", "registry.model_name=named-by-override"]
    listed = CliRunner().invoke(app, ["models", "--json", *cli])
    assert listed.exit_code == 0 and [r["version"] for r in json.loads(listed.stdout)] == [registered["version"]]
    promoted = CliRunner().invoke(app, ["promote", str(registered["version"]), *cli])
    assert promoted.exit_code == 0 and "champion" in promoted.stdout
    assert CliRunner().invoke(app, ["rollback", *cli]).exit_code == 2  # no previous champion: a clean error
    answered = CliRunner().invoke(app, ["predict", "where is my parcel", *cli])
    assert answered.exit_code == 0, answered.output
