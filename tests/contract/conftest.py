"""The real tritonserver every contract test talks to: one per session.

The repository is rendered by oceanid.triton_repo exactly as the deploy renders it for a CPU
host (plus the test-only models in fixtures/), and the server is assembled and started by
oceanid.triton_runtime exactly as on calypso. A missing wheel fails (installed_distribution
raises): a contract that silently skips proves nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import tritonclient.http as triton_http

from oceanid.triton_repo import render_repository, write_repository
from oceanid.triton_runtime import (
    assemble_backends,
    installed_distribution,
    python_env,
    server_command,
    server_env,
)
from tests.gpu.triton_smoke import free_ports, stop_server, wait_ready

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
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


@contextmanager
def start_triton(work: Path) -> Iterator[Server]:
    """A tritonserver on free loopback ports, files under `work`, stopped by PID on exit.

    Also what `make bench-predict` (tests/contract/bench_predict.py) measures against.
    """
    distribution = installed_distribution()  # raises when the wheel is missing: a failure
    env = python_env(Path(sys.executable))  # this venv: numpy<2 and pypdf, like /opt/triton
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
            raise RuntimeError(f"tritonserver not ready in {READY_TIMEOUT_S}s:\n{tail(log)}")
        yield server
    finally:
        stop_server(process, timeout=20)


@pytest.fixture(scope="session")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One tritonserver for the session (start_triton), stopped by PID at the end."""
    try:
        with start_triton(tmp_path_factory.mktemp("triton")) as server:
            yield server
    except RuntimeError as exc:
        pytest.fail(str(exc))
