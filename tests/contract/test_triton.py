"""Contract: the real tritonserver (from the nvidia-pytriton wheel, on CPU) serves our repository.

The repository is rendered by oceanid.triton_repo exactly as the deploy renders it (KIND_CPU, the
lab's setting) and the server is assembled and started by oceanid.triton_runtime exactly as on
calypso, so what passes here is the file set and the command line production gets.

The server runs in explicit model-control mode (see triton_runtime.server_command): the deploy
uploads a new version, then asks Triton to load it, without restarting the service. That is the
flow test_new_version_loads_without_restart exercises.

A missing wheel fails these tests (the fixture raises): a contract that silently skips proves
nothing.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator

import numpy as np
import pytest
import requests
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from tests.contract.conftest import Server
from tests.gpu.triton_smoke import (
    infer_bytes,
    infer_rows,
    minimal_pdf,
)

pytestmark = pytest.mark.contract

MODEL = "docling_granite_python"
ECHO = "echo_python"
PHRASE = "Oceanid contract page (42)"


@pytest.fixture
def client(triton: Server) -> Iterator[triton_http.InferenceServerClient]:
    """A client per test, closed after it: Triton waits out open connections at shutdown."""
    client = triton.client()
    yield client
    client.close()


def infer_batch(client: triton_http.InferenceServerClient, **inputs: list[bytes]) -> list[dict]:
    """One request: each input a [B, 1] tensor (row i is document i); B documents back."""
    tensors = []
    for name, rows in inputs.items():
        tensor = triton_http.InferInput(name, [len(rows), 1], "BYTES")
        values = np.array([[row] for row in rows], dtype=np.object_).reshape(len(rows), 1)
        tensor.set_data_from_numpy(values, binary_data=True)
        tensors.append(tensor)
    result = client.infer(MODEL, tensors, outputs=[triton_http.InferRequestedOutput("response")])
    response = result.as_numpy("response")
    assert response.shape == (len(next(iter(inputs.values()))), 1)
    return [json.loads(row) for row in response.reshape(-1)]


def infer(client: triton_http.InferenceServerClient, **inputs: bytes) -> dict:
    """One document, as a batch of one ([1, 1])."""
    (answer,) = infer_batch(client, **{name: [value] for name, value in inputs.items()})
    return answer


def stats(client: triton_http.InferenceServerClient) -> dict:
    (model,) = client.get_inference_statistics(MODEL)["model_stats"]
    return model


def test_server_and_model_ready_with_declared_io(client: triton_http.InferenceServerClient) -> None:
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    metadata = client.get_model_metadata(MODEL)
    assert metadata["platform"] == "python"
    inputs = {i["name"]: (i["datatype"], i["shape"]) for i in metadata["inputs"]}
    assert inputs == {name: ("BYTES", [-1, 1]) for name in ("pdf_data", "prompt", "text")}
    outputs = {o["name"]: (o["datatype"], o["shape"]) for o in metadata["outputs"]}
    assert outputs == {"response": ("BYTES", [-1, 1])}  # -1: the batch


def test_served_config_is_the_rendered_one(client: triton_http.InferenceServerClient) -> None:
    config = client.get_model_config(MODEL)
    assert [(g["kind"], g["count"], g["gpus"]) for g in config["instance_group"]] == [
        ("KIND_CPU", 1, [])
    ]
    assert config["parameters"] == {"granite_model_dir": {"string_value": ""}}
    assert all(i["optional"] for i in config["input"])
    assert config["max_batch_size"] > 1


def test_pdf_text_comes_back(client: triton_http.InferenceServerClient) -> None:
    answer = infer(client, pdf_data=minimal_pdf(PHRASE), prompt=b"Extract the text.")
    assert PHRASE in answer["text"]
    assert answer["length"] == len(answer["text"])
    assert answer["prompt"] == "Extract the text."
    assert answer["model"] == "pypdf (no granite model configured)"
    assert (answer["device"], answer["pages"]) == ("cpu", 1)


def test_text_input_without_pdf(client: triton_http.InferenceServerClient) -> None:
    answer = infer(client, text="déjà vu".encode())
    assert (answer["text"], answer["length"]) == ("déjà vu", 7)
    assert answer["prompt"] == "Convert this page to docling."
    assert answer["model"] == "text input (passed through)"


def test_broken_pdf_is_a_document_error_and_server_stays_ready(
    triton: Server, client: triton_http.InferenceServerClient
) -> None:
    broken = minimal_pdf(PHRASE)[:60]
    answer = infer(client, pdf_data=broken)
    assert list(answer) == ["error"]
    assert answer["error"].startswith("pdf_data is not a readable PDF")
    assert requests.get(f"{triton.url}/v2/health/ready", timeout=5).status_code == 200
    assert PHRASE in infer(client, pdf_data=minimal_pdf(PHRASE))["text"]  # the stub lives on


def test_neither_pdf_nor_text_is_an_error(client: triton_http.InferenceServerClient) -> None:
    answer = infer(client, prompt=b"only a prompt")
    assert answer["error"] == "send pdf_data (the PDF's bytes) or text; neither was given"
    with pytest.raises(InferenceServerException, match="0 inputs"):
        client.infer(MODEL, [])  # nothing at all: the request itself fails


def test_a_batch_is_one_execution_and_a_bad_document_fails_alone(
    client: triton_http.InferenceServerClient,
) -> None:
    """Rows in, rows out, in order; one unreadable PDF costs its own row only."""
    before = stats(client)
    pdfs = [minimal_pdf(f"{PHRASE} first"), minimal_pdf(PHRASE)[:60], minimal_pdf(f"{PHRASE} last")]
    first, broken, last = infer_batch(client, pdf_data=pdfs, prompt=[b"a", b"b", b"c"])
    assert f"{PHRASE} first" in first["text"] and first["prompt"] == "a"
    assert broken["error"].startswith("pdf_data is not a readable PDF")
    assert f"{PHRASE} last" in last["text"] and last["prompt"] == "c"
    after = stats(client)
    assert after["execution_count"] - before["execution_count"] == 1
    assert after["inference_count"] - before["inference_count"] == 3
    assert any(b["batch_size"] == 3 for b in after["batch_stats"])
    # a PDF in one row and text in another: an empty row is an input left out for that document
    pdf, text = infer_batch(client, pdf_data=[minimal_pdf(PHRASE), b""], text=[b"", b"plain"])
    assert PHRASE in pdf["text"] and (text["text"], text["model"]) == (
        "plain",
        "text input (passed through)",
    )


def test_a_batch_over_the_bound_is_refused(client: triton_http.InferenceServerClient) -> None:
    bound = client.get_model_config(MODEL)["max_batch_size"]
    with pytest.raises(InferenceServerException, match=f"batch-size must be <= {bound}"):
        infer_batch(client, text=[b"x"] * (bound + 1))
    with pytest.raises(InferenceServerException, match="batch size does not match"):
        infer_batch(client, text=[b"x", b"y"], prompt=[b"p"])


def test_gpu_check_client_works_here(triton: Server) -> None:
    """tests/gpu uses a stdlib client (no tritonclient on the bare GPU machine): prove it here."""
    answer = json.loads(
        infer_bytes(triton.url, MODEL, {"pdf_data": minimal_pdf(PHRASE)}, "response")
    )
    assert PHRASE in answer["text"]
    alone = json.loads(infer_bytes(triton.url, MODEL, {"prompt": b"x"}, "response"))
    assert "neither was given" in alone["error"]
    pdfs = [minimal_pdf(f"{PHRASE} {n}") for n in range(3)]
    rows = infer_rows(triton.url, MODEL, {"pdf_data": pdfs}, "response")
    assert [f"{PHRASE} {n}" in json.loads(row)["text"] for n, row in enumerate(rows)] == [True] * 3
    with pytest.raises(RuntimeError, match=r"refused the request \(400\).*batch size does not"):
        infer_rows(triton.url, MODEL, {"pdf_data": pdfs, "prompt": [b"p"]}, "response")


def test_unloadable_granite_dir_fails_the_load_and_keeps_the_old_model(
    client: triton_http.InferenceServerClient,
) -> None:
    config = client.get_model_config(MODEL)
    config["parameters"]["granite_model_dir"]["string_value"] = "/nonexistent/granite"
    try:
        with pytest.raises(InferenceServerException, match="'/nonexistent/granite' is not a model"):
            client.load_model(MODEL, config=json.dumps(config))
        assert client.is_model_ready(MODEL)
    finally:
        client.load_model(MODEL)  # back to the repository's own config
    assert client.get_model_config(MODEL)["parameters"]["granite_model_dir"] == {"string_value": ""}


def test_new_version_loads_without_restart(
    triton: Server, client: triton_http.InferenceServerClient
) -> None:
    def echo(version: str = "") -> bytes:
        x = triton_http.InferInput("x", [1], "BYTES")
        x.set_data_from_numpy(np.array([b"hi"], dtype=np.object_))
        return client.infer(ECHO, [x], model_version=version).as_numpy("y")[0]

    pid = triton.process.pid
    assert echo() == b"v1:hi"
    shutil.copytree(triton.repository / ECHO / "1", triton.repository / ECHO / "2")
    client.load_model(ECHO)  # what the deploy does after uploading a version folder
    assert echo() == b"v2:hi"
    assert client.is_model_ready(ECHO, "2")
    assert not client.is_model_ready(ECHO, "1")  # version_policy default: latest 1
    assert triton.process.poll() is None and triton.process.pid == pid
