"""``loraops serve``'s HTTP side: MLflow's scoring protocol over the adapter library, standard library only.

- ``GET /ping``: 200 once the server answers. ``GET /health``: the base hash, the served versions, each
  served composition's tasks and the refused versions with their reasons.
- ``POST /invocations`` with ``{"dataframe_records": [{"text": ..., "adapter": NAME}, ...]}``,
  ``{"dataframe_split": {"columns": [...], "data": [[...], ...]}}`` or ``{"inputs": ...}`` (records, a
  ``{"text": [...], "adapter": [...]}`` dict, or plain strings). ``adapter`` may be left out when one model
  is served. A row for a composition may name its ``task`` (a source model's name; its first source's task
  when left out); a row for any other model only its own name. The answer is
  ``{"predictions": [{"label", "adapter", "version"}, ...]}``, one per row (with ``task`` for a composition).
- A bad request (not JSON, wrong fields, a task the adapter does not answer: 400; an unknown or refused
  adapter: 404; a body or batch over the limits: 413) is a 4xx with ``{"error": "<one line>"}``; nothing a
  client sends can end the server.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from loraops.registry.library import AdapterLibrary, log
from loraops.registry.serving import TaskError


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 1_000_000
    max_rows: int = 64
    max_text_chars: int = 4000


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _records(payload: Any) -> list[Any]:
    if not isinstance(payload, dict):
        raise BadRequest(400, "the body must be a JSON object with dataframe_records, dataframe_split or inputs")
    keys = [k for k in ("dataframe_records", "dataframe_split", "inputs", "instances") if k in payload]
    if len(keys) != 1:
        raise BadRequest(400, "give exactly one of dataframe_records, dataframe_split, inputs"
                         + f" (got {', '.join(keys or map(str, payload)) or 'none'})")
    data = payload[keys[0]]
    if keys[0] == "dataframe_split":
        if not isinstance(data, dict) or not isinstance(data.get("columns"), list) or \
                not isinstance(data.get("data"), list) or not all(isinstance(r, list) for r in data["data"]):
            raise BadRequest(400, "dataframe_split needs 'columns' (a list) and 'data' (a list of lists)")
        return [dict(zip(data["columns"], row)) for row in data["data"]]
    if isinstance(data, dict):  # {"text": [...], "adapter": [...], "task": [...]} or one record
        if isinstance(data.get("text"), list):
            columns = {}
            for key in ("adapter", "task"):
                values = data.get(key)
                if isinstance(values, list) and len(values) != len(data["text"]):
                    raise BadRequest(400, f"inputs: {len(data['text'])} texts but {len(values)} {key}s")
                columns[key] = values if isinstance(values, list) else [values] * len(data["text"])
            return [{"text": t, "adapter": columns["adapter"][i], "task": columns["task"][i]}
                    for i, t in enumerate(data["text"])]
        return [data]
    if isinstance(data, str):
        return [data]
    if not isinstance(data, list):
        raise BadRequest(400, f"{keys[0]} must be a list of records")
    return data


def parse_rows(payload: Any, served: list[str], limits: Limits) -> list[tuple[str, str, str | None]]:
    """``[(text, adapter, task or None)]`` from a scoring request, or a :class:`BadRequest` naming what is wrong."""
    records = _records(payload)
    if not records:
        raise BadRequest(400, "no rows to answer")
    if len(records) > limits.max_rows:
        raise BadRequest(413, f"{len(records)} rows; at most {limits.max_rows} per request (--max-rows)")
    rows = []
    for i, record in enumerate(records):
        if isinstance(record, str):
            record = {"text": record}
        if not isinstance(record, dict):
            raise BadRequest(400, f"row {i}: a record must be an object with 'text' (and 'adapter')")
        text, adapter = record.get("text"), record.get("adapter")
        if not isinstance(text, str) or not text.strip():
            raise BadRequest(400, f"row {i}: 'text' is missing or not a non-empty string")
        if len(text) > limits.max_text_chars:
            raise BadRequest(413, f"row {i}: text of {len(text)} characters; at most {limits.max_text_chars}")
        if adapter is None:
            if len(served) != 1:
                raise BadRequest(400, f"row {i}: 'adapter' is missing (served: {', '.join(served) or 'none'})")
            adapter = served[0]
        if not isinstance(adapter, str):
            raise BadRequest(400, f"row {i}: 'adapter' must be a string")
        task = record.get("task")
        if task is not None and not isinstance(task, str):
            raise BadRequest(400, f"row {i}: 'task' must be a string (a source model of a composition)")
        rows.append((text, adapter, task))
    return rows


def _handler(library: AdapterLibrary, limits: Limits) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # one line per request is noise here
            pass

        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str) -> None:
            self.close_connection = True  # an unread body must not be taken for the next request
            self._send(status, {"error": message.splitlines()[0] if message else "error"})

        def do_GET(self) -> None:
            if self.path == "/ping":
                self._send(200, {"status": "ok"})
            elif self.path == "/health":
                self._send(200, {"status": "ok" if library.versions() else "no adapter served",
                                 "base_model_sha256": library.base_sha256, "served": library.versions(),
                                 "tasks": library.tasks(), "refused": library.refused()})
            else:
                self._error(404, f"no endpoint {self.path.split('?')[0]!r} (GET /ping, /health; POST /invocations)")

        def do_POST(self) -> None:
            try:
                if self.path != "/invocations":
                    raise BadRequest(404, f"no endpoint {self.path.split('?')[0]!r} (POST /invocations)")
                try:
                    length = int(self.headers.get("Content-Length", ""))
                except ValueError:
                    raise BadRequest(411, "a Content-Length header is required") from None
                if length < 0 or length > limits.max_body_bytes:
                    raise BadRequest(413, f"body of {length} bytes; at most {limits.max_body_bytes} (--max-body-bytes)")
                body = self.rfile.read(length)
                try:
                    payload = json.loads(body)
                except (UnicodeDecodeError, ValueError) as exc:
                    raise BadRequest(400, f"the body is not JSON: {exc}") from None
                rows = parse_rows(payload, sorted(library.versions()), limits)
                try:
                    predictions = library.answer([(text, adapter) for text, adapter, _ in rows],
                                                 [task for _, _, task in rows])
                except KeyError as exc:
                    raise BadRequest(404, str(exc.args[0])) from None
                except TaskError as exc:  # the adapter is served; the row asks it something it does not answer
                    raise BadRequest(400, str(exc)) from None
                self._send(200, {"predictions": predictions})
            except BadRequest as exc:
                self._error(exc.status, str(exc))
            except Exception as exc:  # a fault of ours, not of the request: answered, logged, the server goes on
                log(f"error answering a request: {type(exc).__name__}: {exc}")
                self._error(500, f"internal error: {type(exc).__name__}")

        do_PUT = do_DELETE = do_PATCH = lambda self: self._error(405, f"{self.command} is not supported")  # noqa: E731

    return Handler


class ChampionPoller(threading.Thread):
    """Every ``seconds``, :meth:`AdapterLibrary.refresh`; a failure is a logged line, never the server's end."""

    def __init__(self, library: AdapterLibrary, seconds: float):
        super().__init__(daemon=True, name="loraops-champion-poll")
        self.library, self.seconds = library, seconds
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.seconds):
            try:
                for line in self.library.refresh():
                    log(line)
            except Exception as exc:
                log(f"champion poll failed, still serving what was loaded: {type(exc).__name__}: {exc}")

    def stop(self) -> None:
        self.halt.set()


class ScoringServer:
    """The HTTP server and its poll; ``start()`` serves on a thread, ``serve_forever()`` in the caller."""

    def __init__(self, library: AdapterLibrary, host: str = "127.0.0.1", port: int = 5000,
                 poll_seconds: float | None = 30.0, limits: Limits = Limits()):
        self.library = library
        self.httpd = ThreadingHTTPServer((host, port), _handler(library, limits))
        self.httpd.daemon_threads = True
        self.poller = ChampionPoller(library, poll_seconds) if poll_seconds else None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> ScoringServer:
        if self.poller is not None:
            self.poller.start()
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True, name="loraops-serve")
        self.thread.start()
        return self

    def serve_forever(self) -> None:
        if self.poller is not None:
            self.poller.start()
        self.httpd.serve_forever()

    def stop(self) -> None:
        if self.poller is not None:
            self.poller.stop()
        self.httpd.shutdown()
        self.httpd.server_close()
