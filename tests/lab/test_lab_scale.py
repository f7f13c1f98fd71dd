"""One more GPU host, as `make bench-scale` adds them (inventories/scale/lab.py): it converges
from the lab's package caches, gets its own public name on its own tunnel, and its second
converge changes nothing. Booted beside the shared lab and halted again by the test."""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request

import pytest
import yaml

from lab import bench_scale, hosts, network, rootfs
from lab.services import CLOUDFLARE_URL
from lab.topology import LOG_DIR, SCALE_HOSTS, SECRETS_FILE, WHEELHOUSE_URL, scale_number
from tests.lab import ssh

pytestmark = pytest.mark.lab

EXTRA = SCALE_HOSTS[0]


@pytest.fixture(scope="module")
def extra(lab):
    rootfs.prepare_host(EXTRA, rootfs.build_base(print))  # the cached base
    network.create_host_netns(EXTRA)
    hosts.boot(EXTRA)
    try:
        hosts.wait_ready(EXTRA)
        yield EXTRA
    finally:
        assert hosts.stop([EXTRA]) == [EXTRA.name]  # the lab's own hosts stay up


def _standin_state() -> dict:
    values = yaml.safe_load(SECRETS_FILE.read_text())
    request = urllib.request.Request(
        f"{CLOUDFLARE_URL}/__standin__/state",
        headers={"Authorization": f"Bearer {values['cloudflareApiToken']}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["result"]


def test_an_extra_gpu_host_converges_from_the_caches_on_its_own_tunnel(extra):
    apt_before = bench_scale.apt_log_size()
    first = bench_scale.converge((extra,))
    assert first.returncode == 0, first.output[-4000:]
    assert first.totals["success"] > 0 and not first.failed_hosts
    second = bench_scale.converge((extra,))
    assert second.returncode == 0, second.output[-4000:]
    assert second.totals.get("success", 0) == 0, second.changed

    assert ssh(extra.name, "curl -sf http://127.0.0.1:8000/v2/health/ready").returncode == 0
    # its Debian packages through the package cache, its wheels from the wheelhouse (no-index)
    log = bench_scale.APT_LOG.read_bytes()[apt_before:].decode(errors="replace")
    served = [line.split() for line in log.splitlines()]  # RESULT BYTES CLIENT URL
    served = [f for f in served if len(f) == 4 and f[0] in ("HIT", "MISS")]
    served = [f for f in served if f[2] == extra.address]
    assert any(re.search(r"/python3[.0-9]*-venv_[^/]*\.deb$", f[3]) for f in served), log[-2000:]
    mirror = (LOG_DIR / "mirror.log").read_text()
    path = urllib.parse.urlsplit(WHEELHOUSE_URL).path
    wheels = re.findall(rf'^{re.escape(extra.address)} .*"GET {path}(\S+\.whl) HTTP', mirror, re.M)
    assert any(w.startswith("nvidia_pytriton-") for w in wheels), wheels
    assert any(w.startswith("numpy-") for w in wheels), wheels

    # its own name, on its own tunnel
    tunnel = yaml.safe_load(SECRETS_FILE.read_text())[
        f"cloudflareNode{scale_number(extra)}TunnelId"
    ]
    name = f"gpu{scale_number(extra)}.boathou.se"
    records = [r for zone in _standin_state()["zones"].values() for r in zone["records"]]
    assert {"name": name, "content": f"{tunnel}.cfargotunnel.com"} in [
        {"name": r["name"], "content": r["content"]} for r in records
    ], records
