"""Contract: the deploy's Triton steps, as generated shell, against the real tritonserver.

Each test starts its own tritonserver (from the nvidia-pytriton wheel, on CPU, on the service
port and the two after it, as the unit does) over a repository rendered like the deploy's, then
runs the commands the operations generate. systemd is the only stand-in: `systemctl show`
reports the server process as systemd would (running, or dead once it exited) and `journalctl`
prints the server's real log, so "the run fails with Triton's own log lines" is Triton's output.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from facts.managed import ManagedState
from oceanid.triton_repo import render_repository, write_repository
from oceanid.triton_runtime import (
    assemble_backends,
    installed_distribution,
    python_env,
    server_command,
    server_env,
)
from operations import _desired
from operations import triton as triton_ops
from operations.managed import DesiredState, ManagedFile
from tests.gpu.triton_smoke import stop_server
from tests.unit.test_operations import managed_state, run_op

pytestmark = pytest.mark.contract

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ECHO = "echo_python"
UNIT = "tritonserver.service"


def consecutive_ports() -> int:
    """An HTTP port whose next two ports (gRPC, metrics) were free a moment ago."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + 2 > 65535:
            continue
        sockets = [socket.socket() for _ in range(3)]
        try:
            for offset, sock in enumerate(sockets):
                sock.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no three consecutive free ports on 127.0.0.1")


class Triton:
    def __init__(self, work: Path, repository: Path) -> None:
        distribution = installed_distribution()
        env = python_env(Path(sys.executable))
        self.port = consecutive_ports()
        self.repository = repository
        self.log = work / "tritonserver.log"
        command = server_command(
            distribution,
            backends=assemble_backends(distribution, work / "backends", env.version),
            model_repository=repository,
            http_port=self.port,
            grpc_port=self.port + 1,
            metrics_port=self.port + 2,
            extra=["--exit-timeout-secs=5"],
        )
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                command,
                env=server_env(distribution, env, os.environ),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.systemd = self._fake_systemd(work / "bin")

    def _fake_systemd(self, bin_dir: Path) -> dict[str, str]:
        bin_dir.mkdir()
        (bin_dir / "systemctl").write_text(
            "#!/bin/sh\n"
            'case "$*" in\n'
            f"*SubState*) kill -0 {self.process.pid} 2>/dev/null && echo running || echo dead;;\n"
            "*NRestarts*) echo 0;;\n"
            "esac\n"
        )
        (bin_dir / "journalctl").write_text(f"#!/bin/sh\ntail -n 40 {self.log}\n")
        for tool in bin_dir.iterdir():
            tool.chmod(0o755)
        return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}

    def run(self, command: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", "-c", command], env=self.systemd, capture_output=True, text=True, timeout=timeout
        )

    def index(self) -> dict[str, str | None]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/v2/repository/index", data=b"{}", method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return {m["name"]: m.get("state") for m in json.loads(answer.read())}


@pytest.fixture
def start(tmp_path: Path) -> Iterator:
    started: list[Triton] = []

    def start_with(models: dict[str, Path]) -> Triton:
        repository = tmp_path / "models"
        for name, source in models.items():
            folder = tmp_path / "sources" / name
            shutil.copytree(source, folder)
            config = folder / "config.pbtxt"
            config.write_text(re.sub(r'(?m)^name: ".*"$', f'name: "{name}"', config.read_text()))
            files = render_repository(folder.parent, instance_kind="KIND_CPU", gpus=None)
            write_repository({k: v for k, v in files.items() if k.startswith(name)}, repository)
        server = Triton(tmp_path, repository)
        started.append(server)
        return server

    yield start_with
    for server in started:
        stop_server(server.process, timeout=20)


def wait_command(port: int, models: list[str], timeout: int = 120) -> str:
    run = run_op(triton_ops.wait_ready, UNIT, port, models, True, timeout, facts={})
    return run.strings[0]


def test_wait_passes_when_triton_serves_every_model(start) -> None:
    triton = start({ECHO: FIXTURES / ECHO, "echo_two": FIXTURES / ECHO})
    done = triton.run(wait_command(triton.port, [ECHO, "echo_two"]))
    assert done.returncode == 0, done.stderr
    assert triton.index() == {ECHO: "READY", "echo_two": "READY"}


def test_a_model_that_fails_to_load_fails_the_wait_with_tritons_log(start, tmp_path) -> None:
    broken = tmp_path / "broken_source"
    shutil.copytree(FIXTURES / ECHO, broken)
    model = broken / "1" / "model.py"
    model.write_text(
        model.read_text().replace(
            "        self.prefix =", "        raise RuntimeError('weights missing')\n        x ="
        )
    )
    triton = start({ECHO: FIXTURES / ECHO, "broken_echo": broken})
    done = triton.run(wait_command(triton.port, [ECHO, "broken_echo"]))
    assert done.returncode == 1
    assert f"{UNIT} exited before Triton was ready; its last log lines:" in done.stderr
    assert "weights missing" in done.stderr
    assert "failed to load all models" in done.stderr
    assert triton.process.poll() is not None  # Triton itself gave up, as on the host


def test_a_retired_model_is_unloaded_and_deleted(start) -> None:
    triton = start({ECHO: FIXTURES / ECHO, "old_echo": FIXTURES / ECHO})
    assert triton.run(wait_command(triton.port, [ECHO, "old_echo"])).returncode == 0
    root = str(triton.repository)
    (triton.repository / "local_model").mkdir()  # never written by the deploy: stays
    # the host's record: a previous run wrote old_echo; this run's manifest has echo only
    previous = DesiredState(
        name="gpu host calypso",
        files=[
            ManagedFile(f"{root}/old_echo/{rel}", b"") for rel in ("config.pbtxt", "1/model.py")
        ],
    )
    desired = DesiredState(name="gpu host calypso", files=[ManagedFile(f"{root}/{ECHO}/x", b"")])
    state = {**managed_state(), "record": json.dumps(previous.declared()).encode()}
    _desired.STATE_CACHE.clear()
    run = run_op(triton_ops.retire, desired, root, [ECHO], triton.port, facts={ManagedState: state})
    unload, remove = run.strings
    assert triton.run(unload).returncode == 0
    states = triton.index()  # still on disk, no longer served (Triton unloads in the background)
    assert states[ECHO] == "READY" and states["old_echo"] in {"UNLOADING", "UNAVAILABLE"}
    assert triton.run(remove).returncode == 0
    assert triton.index()[ECHO] == "READY"
    assert triton.index().get("old_echo") is None  # unloaded, and gone from the repository
    assert not (triton.repository / "old_echo").exists()
    assert (triton.repository / "local_model").is_dir()
