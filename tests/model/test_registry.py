"""The pipeline in-process on the tiny model: what MLflow holds afterwards (one pipeline run with one child run
per evaluated model, datasets, the one-page Data Docs, lineage) and a registered pyfunc that loads offline."""

import json
from pathlib import Path

import pytest

from loraops.core import read_json
from loraops.registry.runs import MODEL_METRICS

MODELS = {"base", "adapter", "full"}


def client_of(layout):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=layout.tracking_uri())


def children(client, run):
    found = client.search_runs([run.info.experiment_id],
                               filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    return {r.info.run_name: r for r in found}


def test_pipeline_run_holds_params_datasets_artifacts_and_a_description(finished_project):
    layout, results = finished_project
    client = client_of(layout)
    run = client.get_run(results["register"]["run_id"])
    params = run.data.params
    assert params["train.lora.r"] == "4" and params["model.revision"] == "null" and params["search.enabled"] == "true"
    assert params["model.base"] == "local:base"  # the tiny base lies outside the project: no path of this machine
    values = list(params.values()) + list(run.data.tags.values())
    assert "None" not in values
    assert not [v for v in values if str(layout.root) in v or v.startswith("/tmp")], "a machine path is logged"
    assert run.data.tags["validation.data_docs"] == f"runs:/{run.info.run_id}/validation/data_docs.html"
    assert run.data.tags["search.run_id"] == read_json(layout.search_choice)["mlflow_run_id"]
    assert run.data.tags["decision"] == results["register"]["decision"]
    note = run.data.tags["mlflow.note.content"]  # the run's description in the UI
    assert results["register"]["decision"] in note and "| adapter |" in note and "| beats_base |" in note
    # Only comparative metrics on the pipeline run, under names no model's run uses.
    assert "adapter_minus_base" in run.data.metrics and not set(run.data.metrics) & set(MODEL_METRICS)
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"train", "val", "test"}
    from loraops.core.hashing import dvc_md5
    for split, entry in inputs.items():
        assert entry.dataset.digest == dvc_md5(layout.prepared_dir / f"{split}.jsonl")  # the DVC md5
        assert json.loads(entry.dataset.source)["uri"] == f"data/prepared/{split}.jsonl"
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"adapter", "reports", "validation", "lineage.json"} <= files
    assert (layout.artifact_root / run.info.run_id / "artifacts" / "adapter" / "adapter_model.safetensors").is_file()


def test_the_pipeline_runs_duration_is_the_pipelines(finished_project):
    layout, results = finished_project
    run = client_of(layout).get_run(results["register"]["run_id"])
    assert run.info.status == "FINISHED"
    # Started before the first output was written (base_model stage), ended after the last one (register).
    first = (layout.base_model_dir / "config.json").stat().st_mtime * 1000
    last = layout.summary_metrics.stat().st_mtime * 1000
    assert run.info.start_time <= first and run.info.end_time >= last - 1000
    assert not (layout.cache_dir / "pipeline-run.json").exists()  # the pass ended with register


def test_one_child_run_per_model_with_the_same_metric_names(finished_project):
    layout, results = finished_project
    client = client_of(layout)
    run = client.get_run(results["register"]["run_id"])
    kids = children(client, run)
    assert MODELS <= set(kids) and "search" in kids  # the search's parent run is nested here too
    evaluated = read_json(layout.eval_metrics)["models"]
    for name in MODELS:
        metrics = kids[name].data.metrics
        assert kids[name].data.tags["loraops.model"] == name
        for key in ("accuracy", "accuracy_low", "accuracy_high", "macro_f1", "retention", "retention_drop",
                    "trainable_params", "train_seconds"):
            assert key in metrics, (name, key)
        assert metrics["accuracy"] == pytest.approx(evaluated[name]["accuracy"])
        assert {d.dataset.name for d in kids[name].inputs.dataset_inputs} >= {"test"}
    assert kids["base"].data.metrics["trainable_params"] == 0
    assert kids["adapter"].data.metrics["trainable_params"] < kids["full"].data.metrics["trainable_params"]
    assert "peak_memory_mb" in kids["adapter"].data.metrics and "peak_memory_mb" in kids["full"].data.metrics
    # Each name means one thing: the loss series and the summary numbers of the run differ in name.
    adapter = kids["adapter"].data.metrics
    assert {"train_loss_mean", "val_loss_final"} <= set(adapter)
    assert [m.step for m in client.get_metric_history(kids["adapter"].info.run_id, "train_loss")] == [1, 2, 3, 4]
    # Search trials stay nested under the search's run.
    assert kids["search"].data.tags["search.storage"] == "sqlite:///.loraops/search/optuna.db"  # no machine path
    trials = children(client, kids["search"])
    assert len(trials) == 2 and all(t.data.tags["loraops.stage"] == "search.trial" for t in trials.values())


def test_data_docs_are_one_self_contained_page_on_the_run(finished_project, tmp_path):
    layout, results = finished_project
    client = client_of(layout)
    page = Path(client.download_artifacts(results["register"]["run_id"], "validation/data_docs.html", str(tmp_path)))
    text = page.read_text()
    assert "<script" not in text and "https://" not in text and "href=" not in text  # nothing to load or follow
    assert "Every check passed" in text or "Findings" in text
    assert "expect_table_row_count_to_be_between" in text and "Suite <code>loraops_rows</code>" in text
    # Great Expectations' own site names the validation by the dataset, not "__none__".
    site = layout.validation_docs / "validations"
    assert site.is_dir() and not list(site.rglob("__none__"))


def test_registered_version_is_readable_and_linked_to_its_logged_model(finished_project):
    layout, results = finished_project
    reg = results["register"]
    client = client_of(layout)
    version = client.get_model_version(reg["model_name"], str(reg["version"]))
    assert version.run_id == reg["run_id"]
    assert len(version.tags) <= 16 and version.tags["decision"] == reg["decision"]
    from loraops.core.hashing import dvc_md5
    assert version.tags["dataset.md5"] == dvc_md5(layout.raw_data)
    assert version.tags["base_model.sha256"] and version.tags["git.commit"]
    assert float(version.tags["adapter.accuracy"].split()[0]) == pytest.approx(
        results["evaluate"]["models"]["adapter"]["accuracy"], abs=1e-4)
    assert "| gate | outcome | why |" in version.description and "| base |" in version.description
    # The version's source is its logged model (models:/m-...); MLflow leaves version.model_id empty.
    logged = client.get_logged_model(version.model_id or version.source.removeprefix("models:/"))
    assert json.loads(logged.tags["mlflow.modelVersions"]) == [{"name": reg["model_name"],
                                                                "version": str(reg["version"])}]
    assert "accuracy" in {m.key for m in logged.metrics}  # the adapter's scores, on the Models tab too
    from mlflow.models import get_model_info
    info = get_model_info(f"models:/{reg['model_name']}/{reg['version']}")
    assert info.signature.inputs.input_names() == ["text"] and info.signature.outputs.input_names() == ["label"]
    assert info.saved_input_example_info is not None
    assert "base_model_dir" not in client.get_run(reg["run_id"]).data.params
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
    # Decoded within the label set, as evaluated: even the tiny model's noise is always one of the labels.
    assert set(answers) <= set(read_json(layout.prepared_dir / "labels.json"))

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
    # full: the baseline stage ran; tfidf: the classical reference of a label task
    assert read_json(layout.eval_metrics)["models"].keys() == MODELS | {"tfidf"}
    assert read_json(layout.train_metrics)["adapter_bytes"] > 0
    assert read_json(layout.registration)["version"] == results["register"]["version"]
    summary = read_json(layout.summary_metrics)
    assert summary["decision"] in ("champion", "challenger") and 0 <= summary["adapter"] <= 1
    assert list(summary)[:4] == ["decision", "adapter", "base", "full"]  # what `dvc exp show` keeps in view


def test_run_holds_the_evaluation_report_and_the_comparison_plot(finished_project):
    layout, results = finished_project
    client = client_of(layout)
    run_id = results["register"]["run_id"]
    files = {a.path for a in client.list_artifacts(run_id, "reports/eval")}
    assert {"reports/eval/report.md", "reports/eval/per_label.json", "reports/eval/retention.jsonl",
            "reports/eval/comparison.png"} <= files
    rows = (layout.comparison_plot).read_text().splitlines()
    # 3 models x (accuracy, retention) + tfidf's accuracy (it answers no general prompts)
    assert rows[0] == "model,metric,value,low,high" and len(rows) == 1 + 7
    assert all(line.count(",") == 4 and not line.endswith(",") for line in rows[1:])  # every interval is there
    # The report's energy line says what the search cost, from the choice's total.
    choice = read_json(layout.search_choice)
    assert choice["costed_trials"] == 2 and (f"the search cost {choice['total_energy_joules'] / 1000:.2f} kJ over 2 "
                                             "trials") in layout.eval_report.read_text()
