"""A registered version is self-contained and checked: its uploaded adapter is the one its md5 names, it holds
the prompt template it was trained with and pinned requirements, it refuses to load onto another base, and its
model files are checked against the hash on the version before MLflow runs their code."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import mlflow
import pytest
from typer.testing import CliRunner

import loraops.registry.register as register_module
from loraops.cli import app
from loraops.core import ModelError, RegistryError, read_json, read_jsonl
from loraops.core.hashing import dvc_md5
from loraops.data import label_for_answer, render_prompt
from loraops.registry import MODEL_SHA256_TAG
from loraops.registry.serving import BASE_DIR_ENV, load_verified
from tests.helpers.registry import client_for, evaluation, register, tracking_for


@pytest.fixture
def local_store(trained_project, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return trained_project, client_for(trained_project.local_tracking_uri())


@pytest.fixture
def adapter_restored(trained_project):
    weights = trained_project.adapter_dir / "adapter_model.safetensors"
    saved = weights.read_bytes()
    yield weights
    weights.write_bytes(saved)


def flip_last_byte(path: Path) -> None:
    payload = bytearray(path.read_bytes())
    payload[-1] ^= 1
    path.write_bytes(bytes(payload))


def test_the_version_records_the_md5_of_the_adapter_it_uploaded(local_store, adapter_restored, monkeypatch):
    layout, client = local_store
    original = register_module._log_run

    def upload_then_change_the_local_copy(*args, **kwargs):
        info = original(*args, **kwargs)
        flip_last_byte(adapter_restored)  # e.g. another run rewrote models/adapter meanwhile (same size)
        return info

    monkeypatch.setattr(register_module, "_log_run", upload_then_change_the_local_copy)
    result = register(layout, "uploaded-md5", evaluation())
    version = client.get_model_version("uploaded-md5", str(result["version"]))
    with tempfile.TemporaryDirectory() as tmp:
        uploaded = Path(client.download_artifacts(version.run_id, "adapter", tmp))
        lineage = read_json(Path(client.download_artifacts(version.run_id, "lineage.json", tmp)))
        assert lineage["dvc"]["adapter"]["md5"] == dvc_md5(uploaded)


def test_an_adapter_changed_during_its_upload_registers_nothing(local_store, adapter_restored, monkeypatch):
    layout, client = local_store
    real_log_artifacts = mlflow.log_artifacts

    def change_then_upload(local_dir, artifact_path=None, *args, **kwargs):
        if artifact_path == "adapter":
            flip_last_byte(adapter_restored)
        return real_log_artifacts(local_dir, artifact_path, *args, **kwargs)

    monkeypatch.setattr(mlflow, "log_artifacts", change_then_upload)
    with pytest.raises(RegistryError, match="changed during the upload"):
        register(layout, "changed-upload", evaluation())
    assert client.search_model_versions("name='changed-upload'") == []


def test_the_version_holds_its_prompt_template_and_pinned_requirements(local_store):
    layout, client = local_store
    result = register(layout, "self-contained", evaluation())
    version = client.get_model_version("self-contained", str(result["version"]))
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(mlflow.artifacts.download_artifacts(version.source, dst_path=tmp,
                                                         tracking_uri=layout.local_tracking_uri()))
        spec = read_json(next(model.rglob("loraops_prompt.json")))
        requirements = [line for line in (model / "requirements.txt").read_text().splitlines()
                        if line and not line.startswith("#")]
    assert spec["template"] is not None
    for row in read_jsonl(layout.prepared_dir / "test.jsonl")[:5]:
        assert render_prompt(spec["template"], row["text"]) == row["prompt"]
    named = {line.split("==")[0] for line in requirements}
    assert {"torch", "transformers", "peft", "safetensors"} <= named
    assert all("==" in line for line in requirements if line.split("==")[0] in named - {"loraops"}), requirements


def test_loading_onto_another_base_is_a_clear_error(local_store, tmp_path, monkeypatch):
    layout, _ = local_store
    result = register(layout, "other-base", evaluation())
    other = shutil.copytree(layout.base_model_dir, tmp_path / "base")
    flip_last_byte(next(other.glob("*.safetensors")))
    monkeypatch.setenv(BASE_DIR_ENV, str(other))  # another machine's copy of the base, one byte off
    with pytest.raises(ModelError, match="is not the base the adapter was trained on"):
        mlflow.pyfunc.load_model(f"models:/other-base/{result['version']}")
    # The right base loads, from the recorded path or from a true copy named by the variable.
    monkeypatch.setenv(BASE_DIR_ENV, str(shutil.copytree(layout.base_model_dir, tmp_path / "copy")))
    assert len(mlflow.pyfunc.load_model(f"models:/other-base/{result['version']}").predict({"text": ["hi"]})) == 1
    monkeypatch.delenv(BASE_DIR_ENV)
    served = mlflow.pyfunc.load_model(f"models:/other-base/{result['version']}")
    assert len(served.predict({"text": ["where is my parcel"]})) == 1


def test_model_files_changed_in_the_artifact_store_are_refused_before_their_code_runs(local_store):
    layout, client = local_store
    result = register(layout, "tampered", evaluation())
    version = client.get_model_version("tampered", str(result["version"]))
    assert MODEL_SHA256_TAG in version.tags
    tracking = tracking_for(layout, layout.local_tracking_uri())
    assert load_verified(tracking, "tampered", "champion").unwrap_python_model().labels
    # The SQL registry store keeps no model_id on a version; its source names the logged model.
    location = client.get_logged_model(version.source.removeprefix("models:/")).artifact_location
    entry = next(Path(location.removeprefix("file://")).rglob("pyfunc_entry.py"))
    entry.write_text(entry.read_text() + "\nraise SystemExit('code planted in the artifact store ran')\n")
    with pytest.raises(RegistryError, match="refusing to load it"):
        load_verified(tracking, "tampered", "champion")
    result = CliRunner().invoke(app, ["predict", "hello", "-p", str(layout.params_file),
                                      "-S", "registry.model_name=tampered"])
    assert result.exit_code == 2 and "refusing to load it" in result.output, result.output


def test_serving_answers_with_the_original_label():
    labels = ["Track Order", "request-refund", "cancel_order"]
    assert label_for_answer(" track order.\nmore", labels) == "Track Order"
    assert label_for_answer("Request Refund", labels) == "request-refund"
    assert label_for_answer("no idea", labels) == "no_idea"  # not a label: the normalised answer, as scored
