"""Registration and promotion through the real register stage, against the project's SQLite store and
against a real ``mlflow server`` process: gates decide, aliases move only on a pass, rollback restores."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from loraops.config import PROMOTION_GATES, load_params
from loraops.core import LoraopsError, RegistryError, read_json, write_json
from loraops.registry import rollback
from tests.helpers.registry import client_for, evaluation, register, tracking_for

# The short, fixed set every version carries (a readable row in the MLflow UI's versions table) ...
VERSION_TAGS = {"decision", "gates", "adapter.accuracy", "base.accuracy", "full.accuracy", "adapter.retention_drop",
                "base_model.id", "base_model.sha256", "dataset.md5", "test_set.sha256", "git.commit",
                "model.sha256", "loraops.registration", "loraops.registration.owner"}
# ... plus what a promotion event adds, only when it happens.
EVENT_TAGS = {"promotion.promoted_at", "promotion.replaced", "promotion.restored_at", "promotion.rolled_back_at"}


@pytest.fixture(scope="module", params=["sqlite", "server"])
def store(request, trained_project):
    server = request.getfixturevalue("mlflow_server") if request.param == "server" else None
    uri = server.uri if server else trained_project.local_tracking_uri()
    with pytest.MonkeyPatch.context() as patch:
        if server:
            patch.setenv("MLFLOW_TRACKING_URI", uri)
        else:
            patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        name = f"promo-{request.param}"
        first = register(trained_project, name, evaluation())
        yield SimpleNamespace(kind=request.param, uri=uri, name=name, first=first, client=client_for(uri),
                              layout=trained_project)


def aliases(client, name) -> dict[str, str]:
    return {alias: str(v) for alias, v in client.get_registered_model(name).aliases.items()}


def test_passing_candidate_becomes_champion_with_lineage_and_gates_recorded(store):
    assert store.first["decision"] == "champion" and set(store.first["gates"].values()) == {"pass"}
    version = store.client.get_model_version(store.name, str(store.first["version"]))
    assert {"champion", "challenger"} <= set(version.aliases)
    assert set(version.tags) - EVENT_TAGS == VERSION_TAGS
    assert version.tags["adapter.accuracy"] == "0.8000 [0.7200, 0.8800]" and version.tags["gates"] == "all pass"
    assert version.tags["loraops.registration"] == "complete" and version.status == "READY"
    assert "Promotion decision: champion" in version.description
    assert "| adapter | 0.800 [0.720, 0.880]" in version.description  # the comparison table
    # The full lineage is an artifact of the run: the DVC outputs (what `loraops restore` reads) and more.
    lineage = json.loads(Path(store.client.download_artifacts(version.run_id, "lineage.json")).read_text())
    assert len(lineage["dvc"]["adapter"]["md5"]) == 36 and lineage["dvc"]["adapter"]["md5"].endswith(".dir")
    assert lineage["dvc"]["dataset"]["path"] == "data/raw/dataset.jsonl" and lineage["params_sha256"]
    assert lineage["validation"]["success"] is True and lineage["evaluation"]["headline"] == "accuracy"


def failing_candidate(gate: str, layout) -> tuple[dict, dict | None]:
    """eval.json (and validation summary, for that gate) failing exactly ``gate``."""
    if gate == "validation_passed":
        return evaluation(), {**read_json(layout.validation_summary), "success": False, "errors": 2}
    return {"beats_base": evaluation(diff_low=-0.02),
            "recovers_full_gain": evaluation(adapter=0.75, full=0.95),
            "retention": evaluation(retention_drop=0.3),
            "not_worse_than_champion": evaluation(adapter=0.6, full=0.62)}[gate], None


@pytest.mark.parametrize("gate", PROMOTION_GATES)
def test_candidate_failing_one_gate_stays_challenger_with_the_gate_recorded(store, gate):
    champion_before = aliases(store.client, store.name)["champion"]
    eval_json, validation = failing_candidate(gate, store.layout)
    saved = read_json(store.layout.validation_summary)
    try:
        if validation is not None:
            write_json(store.layout.validation_summary, validation)
        result = register(store.layout, store.name, eval_json)
    finally:
        write_json(store.layout.validation_summary, saved)
    assert result["decision"] == "challenger"
    assert {g for g, status in result["gates"].items() if status != "pass"} == {gate}
    version = store.client.get_model_version(store.name, str(result["version"]))
    assert version.tags["gates"] == f"fail: {gate}" and version.tags["decision"] == "challenger"
    assert f"| {gate} | fail |" in version.description
    now = aliases(store.client, store.name)
    assert now["champion"] == champion_before and now["challenger"] == str(result["version"])


def test_better_candidate_takes_over_and_rollback_restores_the_previous_champion(store):
    client, name = store.client, store.name
    old = aliases(client, name)["champion"]
    new = register(store.layout, name, evaluation(adapter=0.82))
    assert new["decision"] == "champion"
    assert aliases(client, name)["champion"] == str(new["version"]) and aliases(client, name)["previous"] == old
    assert client.get_model_version(name, str(new["version"])).tags["promotion.replaced"] == old

    params = load_params(store.layout.params_file)
    result = rollback(tracking_for(store.layout, store.uri, 1), name, params.promote)
    after = aliases(client, name)
    assert result == {"champion": int(old), "rolled_back": new["version"]}
    assert after["champion"] == old and "previous" not in after  # old had replaced nothing
    assert client.get_model_version(name, str(new["version"])).tags["decision"] == "rolled back"
    with pytest.raises(RegistryError, match="no 'previous'"):
        rollback(tracking_for(store.layout, store.uri, 1), name, params.promote)


def test_champion_loads_through_mlflow_offline_and_answers(store):
    import mlflow

    mlflow.set_tracking_uri(store.uri)
    served = mlflow.pyfunc.load_model(f"models:/{store.name}@champion")
    answers = served.predict({"text": ["where is my parcel", "I want my money back"]})
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    # It is the registered adapter with its prompt spec (the tiny model's answers themselves are noise).
    assert served.unwrap_python_model().labels == read_json(store.layout.prepared_dir / "labels.json")
    # No broken version anywhere: every version is READY with its adapter uploaded.
    for version in store.client.search_model_versions(f"name='{store.name}'"):
        assert version.status == "READY" and version.tags["loraops.registration"] == "complete"
        files = {f.path for f in store.client.list_artifacts(version.run_id, "adapter")}
        assert "adapter/adapter_model.safetensors" in files


def test_eval_json_without_an_adapter_score_registers_nothing(trained_project, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    no_adapter = evaluation()
    del no_adapter["models"]["adapter"]
    with pytest.raises(RegistryError, match="no 'adapter' entry"):
        register(trained_project, "bad-input", no_adapter)
    # Not an evaluation summary at all: the error names the file and the field, and nothing is registered.
    with pytest.raises(LoraopsError, match=r"eval\.json: not a valid EvaluationSummary \(headline: Field required\)"):
        register(trained_project, "bad-input", {"models": {"base": {"accuracy": 0.3}}, "test_items": 10})
    assert client_for(trained_project.local_tracking_uri()).search_model_versions("name='bad-input'") == []
