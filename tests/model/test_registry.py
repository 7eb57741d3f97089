"""The pipeline in-process on the tiny model: one MLflow run, a registered pyfunc that loads offline."""

import json
from pathlib import Path

import pytest

from loraops.core import read_json
from loraops.pipeline import PIPELINE
from tests.helpers.projects import new_project, run_stages


@pytest.fixture(scope="module")
def finished_project(tmp_path_factory, tiny_base):
    layout = new_project(tmp_path_factory.mktemp("registry") / "project", tiny_base)
    return layout, run_stages(layout, *PIPELINE)


def test_one_run_holds_params_metrics_curve_and_safetensors_adapter(finished_project):
    import mlflow

    layout, results = finished_project
    mlflow.set_tracking_uri(layout.tracking_uri())
    run = mlflow.get_run(results["register"]["run_id"])
    assert run.data.params["train.lora.r"] == "4" and run.data.params["model.base"].endswith("base")
    assert "eval.adapter.accuracy" in run.data.metrics and "train.trainable_params" in run.data.metrics
    assert run.data.metrics["eval.adapter.accuracy"] == results["evaluate"]["models"]["adapter"]["accuracy"]
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in history] == [1, 2, 3, 4]
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "adapter")}
    assert "adapter/adapter_model.safetensors" in artifacts and "adapter/adapter_config.json" in artifacts
    assert not any(p.endswith((".bin", ".pt", ".pkl")) for p in artifacts)
    # Artifacts live in the project's mlartifacts/, whatever the working directory was.
    assert run.info.artifact_uri.startswith(layout.artifact_root.as_uri())
    assert (layout.artifact_root / run.info.run_id / "artifacts" / "adapter" / "adapter_model.safetensors").is_file()


def test_registered_version_exists_and_adapter_records_base_by_id(finished_project):
    import mlflow

    layout, results = finished_project
    reg = results["register"]
    client = mlflow.MlflowClient(tracking_uri=layout.tracking_uri())
    version = client.get_model_version(reg["model_name"], str(reg["version"]))
    assert version.run_id == reg["run_id"]
    assert version.tags["validation.success"] == "true"
    assert float(version.tags["eval.adapter.accuracy"]) == pytest.approx(
        results["evaluate"]["models"]["adapter"]["accuracy"], abs=1e-4)
    config = json.loads((layout.adapter_dir / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "local:base"  # not this machine's path


def test_registered_model_loads_offline_and_predicts_like_the_local_adapter(finished_project):
    import mlflow
    import torch

    from loraops.modeling import load_for_inference

    layout, results = finished_project
    mlflow.set_tracking_uri(layout.tracking_uri())
    reg = results["register"]
    served = mlflow.pyfunc.load_model(f"models:/{reg['model_name']}/{reg['version']}")
    texts = ["where is my parcel", "I want my money back"]
    answers = served.predict({"text": texts})
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)

    # Numeric round trip: the adapter MLflow hands back gives the same logits as the one we trained.
    downloaded = Path(mlflow.artifacts.download_artifacts(run_id=reg["run_id"], artifact_path="adapter"))
    local, tokenizer = load_for_inference(layout.base_model_dir, layout.adapter_dir)
    remote, _ = load_for_inference(layout.base_model_dir, downloaded)
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        diff = (local(**batch).logits - remote(**batch).logits).abs().max().item()
    assert diff == 0.0
    base, _ = load_for_inference(layout.base_model_dir)
    with torch.no_grad():
        assert (base(**batch).logits - local(**batch).logits).abs().max().item() > 1e-4  # the adapter does something


def test_stage_outputs_are_complete(finished_project):
    layout, results = finished_project
    assert read_json(layout.eval_metrics)["models"].keys() == {"adapter", "base", "full"}  # full: the baseline stage ran
    assert read_json(layout.train_metrics)["adapter_bytes"] > 0
    assert read_json(layout.registration)["version"] == results["register"]["version"]


def test_run_holds_the_evaluation_report_and_its_interval_metrics(finished_project):
    import mlflow

    layout, results = finished_project
    client = mlflow.MlflowClient(tracking_uri=layout.tracking_uri())
    run_id = results["register"]["run_id"]
    files = {a.path for a in client.list_artifacts(run_id, "reports/eval")}
    assert {"reports/eval/report.md", "reports/eval/per_label.json", "reports/eval/retention.jsonl"} <= files
    metrics = client.get_run(run_id).data.metrics
    for key in ("eval.adapter.accuracy_low", "eval.adapter.accuracy_high", "eval.adapter.retention_drop",
                "eval.base.macro_f1"):
        assert key in metrics, key
