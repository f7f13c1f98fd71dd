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


def infer(client: triton_http.InferenceServerClient, **inputs: bytes) -> dict:
    tensors = []
    for name, value in inputs.items():
        tensor = triton_http.InferInput(name, [1], "BYTES")
        tensor.set_data_from_numpy(np.array([value], dtype=np.object_), binary_data=True)
        tensors.append(tensor)
    result = client.infer(MODEL, tensors, outputs=[triton_http.InferRequestedOutput("response")])
    return json.loads(result.as_numpy("response")[0])


def test_server_and_model_ready_with_declared_io(client: triton_http.InferenceServerClient) -> None:
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    metadata = client.get_model_metadata(MODEL)
    assert metadata["platform"] == "python"
    inputs = {i["name"]: (i["datatype"], i["shape"]) for i in metadata["inputs"]}
    assert inputs == {name: ("BYTES", [1]) for name in ("pdf_data", "prompt", "text")}
    outputs = {o["name"]: (o["datatype"], o["shape"]) for o in metadata["outputs"]}
    assert outputs == {"response": ("BYTES", [1])}


def test_served_config_is_the_rendered_one(client: triton_http.InferenceServerClient) -> None:
    config = client.get_model_config(MODEL)
    assert [(g["kind"], g["count"], g["gpus"]) for g in config["instance_group"]] == [
        ("KIND_CPU", 1, [])
    ]
    assert config["parameters"] == {"granite_model_dir": {"string_value": ""}}
    assert all(i["optional"] for i in config["input"])


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


def test_broken_pdf_is_a_request_error_and_server_stays_ready(
    triton: Server, client: triton_http.InferenceServerClient
) -> None:
    broken = minimal_pdf(PHRASE)[:60]
    with pytest.raises(InferenceServerException, match="pdf_data is not a readable PDF"):
        infer(client, pdf_data=broken)
    assert requests.get(f"{triton.url}/v2/health/ready", timeout=5).status_code == 200
    assert PHRASE in infer(client, pdf_data=minimal_pdf(PHRASE))["text"]  # the stub lives on


def test_neither_pdf_nor_text_is_an_error(client: triton_http.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match="send pdf_data .* or text"):
        infer(client, prompt=b"only a prompt")


def test_gpu_check_client_works_here(triton: Server) -> None:
    """tests/gpu uses a stdlib client (no tritonclient on the bare GPU machine): prove it here."""
    answer = json.loads(
        infer_bytes(triton.url, MODEL, {"pdf_data": minimal_pdf(PHRASE)}, "response")
    )
    assert PHRASE in answer["text"]
    with pytest.raises(RuntimeError, match="neither was given"):
        infer_bytes(triton.url, MODEL, {"prompt": b"x"}, "response")


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
