"""How the ML-backend adapter sends a /predict's documents to Triton: one request per batch.

Triton here is a stand-in HTTP server that speaks the parts of Triton's v2 protocol the
adapter uses (a model's config, and infer with BYTES tensors in the binary-data extension)
and answers each row as docling_granite_python does: the row's text, or {"error"} for a
document it cannot read. It records every infer request's shape and rows, so the tests see
exactly what the adapter sent. The real Triton and the real model are in
tests/contract/test_ml_adapter.py.
"""

from __future__ import annotations

import json
import logging
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from deploys.gpu_host.ml_backend.adapter import Adapter, Config, Credentials
from tests.unit.test_ml_adapter import serving

MODEL = "docling_granite_python"
LABEL_CONFIG = '<View><Pdf name="d" value="$pdf"/><TextArea name="t" toName="d"/></View>'


@dataclass
class FakeTriton:
    """What the stand-in serves and what it was sent."""

    max_batch_size: int = 8
    instance_group: list[dict] = field(default_factory=lambda: [{"count": 1, "kind": "KIND_CPU"}])
    delay_s: float = 0.0
    files: dict[str, bytes] = field(default_factory=dict)
    infers: list[tuple[list[int], list[bytes]]] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def rows_of(blob: bytes) -> list[bytes]:
    """BYTES elements of the binary-data extension: a 4-byte little-endian length, the bytes."""
    rows, position = [], 0
    while position < len(blob):
        (size,) = struct.unpack_from("<I", blob, position)
        rows.append(blob[position + 4 : position + 4 + size])
        position += 4 + size
    return rows


def handler(state: FakeTriton) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, body: bytes, kind: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path.startswith("/files/"):
                data = state.files.get(self.path.removeprefix("/files/"))
                self._send(200 if data is not None else 404, data or b"", "application/pdf")
            elif self.path == f"/v2/models/{MODEL}/config":
                config = {
                    "name": MODEL,
                    "max_batch_size": state.max_batch_size,
                    "instance_group": state.instance_group,
                }
                self._send(200, json.dumps(config).encode())
            else:
                self._send(404, b'{"error": "no such path"}')

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            size = int(self.headers.get("Inference-Header-Content-Length") or len(body))
            request = json.loads(body[:size])
            (tensor,) = request["inputs"]
            assert tensor["name"] == "pdf_data" and tensor["datatype"] == "BYTES"
            rows = rows_of(body[size : size + tensor["parameters"]["binary_data_size"]])
            with state.lock:
                state.infers.append((tensor["shape"], rows))
                state.in_flight += 1
                state.most_in_flight = max(state.most_in_flight, state.in_flight)
            try:
                time.sleep(state.delay_s)
                if tensor["shape"][0] > state.max_batch_size:  # Triton's own check
                    message = f"inference request batch-size must be <= {state.max_batch_size}"
                    self._send(400, json.dumps({"error": message}).encode())
                elif any(row.startswith(b"refuse") for row in rows):
                    self._send(500, json.dumps({"error": "the stub crashed"}).encode())
                else:
                    self._send(200, json.dumps(answer(tensor["shape"], rows)).encode())
            finally:
                with state.lock:
                    state.in_flight -= 1

        def log_message(self, *args: object) -> None:
            pass

    return Handler


def answer(shape: list[int], rows: list[bytes]) -> dict:
    """docling_granite_python's answer: one JSON document per row, {"error"} for a bad file."""
    documents = [
        {"error": "pdf_data is not a readable PDF"} if row.startswith(b"bad") else
        {"text": row.decode(), "model": "fake", "device": "cpu"}
        for row in rows
    ]  # fmt: skip
    output = {"name": "response", "datatype": "BYTES", "shape": shape}
    output["data"] = [json.dumps(document) for document in documents]
    return {"model_name": MODEL, "model_version": "1", "outputs": [output]}


@pytest.fixture
def triton() -> Iterator[tuple[str, FakeTriton]]:
    state = FakeTriton()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler(state))
    httpd.daemon_threads = True
    with serving(httpd) as url:
        yield url, state


def predict(url: str, state: FakeTriton, names: list[str], batch: int) -> list:
    """One /predict of a task per file name (a name not in state.files is a 404)."""
    config = Config.from_dict({"credentials_file": "x", "triton_url": url, "batch": batch})
    tasks = [{"id": n, "data": {"pdf": f"{url}/files/{name}"}} for n, name in enumerate(names)]
    body = {"tasks": tasks, "project": "1.1", "label_config": LABEL_CONFIG}
    return Adapter(config, Credentials("u", "p")).predict(body)["results"]


def texts(results: list) -> list[str | None]:
    return [r["result"][0]["value"]["text"][0] if r else None for r in results]


def test_tasks_go_in_one_request_per_batch_and_come_back_in_order(triton) -> None:
    url, state = triton
    names = [f"doc{n}" for n in range(5)]
    state.files = {name: f"text of {name}".encode() for name in names}
    results = predict(url, state, names, batch=2)
    assert [shape for shape, _rows in state.infers] == [[2, 1], [2, 1], [1, 1]]
    assert [row for _shape, rows in state.infers for row in rows] == [
        f"text of {name}".encode() for name in names
    ]
    assert texts(results) == [f"text of {name}" for name in names]
    assert {r["model_version"] for r in results} == {f"{MODEL}@1"}


def test_a_batch_is_capped_by_the_models_max_batch_size(triton) -> None:
    url, state = triton
    state.max_batch_size = 3
    names = [f"doc{n}" for n in range(7)]
    state.files = {name: name.encode() for name in names}
    results = predict(url, state, names, batch=8)
    assert [shape for shape, _rows in state.infers] == [[3, 1], [3, 1], [1, 1]]
    assert texts(results) == names


def test_a_bad_document_fails_alone_and_is_logged_once(triton, caplog) -> None:
    url, state = triton
    state.files = {"good1": b"one", "bad": b"bad pdf", "good2": b"two"}
    with caplog.at_level(logging.WARNING, logger="oceanid-ml-backend"):
        results = predict(url, state, ["good1", "bad", "missing", "good2"], batch=8)
    # the file that could not be fetched is never sent; the other three go in one request
    assert state.infers == [([3, 1], [b"one", b"bad pdf", b"two"])]
    assert texts(results) == ["one", None, None, "two"]
    assert results[1] == [] and results[2] == []
    lines = [record.getMessage() for record in caplog.records]
    unread = "the model could not read it: pdf_data is not a readable PDF"
    assert [line for line in lines if line.startswith("task 1: no prediction")] == [
        f"task 1: no prediction: Triton: {unread}"
    ]
    assert sum(line.startswith("task 2: no prediction: cannot fetch") for line in lines) == 1
    assert not [line for line in lines if line.startswith(("task 0", "task 3"))]


def test_a_refused_batch_costs_only_its_own_tasks(triton, caplog) -> None:
    url, state = triton
    state.files = {"a": b"a", "b": b"b", "c": b"refuse me", "d": b"d", "e": b"e"}
    with caplog.at_level(logging.WARNING, logger="oceanid-ml-backend"):
        results = predict(url, state, ["a", "b", "c", "d", "e"], batch=2)
    assert [shape for shape, _rows in state.infers] == [[2, 1], [2, 1], [1, 1]]
    assert texts(results) == ["a", "b", None, None, "e"]
    lines = [record.getMessage() for record in caplog.records]
    for task in (2, 3):
        (line,) = [line for line in lines if line.startswith(f"task {task}: no prediction")]
        assert "the stub crashed" in line


def test_as_many_batches_in_flight_as_the_model_has_instances(triton) -> None:
    url, state = triton
    state.instance_group = [{"count": 1, "kind": "KIND_GPU", "gpus": [0, 1]}]
    state.delay_s = 0.3
    names = [f"doc{n}" for n in range(8)]
    state.files = {name: name.encode() for name in names}
    results = predict(url, state, names, batch=2)
    assert len(state.infers) == 4 and state.most_in_flight == 2
    assert texts(results) == names


def test_a_model_that_takes_no_batch_is_named(triton, caplog) -> None:
    url, state = triton
    state.max_batch_size = 0
    state.files = {"a": b"a"}
    with caplog.at_level(logging.WARNING, logger="oceanid-ml-backend"):
        results = predict(url, state, ["a"], batch=8)
    assert results == [[]] and state.infers == []
    (line,) = [record.getMessage() for record in caplog.records]
    assert "declares max_batch_size 0: it takes no batch" in line
