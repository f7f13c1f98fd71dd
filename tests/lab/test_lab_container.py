"""The container runtime for real (issue 13): calypso2's Triton and calypso3's HTTP server run
in Docker inside their lab hosts, from images the lab built and serves itself (no registry).

What the host runtime's tests check of calypso, checked here of calypso2 (the model reload and
the reboot are in test_lab.py, parametrized over both), plus what only a container has: the
image on disk as pinned, systemd bringing a killed container back, Docker's daemon.json kept.
"""

from __future__ import annotations

import json
import time

import pytest

from lab.converge import pyinfra
from lab.topology import REPO
from tests.lab import ssh

pytestmark = pytest.mark.lab

TRITON, HTTP = "calypso2", "calypso3"


def _ready(name: str, url: str, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = ssh(name, f"curl -s -o /dev/null -w '%{{http_code}}' {url}").stdout.strip()
        if code == "200":
            return True
        time.sleep(1)
    return False


def test_triton_runs_in_docker_from_the_pinned_image(converged):
    pins = json.loads((REPO / ".lab/artifacts.json").read_text())
    image = ssh(TRITON, "docker inspect -f '{{.Image}}' tritonserver").stdout.strip()
    assert image == pins["triton_image"]["id"]
    unit = ssh(TRITON, "cat /etc/systemd/system/tritonserver.service").stdout
    assert "docker pull" not in unit
    listening = ssh(TRITON, "ss -ltnH").stdout
    for port in (8000, 8001, 8002):
        assert f"127.0.0.1:{port} " in listening and f"0.0.0.0:{port} " not in listening
    assert _ready(TRITON, "localhost:8000/v2/models/docling_granite_python/ready", 5)


def test_the_model_environment_is_built_by_the_image_for_its_python(converged):
    """Built by a one-shot container of the pinned image: its Python version is the image's.
    (The lab's image is Debian 12's Python, as the host's is; production's NGC image runs 3.12
    on a Debian 12 host's 3.11, which only the image's own build serves.)"""
    built_for = ssh(TRITON, "cat /opt/triton/venv/python-version").stdout.strip()
    image = ssh(TRITON, "docker inspect -f '{{.Image}}' tritonserver").stdout.strip()
    runs = ssh(
        TRITON,
        f"docker run --rm --entrypoint python3 {image} -c "
        "'import sys; print(\"%d.%d\" % sys.version_info[:2])'",
    ).stdout.strip()
    assert built_for and built_for == runs


def test_a_killed_container_is_brought_back_by_systemd(converged):
    before = ssh(TRITON, "systemctl show -p NRestarts --value tritonserver").stdout.strip()
    assert ssh(TRITON, "docker kill tritonserver").returncode == 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = ssh(TRITON, "systemctl show -p NRestarts --value tritonserver").stdout.strip()
        if now != before:
            break
        time.sleep(1)
    assert int(now) == int(before) + 1
    assert _ready(TRITON, "localhost:8000/v2/health/ready")
    again = pyinfra("deploys/site.py", "--limit", TRITON)
    assert again.returncode == 0 and again.changed == {}, again.changed


def test_dockers_own_settings_are_kept(converged):
    """The operator's daemon.json (the lab's storage driver) is still there after the deploy."""
    daemon = json.loads(ssh(TRITON, "cat /etc/docker/daemon.json").stdout)
    assert daemon.get("storage-driver") == "overlay2", daemon


def test_the_http_kind_serves_from_its_image(converged):
    pins = json.loads((REPO / ".lab/artifacts.json").read_text())
    image = ssh(HTTP, "docker inspect -f '{{.Image}}' gpu-http").stdout.strip()
    assert image == pins["http_image"]["id"]
    answer = json.loads(ssh(HTTP, "curl -s localhost:8000/").stdout)
    assert answer == {"server": "oceanid-http", "token_set": True}
    mode = ssh(HTTP, "stat -c '%a %U' /etc/oceanid/gpu-http.env").stdout.strip()
    assert mode == "600 root"  # its values: never in the unit or an argument (tests/hosts)
    assert "docker pull" not in ssh(HTTP, "cat /etc/systemd/system/gpu-http.service").stdout
