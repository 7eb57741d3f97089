"""``champion`` moved by hand, the way the MLflow UI's alias editor does it (the REST call of a real
``mlflow server``): the next loraops command runs the gates for it, records the move, sets ``previous``, and
under ``promote.hand_moves: revert`` moves it back."""

import pytest
from typer.testing import CliRunner

from loraops.cli import app
from tests.helpers.registry import client_for, evaluation, register

pytestmark = pytest.mark.integration


@pytest.fixture
def on_server(mlflow_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    return client_for(mlflow_server.uri)


def aliases(client, name) -> dict[str, str]:
    return {alias: str(v) for alias, v in client.get_registered_model(name).aliases.items()}


def champion_and_failing_challenger(layout, name) -> tuple[str, str]:
    first = register(layout, name, evaluation())
    second = register(layout, name, evaluation(diff_low=-0.05))  # fails beats_base: stays challenger
    assert first["decision"] == "champion" and second["decision"] == "challenger"
    return str(first["version"]), str(second["version"])


def models(layout, name, *overrides: str):
    return CliRunner().invoke(app, ["models", "--json", "-p", str(layout.params_file),
                                    "-S", f"registry.model_name={name}", *overrides])


def test_a_hand_move_is_recorded_with_its_gates_and_previous_is_set(trained_project, on_server):
    name = "hand-record"
    good, failing = champion_and_failing_challenger(trained_project, name)
    on_server.set_registered_model_alias(name, "champion", failing)  # what the UI's alias editor sends

    listed = models(trained_project, name)
    assert listed.exit_code == 0, listed.output
    assert (f"{name}: champion was moved to version {failing} outside loraops" in listed.output
            and "gates: fail: beats_base" in listed.output and f"previous = {good}" in listed.output)
    tags = on_server.get_model_version(name, failing).tags
    assert tags["hand_move.action"] == "recorded" and tags["hand_move.replaced"] == good
    assert tags["gates"] == "fail: beats_base" and tags["decision"] == "champion (moved by hand; fails the gates)"
    assert tags["hand_move.found_at"] and "before" in tags["hand_move.when"]
    assert "no author" in tags["hand_move.by"]  # MLflow does not record who set an alias; said, not guessed
    description = on_server.get_model_version(name, failing).description
    assert "Moved to champion outside loraops" in description and "| beats_base | fail |" in description
    assert aliases(on_server, name) == {"champion": failing, "previous": good, "challenger": failing}

    again = models(trained_project, name)  # recorded once: the next command finds nothing new
    assert again.exit_code == 0 and "outside loraops" not in again.output


def test_under_revert_the_hand_move_is_moved_back_with_a_clear_line(trained_project, on_server):
    name = "hand-revert"
    good, failing = champion_and_failing_challenger(trained_project, name)
    on_server.set_registered_model_alias(name, "champion", failing)

    listed = models(trained_project, name, "-S", "promote.hand_moves=revert")
    assert listed.exit_code == 0, listed.output
    assert f"reverted: champion is version {good} again (promote.hand_moves: revert)" in listed.output
    assert aliases(on_server, name)["champion"] == good
    tags = on_server.get_model_version(name, failing).tags
    assert tags["hand_move.action"] == "reverted" and tags["gates"] == "fail: beats_base"
    assert tags["decision"].startswith("not champion (moved to champion by hand, reverted")

    # The register stage checks too: a hand move before a registration is handled by it.
    on_server.set_registered_model_alias(name, "champion", failing)
    result = register(trained_project, name, evaluation(diff_low=-0.05), "promote.hand_moves=revert")
    assert result["hand_move"] and "reverted" in result["hand_move"]
    assert aliases(on_server, name)["champion"] == good


def test_a_promotion_by_loraops_is_not_a_hand_move(trained_project, on_server):
    name = "hand-none"
    register(trained_project, name, evaluation())
    better = register(trained_project, name, evaluation(adapter=0.83))
    assert better["decision"] == "champion" and better["hand_move"] is None
    listed = models(trained_project, name)
    assert listed.exit_code == 0 and "outside loraops" not in listed.output
