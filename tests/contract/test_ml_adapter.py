"""Contract: the real ML-backend adapter process in front of the real tritonserver (CPU).

The requests are the ones Label Studio 1.23.2 sends (label_studio/ml/api_connector.py:
MLApi.setup, make_predictions, health); what Label Studio itself makes of the answers is
proven in test_label_studio.py. Here: each task's PDF text in its own prediction, in order,
a failed task without one while the others keep theirs, and basic auth on every endpoint.
Triton's own statistics show the batching: the tasks of one /predict reach the model as one
execution per batch of up to `batch` documents, not one per document.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.contract.conftest import Server
from tests.contract.ml_adapter import Adapter, FileServer, start_adapter
from tests.gpu.triton_smoke import minimal_pdf

pytestmark = pytest.mark.contract

CONFIG = """<View>
  <Header value="Read the document"/>
  <Pdf name="document" value="$pdf"/>
  <TextArea name="transcript" toName="document" editable="true"/>
  <TextArea name="notes" toName="document"/>
</View>"""
SENTENCES = [f"Oceanid adapter page {n} (sentence)" for n in range(5)]


@pytest.fixture(scope="module")
def files() -> Iterator[FileServer]:
    pdfs = {f"doc{n}.pdf": minimal_pdf(text) for n, text in enumerate(SENTENCES)}
    pdfs["broken.pdf"] = minimal_pdf("never read")[:60]
    with FileServer(pdfs) as server:
        yield server


@pytest.fixture(scope="module")
def adapter(triton: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Adapter]:
    with start_adapter(tmp_path_factory.mktemp("adapter"), triton.url, batch=2) as started:
        yield started


def counts(triton: Server) -> tuple[int, int]:
    """(executions, documents) Triton has run the model for, from its statistics API."""
    answer = requests.get(f"{triton.url}/v2/models/docling_granite_python/stats", timeout=10)
    (model,) = answer.json()["model_stats"]
    return model["execution_count"], model["inference_count"]


def predict(adapter: Adapter, tasks: list[dict], **kwargs) -> requests.Response:
    body = {
        "tasks": tasks,
        "project": "1.1700000000",
        "label_config": CONFIG,
        "params": {"login": None, "password": None, "context": None},
    }
    return requests.post(f"{adapter.url}/predict", json=body, timeout=60, **kwargs)


def test_every_endpoint_needs_the_credentials(adapter: Adapter) -> None:
    for method, path in (("GET", "/health"), ("POST", "/setup"), ("POST", "/predict"),
                         ("POST", "/webhook")):  # fmt: skip
        for auth in (None, (adapter.user, adapter.password + "x"), ("x", adapter.password)):
            url = f"{adapter.url}{path}"
            answer = requests.request(method, url, json={}, auth=auth, timeout=10)
            assert answer.status_code == 401, (method, path, auth)
            assert answer.headers["WWW-Authenticate"].startswith("Basic ")
    ok = requests.get(f"{adapter.url}/health", auth=adapter.auth, timeout=10)
    assert (ok.status_code, ok.json()["status"]) == (200, "UP")


def test_setup_names_the_served_model_version(adapter: Adapter) -> None:
    body = {"project": "1.1700000000", "schema": CONFIG, "hostname": "http://localhost:8080",
            "access_token": "x", "extra_params": None}  # fmt: skip
    answer = requests.post(f"{adapter.url}/setup", json=body, auth=adapter.auth, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"model_version": "docling_granite_python@1"}


def test_setup_without_a_textarea_says_so(adapter: Adapter) -> None:
    schema = '<View><Pdf name="document" value="$pdf"/><Choices name="c" toName="document">' \
             '<Choice value="a"/></Choices></View>'  # fmt: skip
    answer = requests.post(
        f"{adapter.url}/setup", json={"project": "2.1", "schema": schema}, auth=adapter.auth,
        timeout=10,
    )  # fmt: skip
    assert answer.status_code == 422
    # Label Studio keeps only str(HTTPError): the reason phrase carries the words
    with pytest.raises(requests.HTTPError, match="no <TextArea>"):
        answer.raise_for_status()


def test_each_task_gets_its_own_text_in_order(
    triton: Server, adapter: Adapter, files: FileServer
) -> None:
    tasks = [{"id": 10 + n, "data": {"pdf": f"{files.url}/doc{n}.pdf"}} for n in range(5)]
    executions, documents = counts(triton)
    answer = predict(adapter, tasks, auth=adapter.auth)
    assert answer.status_code == 200, answer.text
    # more than `batch` (2): three requests of 2, 2 and 1 documents, answered in order
    assert counts(triton) == (executions + 3, documents + 5)
    results = answer.json()["results"]
    assert len(results) == 5
    for sentence, prediction in zip(SENTENCES, results, strict=True):
        assert prediction["model_version"] == "docling_granite_python@1"
        (result,) = prediction["result"]
        assert (result["from_name"], result["to_name"], result["type"]) == (
            "transcript", "document", "textarea",
        )  # fmt: skip
        (text,) = result["value"]["text"]
        assert sentence in text
        assert "score" not in prediction  # pypdf gives none


def test_one_predict_within_the_batch_is_one_execution(
    triton: Server, adapter: Adapter, files: FileServer
) -> None:
    tasks = [{"id": 20 + n, "data": {"pdf": f"{files.url}/doc{n}.pdf"}} for n in (3, 4)]
    executions, documents = counts(triton)
    answer = predict(adapter, tasks, auth=adapter.auth)
    assert answer.status_code == 200, answer.text
    assert counts(triton) == (executions + 1, documents + 2)
    texts = [r["result"][0]["value"]["text"][0] for r in answer.json()["results"]]
    assert SENTENCES[3] in texts[0] and SENTENCES[4] in texts[1]


def test_a_bad_file_gets_no_prediction_and_the_others_keep_theirs(
    triton: Server, adapter: Adapter, files: FileServer
) -> None:
    tasks = [
        {"id": 1, "data": {"pdf": f"{files.url}/broken.pdf"}},  # Triton: not a readable PDF
        {"id": 2, "data": {"pdf": f"{files.url}/doc1.pdf"}},
        {"id": 3, "data": {"pdf": f"{files.url}/missing.pdf"}},  # 404
        {"id": 4, "data": {"pdf": "ftp://example.invalid/x.pdf"}},  # not http(s)
        {"id": 5, "data": {"text": "no pdf field"}},
    ]
    executions, documents = counts(triton)
    answer = predict(adapter, tasks, auth=adapter.auth)
    assert answer.status_code == 200, answer.text
    # the broken PDF and doc1 went in one batch; the model read doc1 all the same
    assert counts(triton) == (executions + 1, documents + 2)
    results = answer.json()["results"]
    assert [bool(r) for r in results] == [False, True, False, False, False]
    assert SENTENCES[1] in results[1]["result"][0]["value"]["text"][0]
    log = adapter.tail(50)
    for task in (1, 3, 4, 5):
        assert sum(f"task {task}: no prediction" in line for line in log.splitlines()) == 1
