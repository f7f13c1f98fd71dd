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
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from oceanid.triton_repo import render_repository, write_repository
from oceanid.triton_runtime import (
    assemble_backends,
    installed_distribution,
    python_env,
    server_command,
    server_env,
)
from tests.gpu.triton_smoke import (
    free_ports,
    infer_bytes,
    minimal_pdf,
    stop_server,
    wait_ready,
)

pytestmark = pytest.mark.contract

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
MODEL = "docling_granite_python"
ECHO = "echo_python"
PHRASE = "Oceanid contract page (42)"
READY_TIMEOUT_S = 90


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    repository: Path

    def client(self) -> triton_http.InferenceServerClient:
        return triton_http.InferenceServerClient(self.url.removeprefix("http://"))


def tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="session")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One tritonserver for the session, on free loopback ports, stopped by PID at the end."""
    distribution = installed_distribution()  # raises when the wheel is missing: a failure
    env = python_env(Path(sys.executable))  # this venv: numpy<2 and pypdf, like /opt/triton
    work = tmp_path_factory.mktemp("triton")
    repository = work / "models"
    for source in (ROOT / "triton-models", FIXTURES):
        files = render_repository(source, instance_kind="KIND_CPU", gpus=None)
        write_repository(files, repository)
    backends = assemble_backends(distribution, work / "backends", env.version)
    http_port, grpc_port, metrics_port = free_ports(3)
    command = server_command(
        distribution,
        backends=backends,
        model_repository=repository,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        # A failed load (test_unloadable_granite_dir...) leaves a model that never unloads, so
        # shutdown would wait out the default 30 s exit timeout; the test has no use for it.
        extra=["--exit-timeout-secs=5"],
    )
    log = work / "tritonserver.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            env=server_env(distribution, env, os.environ),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(f"http://127.0.0.1:{http_port}", process, repository)
    try:
        if not wait_ready(server.url, process, READY_TIMEOUT_S):
            pytest.fail(f"tritonserver not ready in {READY_TIMEOUT_S}s:\n{tail(log)}")
        yield server
    finally:
        stop_server(process, timeout=20)


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
