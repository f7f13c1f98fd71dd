"""
calypso's connector unit as systemd reads it, and its ExecStart run for real.

The unit is rendered from a plan built the way the deploy builds it; its ExecStart is then
started, word for word, with only the binary and the /etc/cloudflared folder swapped for the
stand-in and a temporary folder, under a $NOTIFY_SOCKET bound here as systemd binds it. The
stand-in keeps cloudflared's flag rules, so a flag in the wrong place fails this test.
"""

from __future__ import annotations

import configparser
import os
import shlex
import signal
import subprocess

import pytest
import yaml

from deploys.gpu_host import cloudflared_node
from operations.managed import Manifest
from tests.standins.test_cloudflared import notify_socket, received
from tests.standins.test_standins import CLOUDFLARED, PYTHON, TIMEOUT
from tests.unit import test_gpu_rendering

SHAPES = test_gpu_rendering.SHAPES
make_plan = test_gpu_rendering.make_plan  # the fixture: a plan as the deploy builds it


def _service_section(unit_text: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign] - keys are case-sensitive
    parser.read_string(unit_text)
    return parser["Service"]


@pytest.mark.parametrize("shape", list(SHAPES))
def test_unit_is_notify_typed_and_restarts_on_failure(make_plan, shape) -> None:
    """Ready means connected (cloudflared sends READY=1 after its first edge connection);
    systemd waits for that without a limit, as cloudflared's own unit did (the deploy's wait
    is bounded in operations/services.py); a failed connector is retried."""
    service = _service_section(cloudflared_node.unit(make_plan(shape=shape)))
    assert service["Type"] == "notify"
    assert service["TimeoutStartSec"] == "0"
    assert service["Restart"] == "on-failure"
    assert service["RestartSec"] == "5s"


@pytest.mark.parametrize("shape", list(SHAPES))
def test_exec_start_as_rendered_connects_and_signals_ready(make_plan, shape, tmp_path) -> None:
    plan = make_plan(shape=shape)
    manifest = Manifest(name="gpu host calypso")
    cloudflared_node.add_to(manifest, plan)
    unit_text = manifest.file(cloudflared_node.UNIT_FILE).content.decode()
    argv = shlex.split(_service_section(unit_text)["ExecStart"])
    assert argv[0] == cloudflared_node.BINARY

    folder = cloudflared_node.CONFIG_DIR + "/"
    for managed in manifest.files:
        if managed.path.startswith(folder):
            target = tmp_path / managed.path.removeprefix(folder)
            text = managed.content.decode().replace(folder, f"{tmp_path}/")
            if managed.path == cloudflared_node.CONFIG:  # any free port, not the host's 2200
                config = yaml.safe_load(text)
                config["metrics"] = "127.0.0.1:0"
                text = yaml.safe_dump(config, sort_keys=False)
            target.write_text(text)
            target.chmod(int(managed.mode, 8))
    command = [PYTHON, str(CLOUDFLARED)] + [arg.replace(folder, f"{tmp_path}/") for arg in argv[1:]]

    with notify_socket() as (sock, address):
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "NOTIFY_SOCKET": address, "HOME": str(tmp_path)},
        )
        try:
            ready = received(sock, TIMEOUT)
        finally:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
            stdout, stderr = process.communicate(timeout=TIMEOUT)
    assert ready == b"READY=1", stdout + stderr
    assert f"tunnelID={plan.node_tunnel_id}" in stderr
    assert "Incorrect Usage" not in stdout
    assert process.returncode == 0
