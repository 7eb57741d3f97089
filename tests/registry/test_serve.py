"""``loraops serve`` through a real HTTP server on 127.0.0.1: the champions of several registered models as
named adapters on one tiny base, answered per row in mixed batches exactly as each adapter alone answers;
a moved champion picked up while requests keep coming; a version trained on another base refused; every bad
request (a task an adapter does not answer among them) a 4xx with one line. A composition asked per task
through this server: tests/registry/test_compose.py."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest

from loraops.core import read_jsonl
from loraops.registry.library import BASE_SHA256_TAG, AdapterLibrary
from loraops.registry.scoring_server import Limits, ScoringServer
from loraops.registry.serving import load_verified
from tests.helpers.registry import client_for, evaluation, perturbed_adapter, register, tracking_for

A, B, OTHER = "serve-a", "serve-b", "serve-other-base"


@pytest.fixture(scope="module")
def served(trained_project):
    layout = trained_project
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        uri = layout.local_tracking_uri()
        client = client_for(uri)
        register(layout, A, evaluation())
        with perturbed_adapter(layout):
            register(layout, B, evaluation())
        other = register(layout, OTHER, evaluation())
        client.set_model_version_tag(OTHER, str(other["version"]), BASE_SHA256_TAG, "0" * 64)
        library = AdapterLibrary(tracking_for(layout, uri), layout.base_model_dir, [A, B, OTHER], batch_size=4)
        library.refresh()
        server = ScoringServer(library, "127.0.0.1", 0, poll_seconds=0.5,
                               limits=Limits(max_body_bytes=20_000, max_rows=8, max_text_chars=500)).start()
        texts = [row["text"] for row in read_jsonl(layout.prepared_dir / "test.jsonl")[:6]]
        yield layout, client, server, texts
        server.stop()
        library.close()


def post(server, body, raw: bytes | None = None, path: str = "/invocations"):
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(server.url + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def get(server, path):
    with urllib.request.urlopen(server.url + path, timeout=10) as response:
        return response.status, json.loads(response.read())


def labels(server, texts, adapters):
    status, body = post(server, {"dataframe_records": [{"text": t, "adapter": a} for t, a in zip(texts, adapters)]})
    assert status == 200, body
    return [p["label"] for p in body["predictions"]]


def test_per_row_adapters_answer_as_each_adapter_alone(served):
    layout, _, server, texts = served
    tracking = tracking_for(layout, layout.local_tracking_uri())
    alone = {name: load_verified(tracking, name, "champion").predict({"text": texts}) for name in (A, B)}
    assert alone[A] != alone[B]  # two different adapters, or this test shows nothing
    mixed = [A if i % 2 == 0 else B for i in range(len(texts))]
    assert labels(server, texts, mixed) == [alone[a][i] for i, a in enumerate(mixed)]
    assert labels(server, texts, [B] * len(texts)) == alone[B]
    # MLflow's other request shapes reach the same answers.
    status, body = post(server, {"inputs": {"text": texts[:2], "adapter": [B, A]}})
    assert status == 200 and [p["label"] for p in body["predictions"]] == [alone[B][0], alone[A][1]]
    status, body = post(server, {"dataframe_split": {"columns": ["adapter", "text"], "data": [[A, texts[3]]]}})
    assert status == 200 and body["predictions"] == [{"label": alone[A][3], "adapter": A, "version": "1"}]


def test_an_adapter_that_is_no_composition_answers_its_own_task_only(served):
    _, _, server, texts = served
    assert get(server, "/health")[1]["tasks"] == {}  # no composition served
    plain = labels(server, texts[:3], [A] * 3)
    status, body = post(server, {"dataframe_records": [{"text": t, "adapter": A, "task": A} for t in texts[:3]]})
    assert status == 200 and [p["label"] for p in body["predictions"]] == plain, body
    assert all("task" not in p for p in body["predictions"])
    status, body = post(server, {"inputs": {"text": texts[:2], "adapter": [A, B], "task": [A, B]}})
    assert status == 200 and [p["label"] for p in body["predictions"]] == [plain[0], labels(server, texts[1:2], [B])[0]]


def test_an_adapter_trained_on_another_base_is_refused_with_the_reason(served):
    _, _, server, texts = served
    status, health = get(server, "/health")
    assert status == 200 and set(health["served"]) == {A, B} and OTHER not in health["served"]
    assert "not the served base" in health["refused"][OTHER]
    status, body = post(server, {"dataframe_records": [{"text": texts[0], "adapter": OTHER}]})
    assert status == 404 and "not the served base" in body["error"], body


@pytest.mark.parametrize("raw, status, words", [
    (b"{not json", 400, "not JSON"),
    (json.dumps({"dataframe_records": [{"adapter": A}]}).encode(), 400, "'text' is missing"),
    (json.dumps({"dataframe_records": [{"text": "hi"}]}).encode(), 400, "'adapter' is missing"),
    (json.dumps({"dataframe_records": [{"text": "hi", "adapter": "nope"}]}).encode(), 404, "'nope' is not served"),
    (json.dumps({"dataframe_records": [{"text": "hi", "adapter": A}] * 9}).encode(), 413, "at most 8"),
    (json.dumps({"dataframe_records": [{"text": "x" * 501, "adapter": A}]}).encode(), 413, "at most 500"),
    (json.dumps({"dataframe_records": [{"text": "x" * 400, "adapter": A}] * 60}).encode(), 413, "at most 20000"),
    (json.dumps({"rows": []}).encode(), 400, "exactly one of"),
    (json.dumps([1, 2]).encode(), 400, "JSON object"),
    (json.dumps({"dataframe_split": {"columns": ["text"]}}).encode(), 400, "dataframe_split needs"),
    (json.dumps({"dataframe_records": [{"text": "hi", "adapter": A, "task": B}]}).encode(), 400,
     f"task '{B}': {A} is not a composition; it answers its own task '{A}' only"),
    (json.dumps({"dataframe_records": [{"text": "hi", "adapter": A, "task": 3}]}).encode(), 400,
     "'task' must be a string"),
    (json.dumps({"inputs": {"text": ["hi", "ho"], "adapter": A, "task": [A]}}).encode(), 400, "2 texts but 1 tasks"),
])
def test_each_bad_request_gets_a_4xx_with_one_line(served, raw, status, words):
    _, _, server, _ = served
    got, body = post(server, None, raw=raw)
    assert got == status and words in body["error"] and "\n" not in body["error"], body
    assert get(server, "/ping")[0] == 200  # and the server goes on


def test_serve_with_nothing_to_serve_fails_with_one_line(served):
    from typer.testing import CliRunner

    from loraops.cli import app

    layout = served[0]
    result = CliRunner().invoke(app, ["serve", "-m", "never-registered", "-m", OTHER, "--port", "0",
                                      "-p", str(layout.params_file)])
    assert result.exit_code == 2 and "error: nothing to serve" in result.output, result.output
    assert "never-registered: no champion" in result.output and "not the served base" in result.output


def test_unknown_endpoint_is_a_404(served):
    _, _, server, _ = served
    assert post(server, {}, path="/predict")[0] == 404


def test_a_moved_champion_is_picked_up_without_dropping_requests(served):
    layout, client, server, texts = served
    b_answers = labels(server, texts, [B] * len(texts))
    failures, answered, stop = [], [], threading.Event()

    def keep_asking():
        while not stop.is_set():
            status, body = post(server, {"dataframe_records": [{"text": texts[0], "adapter": A}]})
            (answered if status == 200 else failures).append(body)

    asker = threading.Thread(target=keep_asking)
    asker.start()
    try:
        with perturbed_adapter(layout):  # version 2 of A: B's weights
            version = str(register(layout, A, evaluation())["version"])
        client.set_registered_model_alias(A, "champion", version)  # a hand move, if the gates did not move it
        deadline = time.monotonic() + 120
        while get(server, "/health")[1]["served"][A] != version:
            assert time.monotonic() < deadline, "the moved champion was not picked up"
            time.sleep(0.2)
    finally:
        stop.set()
        asker.join()
    assert not failures and answered, failures
    assert labels(server, texts, [A] * len(texts)) == b_answers  # the new version answers
    assert [p["version"] for p in post(server, {"dataframe_records": [{"text": texts[0], "adapter": A}]})[1][
        "predictions"]] == [version]


def test_what_the_library_loaded_is_out_of_the_collectors_way(served):
    """After loading, the base and adapters are frozen out of the garbage collector: a full collection during
    a request does not walk them (bench/serve.py counts the collections during timed passes)."""
    import gc

    assert gc.get_freeze_count() > 10_000  # the base, the adapters and every imported module
