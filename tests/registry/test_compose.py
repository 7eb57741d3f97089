"""``loraops compose`` on the tiny model against the project's real local MLflow store: two registered adapters
(two "tasks": the trained adapter, and another of its shape scored on other rows kept in a folder of their own)
combined with PEFT, scored on each source's test set and on retention, registered with lineage to its sources
and gated against each task's champion; a combination with weight 0 on one source gives back the other exactly;
bad input fails in one line with nothing registered. The composed version is asked per task (its pyfunc,
``loraops predict --task``, ``loraops serve``), each task exactly as that source's own prompt spec asks it."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from loraops.cli import app
from loraops.config import ComposeParams
from loraops.core import RegistryError, read_json, read_jsonl, write_json, write_jsonl
from loraops.evaluation.cache import rows_sha256
from loraops.modeling import base_content_sha256, load_for_inference
from loraops.registry.compose import check_bases, build
from loraops.registry.composition import COMPOSED_TAG, CompositionRecord
from loraops.registry.library import adapter_dir
from loraops.registry.register import BASE_REFERENCE
from loraops.registry.library import AdapterLibrary
from loraops.registry.scoring_server import ScoringServer
from loraops.registry.serving import PromptSpec, answer_texts, download_verified, load_verified
from tests.helpers.registry import (B_TASK_LABELS, client_for, evaluation, other_task_prompt, perturbed_adapter,
                                    register, tracking_for)

A, B, C = "compose-a", "compose-b", "compose-ab"


@pytest.fixture(scope="module")
def sources(trained_project, tmp_path_factory):
    """A and B registered (both champion); B is another task (its own prompt and four labels,
    :func:`other_task_prompt`), scored on the test split reversed, kept in its own folder."""
    layout = trained_project
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        rows = read_jsonl(layout.prepared_dir / "test.jsonl")
        other = tmp_path_factory.mktemp("task-b") / "prepared"
        shutil.copytree(layout.prepared_dir, other)
        write_jsonl(other / "test.jsonl", rows[::-1])
        for name, scored in ((A, rows), (B, rows[::-1])):
            eval_json = {**evaluation(sha=rows_sha256(scored)), "test_items": len(scored)}
            if name == B:
                with perturbed_adapter(layout), other_task_prompt(layout):
                    register(layout, name, eval_json)
            else:
                register(layout, name, eval_json)
        yield layout, other, client_for(layout.local_tracking_uri())


def cli(layout, *args):
    result = CliRunner().invoke(app, [*args, "-p", str(layout.params_file)])
    return result.exit_code, result.output


def set_champion_score(client, name, value):
    """The champion's recorded score, which the task gate compares with (a hand-made eval.json gave it)."""
    champion = client.get_model_version_by_alias(name, "champion")
    client.set_model_version_tag(name, champion.version, "adapter.accuracy", f"{value:.4f}")


def composition(client, version) -> tuple[CompositionRecord, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        record = CompositionRecord.read(Path(client.download_artifacts(version.run_id, "reports/composition.json", tmp)))
        lineage = json.loads(Path(client.download_artifacts(version.run_id, "lineage.json", tmp)).read_text())
    return record, lineage


def test_composition_registers_a_version_with_lineage_and_passing_gates(sources, tmp_path):
    layout, other, client = sources
    for name in (A, B):
        set_champion_score(client, name, 0.0)  # nothing to lose against: every task gate must pass
    code, output = cli(layout, "compose", A, f"{B}@1", "--name", C, "--data", f"{B}={other}")
    assert code == 0, output
    assert f"registered {C} version 1" in output and output.strip().endswith(": champion"), output
    version = client.get_model_version(C, "1")
    tags = version.tags
    assert tags[COMPOSED_TAG] == "true" and tags["compose.sources"] == f"{A} v1, {B} v1"
    assert tags["compose.combination"] == "cat" and tags["loraops.registration"] == "complete"
    assert tags["decision"] == "champion" and tags["gates"] == "all pass"
    assert tags["base_model.sha256"] == base_content_sha256(layout.base_model_dir)
    assert {f"task.{A}.accuracy", f"task.{B}.accuracy", "model.sha256", "adapter.retention_drop"} <= set(tags)
    assert set(client.get_registered_model(C).aliases) == {"champion", "challenger"}

    record, lineage = composition(client, version)
    assert [s.model for s in record.sources] == [A, B] and record.weights == [1.0, 1.0]
    assert record.sources[0].test_set_sha256 == client.get_model_version(A, "1").tags["test_set.sha256"]
    assert record.sources[1].test_set_sha256 == client.get_model_version(B, "1").tags["test_set.sha256"]
    assert record.sources[1].test_items == len(read_jsonl(other / "test.jsonl"))
    assert all(0 <= s.score_low <= s.score <= s.score_high <= 1 for s in record.sources)
    assert record.retention is not None and record.retention_drop == pytest.approx(
        record.base_retention - record.retention)
    assert [s["model_sha256"] for s in lineage["composed_from"]] == \
        [client.get_model_version(n, "1").tags["model.sha256"] for n in (A, B)]
    # MLflow's own lineage: the composed run took the sources' logged models as inputs.
    inputs = {m.model_id for m in client.get_run(version.run_id).inputs.model_inputs}
    assert inputs == {client.get_model_version(n, "1").source.removeprefix("models:/") for n in (A, B)}

    # The registered model is the served pyfunc: verified, on the local base, answering A's labels.
    tracking = tracking_for(layout, layout.local_tracking_uri())
    texts = [r["text"] for r in read_jsonl(layout.prepared_dir / "test.jsonl")[:4]]
    labels = read_json(layout.prepared_dir / "labels.json")
    assert set(load_verified(tracking, C, "champion").predict({"text": texts})) <= set(labels)
    _, local = download_verified(tracking, C, "1", into=tmp_path)
    config = read_json(adapter_dir(local) / "adapter_config.json")
    assert config["r"] == 8 and config["use_rslora"] is False  # cat: rank 4 + 4, scaling 1

    code, output = cli(layout, "models", "-S", f"registry.model_name={C}")
    assert code == 0 and f"task:{A}=ok task:{B}=ok retention=ok" in output, output


@pytest.fixture(scope="module")
def task_answers(sources, tmp_path_factory):
    """Version 1 of the composition (the test above registered it) and, per task, the labels the composed
    adapter answers when asked with that source's own prompt spec (its registered loraops_prompt.json) alone."""
    layout, _, _ = sources
    tracking = tracking_for(layout, layout.local_tracking_uri())
    folder = tmp_path_factory.mktemp("composed")
    _, local = download_verified(tracking, C, "1", into=folder / C)
    model, tokenizer = load_for_inference(layout.base_model_dir, adapter_dir(local))
    texts = [r["text"] for r in read_jsonl(layout.prepared_dir / "test.jsonl")[:6]]
    own = {name: PromptSpec.read(adapter_dir(download_verified(tracking, name, "1", into=folder / name)[1]))
           for name in (A, B)}
    alone = {name: answer_texts(model, tokenizer, [spec] * len(texts), texts, 16) for name, spec in own.items()}
    assert set(alone[B]) <= set(B_TASK_LABELS) and alone[A] != alone[B]  # two tasks, or these tests show nothing
    del model
    return tracking, local, texts, alone


def test_the_composed_pyfunc_answers_each_task_as_its_source_prompt_alone(task_answers):
    import mlflow
    import pandas as pd

    tracking, local, texts, alone = task_answers
    pyfunc = mlflow.pyfunc.load_model(str(local))
    assert "task" in pyfunc.metadata.get_input_schema().input_names()
    assert list(pyfunc.predict({"text": texts})) == alone[A]  # no task: the first source's
    assert list(pyfunc.predict({"text": texts, "task": [B] * len(texts)})) == alone[B]
    assert list(pyfunc.predict({"text": texts, "task": A})) == alone[A]
    # One batch, a task per row (some left out: the first source's), as each task alone answers.
    asked = [B, A, None, B, B, A]
    records = [{"text": t} if task is None else {"text": t, "task": task} for t, task in zip(texts, asked)]
    expected = [alone[task or A][i] for i, task in enumerate(asked)]
    assert list(pyfunc.predict(pd.DataFrame(records))) == expected
    with pytest.raises(Exception) as raised:
        pyfunc.predict({"text": texts[:1], "task": ["nope"]})
    message = str(raised.value)
    assert f"task 'nope' is not one of this model's tasks ({A}, {B})" in message and "\n" not in message, message


def test_predict_asks_a_composed_champion_per_task(sources, task_answers):
    layout = sources[0]
    texts, alone = task_answers[2], task_answers[3]
    result = CliRunner().invoke(app, ["predict", *texts[:3], "--task", B, "-S", f"registry.model_name={C}",
                                      "-p", str(layout.params_file)])
    assert result.exit_code == 0 and result.stdout.split() == alone[B][:3], result.output
    code, output = cli(layout, "predict", texts[0], "--task", "nope", "-S", f"registry.model_name={C}")
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in output, output
    assert errors[0] == f"error: task 'nope' is not one of {C}'s tasks ({A}, {B})", output
    # A model that is no composition answers its own task only.
    result = CliRunner().invoke(app, ["predict", texts[0], "--task", A, "-S", f"registry.model_name={A}",
                                      "-p", str(layout.params_file)])
    answered = result.stdout.split()
    assert result.exit_code == 0 and len(answered) == 1, result.output
    assert answered[0] in read_json(layout.prepared_dir / "labels.json"), result.output
    code, output = cli(layout, "predict", texts[0], "--task", B, "-S", f"registry.model_name={A}")
    assert code == 2 and output.splitlines()[-1] == \
        f"error: task '{B}': {A} is not a composition; it answers its own task '{A}' only (leave 'task' out)", output


def test_serve_answers_a_composition_per_task_in_mixed_batches(sources, task_answers):
    import urllib.error
    import urllib.request

    layout = sources[0]
    tracking, _, texts, alone = task_answers
    library = AdapterLibrary(tracking, layout.base_model_dir, [C, A], batch_size=4)
    library.refresh()
    server = ScoringServer(library, "127.0.0.1", 0, poll_seconds=None).start()

    def post(records):
        body = json.dumps({"dataframe_records": records}).encode()
        request = urllib.request.Request(server.url + "/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    try:
        assert library.versions() == {C: "1", A: "1"}
        with urllib.request.urlopen(server.url + "/health", timeout=10) as response:
            assert json.loads(response.read())["tasks"] == {C: [A, B]}
        for task in (A, B):  # each task alone
            status, body = post([{"text": t, "adapter": C, "task": task} for t in texts])
            assert status == 200 and [p["label"] for p in body["predictions"]] == alone[task], body
            assert {p["task"] for p in body["predictions"]} == {task}
        # One batch: the composition's tasks row by row, its default task, and another adapter beside it.
        status, body = post([{"text": t, "adapter": A} for t in texts])
        assert status == 200, body
        own_a = [p["label"] for p in body["predictions"]]
        rows = [(C, B), (C, A), (A, None), (C, None), (C, B), (A, A)]
        status, body = post([{"text": t, "adapter": adapter, **({"task": task} if task else {})}
                             for t, (adapter, task) in zip(texts, rows)])
        assert status == 200, body
        assert [p["label"] for p in body["predictions"]] == \
            [own_a[i] if adapter == A else alone[task or A][i] for i, (adapter, task) in enumerate(rows)]
        assert [p.get("task") for p in body["predictions"]] == [B, A, None, A, B, None]
        # A task the adapter does not answer: 400, one line naming it and the adapter's tasks; nothing answered.
        status, body = post([{"text": texts[0], "adapter": C, "task": A}, {"text": texts[1], "adapter": C,
                                                                             "task": "nope"}])
        assert status == 400 and body["error"] == f"task 'nope' is not one of {C}'s tasks ({A}, {B})", body
        status, body = post([{"text": texts[0], "adapter": A, "task": B}])
        assert status == 400 and body["error"] == \
            f"task '{B}': {A} is not a composition; it answers its own task '{A}' only (leave 'task' out)", body
    finally:
        server.stop()
        library.close()


def test_a_task_lost_beyond_the_margin_registers_a_challenger_and_keeps_the_champion(sources):
    layout, other, client = sources
    assert str(client.get_model_version_by_alias(C, "champion").version) == "1"  # from the test above
    set_champion_score(client, A, 1.0)
    code, output = cli(layout, "compose", A, B, "--name", C, "--data", f"{B}={other}",
                       "-S", "compose.combination=ties", "-S", "compose.weights=[0.7, 0.3]")
    assert code == 0, output
    version = client.get_model_version(C, "2")
    record, _ = composition(client, version)
    assert record.combination == "ties" and record.density == 0.5 and record.weights == [0.7, 0.3]
    assert record.sources[0].score < 1.0 - record.max_task_loss  # else this test shows nothing
    assert version.tags["decision"] == "challenger" and version.tags["gates"] == f"fail: task:{A}"
    assert f"task:{A}" in output and "fail" in output and output.strip().endswith(": challenger"), output
    aliases = {k: str(v) for k, v in client.get_registered_model(C).aliases.items()}
    assert aliases["champion"] == "1" and aliases["challenger"] == "2"

    # `loraops promote` runs the same gates against the sources' champions as they are now.
    code, output = cli(layout, "promote", "2", "-S", f"registry.model_name={C}")
    assert code == 1 and "version 2: challenger" in output, output
    set_champion_score(client, A, 0.0)
    code, output = cli(layout, "promote", "2", "-S", f"registry.model_name={C}")
    assert code == 0 and "version 2: champion" in output, output
    assert str(client.get_registered_model(C).aliases["previous"]) == "1"


@pytest.mark.parametrize("combination", ["cat", "linear"])
def test_weight_zero_on_one_source_gives_back_the_other_exactly(sources, tmp_path, combination):
    """With rsLoRA sources PEFT's result would be sqrt(r) times too strong; compose saves it with scaling 1."""
    import torch

    layout, _, _ = sources
    tracking = tracking_for(layout, layout.local_tracking_uri())
    folders = [adapter_dir(download_verified(tracking, name, "1", into=tmp_path / name)[1]) for name in (A, B)]
    assert read_json(folders[0] / "adapter_config.json")["use_rslora"] is True  # else this shows nothing
    built = build(layout.base_model_dir, folders, [1.0, 0.0], ComposeParams(combination=combination), 0,
                  tmp_path / "built")
    prompts = [r["prompt"] for r in read_jsonl(layout.prepared_dir / "test.jsonl")[:3]]
    logits = []
    for folder in (folders[0], built, folders[1]):
        model, tokenizer = load_for_inference(layout.base_model_dir, folder)
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            logits.append(model(**batch).logits)
    assert torch.allclose(logits[1], logits[0], atol=1e-4)
    assert not torch.allclose(logits[2], logits[0], atol=1e-2)  # B is another adapter


@pytest.mark.parametrize("args, words", [
    ([A], "two or more sources"),
    ([A, "never-registered"], "never-registered has no version or alias 'champion'"),
    ([A, f"{B}@9"], f"{B} has no version or alias '9'"),
    ([A, f"{A}@1"], "given more than once"),
    ([A, B, "-S", "compose.combination=bogus"], "compose.combination"),
    ([A, B, "-S", "compose.weights=[1.0]"], "compose.weights has 1 values for 2 sources"),
    ([A, B], f"{B} version 1 was scored on test set"),  # B's rows are elsewhere: no --data
    ([A, B, "--data", "nobody=x"], "--data names nobody"),
])
def test_bad_input_fails_in_one_line_and_registers_nothing(sources, args, words):
    layout, _, client = sources
    before = {m.name: len(client.search_model_versions(f"name='{m.name}'")) for m in client.search_registered_models()}
    code, output = cli(layout, "compose", *args, "--name", "compose-bad")
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and words in errors[0] and "Traceback" not in output, output
    after = {m.name: len(client.search_model_versions(f"name='{m.name}'")) for m in client.search_registered_models()}
    assert after == before and "compose-bad" not in after


def test_a_composition_is_a_model_of_its_own(sources):
    layout, other, _ = sources
    code, output = cli(layout, "compose", A, B, "--name", A, "--data", f"{B}={other}")
    assert code == 2 and f"error: --name '{A}' is one of the sources" in output, output
    code, output = cli(layout, "compose", A, B, "--name", "a/b", "--data", f"{B}={other}")
    assert code == 2 and "error: --name 'a/b': not a registered model name" in output, output


def _version(folder: Path, sha: str) -> SimpleNamespace:
    write_json(folder / BASE_REFERENCE, {"base_model_sha256": sha})
    return SimpleNamespace(version="1", tags={"base_model.sha256": sha})


def test_sources_on_different_bases_or_not_on_the_local_base_are_refused(sources, tmp_path):
    layout = sources[0]
    local = base_content_sha256(layout.base_model_dir)
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    on_local, also_local = _version(tmp_path / "a", local), _version(tmp_path / "b", local)
    elsewhere = _version(tmp_path / "c", "f" * 64)
    check_bases(layout, [("a", on_local, tmp_path / "a"), ("b", also_local, tmp_path / "b")])  # one base: fine
    with pytest.raises(RegistryError, match="different bases"):
        check_bases(layout, [("a", on_local, tmp_path / "a"), ("c", elsewhere, tmp_path / "c")])
    with pytest.raises(RegistryError, match="not this project's base"):
        check_bases(layout, [("c", elsewhere, tmp_path / "c"), ("c2", elsewhere, tmp_path / "c")])
