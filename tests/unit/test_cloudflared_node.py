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
from operations.managed import DesiredState
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
    desired = DesiredState(name="gpu host calypso")
    cloudflared_node.add_to(desired, plan)
    unit_text = desired.file(cloudflared_node.UNIT_FILE).content.decode()
    argv = shlex.split(_service_section(unit_text)["ExecStart"])
    assert argv[0] == cloudflared_node.BINARY

    folder = cloudflared_node.CONFIG_DIR + "/"
    for managed in desired.files:
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


# ---- which paths the public name serves: the rendered config, routed by `ingress rule`

ALLOWED = [
    "/v2/health/live",
    "/v2/health/ready",
    "/v2",
    "/v2/models/docling_granite_python",
    "/v2/models/docling_granite_python/ready",
    "/v2/models/docling_granite_python/config",
    "/v2/models/docling_granite_python/infer",
    "/v2/models/docling_granite_python/versions/1",
    "/v2/models/docling_granite_python/versions/12/ready",
    "/v2/models/docling_granite_python/versions/1/config",
    "/v2/models/docling_granite_python/versions/3/infer",
    "/v2/models/a.b-c_d/infer",
]
REFUSED = [
    "/",
    "/v2/",
    "/v2/repository/index",
    "/v2/repository/models/x/load",
    "/v2/repository/models/x/unload",
    "/v2/systemsharedmemory/status",
    "/v2/systemsharedmemory/region/r/register",
    "/v2/cudasharedmemory/status",
    "/v2/cudasharedmemory/region/r/unregister",
    "/v2/trace/setting",
    "/v2/logging",
    "/v2/models/stats",
    "/v2/models/x/stats",
    "/v2/models/x/versions/1/stats",
    "/v2/models/x/trace/setting",
    "/v2/models/x/generate",
    "/v2/models/x/generate_stream",
    "/v2/models/x/infer/../../repository",
    "/v2/models/x/../../repository/index",
    "/v2/models/../repository/index",
    "/v2/models/../ready",
    "/v2/models/x/versions/../infer",
    "/v2/models/x%2F..%2F..%2Frepository%2Findex/ready",
    "/v2/models/a/b/c",
    "/v2/models/x/versions/v1/infer",
    "/v2/models/x/infer/",
    "/v2/health/readyX",
    "/v2/health/ready/",
    "/v2/health/ready%0A",
    "/xx/v2/health/ready",
    "/metrics",
]


def _rule_for(config_path, url: str) -> str:
    """`cloudflared tunnel --config FILE ingress rule URL`: the service of the matched rule."""
    done = subprocess.run(
        [PYTHON, str(CLOUDFLARED), "tunnel", "--config", str(config_path), "ingress", "rule", url],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.split("\tservice: ")[1].strip()


def _write_config(plan, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cloudflared_node.config(plan), sort_keys=False))
    return path


def test_triton_name_routes_only_the_inference_plane(make_plan, tmp_path) -> None:
    """Every allowed path reaches Triton; the repository (load, unload: code execution),
    shared memory, trace, logging, statistics and every trick around the anchors get the 404."""
    config = _write_config(make_plan(), tmp_path)
    for path in ALLOWED:
        assert _rule_for(config, f"https://gpu.boathou.se{path}") == "http://localhost:8000", path
    for path in REFUSED:
        assert _rule_for(config, f"https://gpu.boathou.se{path}") == "http_status:404", path
    # another name on the tunnel, whatever its path, is the catch-all's
    assert _rule_for(config, "https://gpu2.boathou.se/v2/health/ready") == "http_status:404"


def test_every_triton_path_rule_is_anchored(make_plan) -> None:
    """cloudflared searches a rule's path anywhere in the request path: an unanchored
    `/v2/health/ready` would also send `/x/v2/health/ready/../../repository/index` to Triton."""
    rules = [r for r in cloudflared_node.config(make_plan())["ingress"] if r.get("hostname")]
    rules = [r for r in rules if r["hostname"] == "gpu.boathou.se"]  # not the adapter's name
    assert rules and all(r["path"].startswith("^") and r["path"].endswith("$") for r in rules)


def test_http_name_keeps_every_path(make_plan, tmp_path) -> None:
    """The `http` kind is the operator's own server: one rule, every path."""
    image = "ghcr.io/example/docling-granite:1.0"
    plan = make_plan(gpu={"service": {"kind": "http", "image": image, "port": 8080}})
    assert cloudflared_node.config(plan)["ingress"] == [
        {"hostname": "gpu.boathou.se", "service": "http://localhost:8080"},
        {"service": "http_status:404"},
    ]
    config = _write_config(plan, tmp_path)
    for path in ("/", "/v2/repository/index", "/anything/at/all"):
        assert _rule_for(config, f"https://gpu.boathou.se{path}") == "http://localhost:8080"


def test_the_api_and_the_daemonset_get_the_same_rules(make_plan) -> None:
    """One builder: the configuration pushed through the API (deploys/dns) and the cluster
    DaemonSet's config are the host connector's rules, rule for rule."""
    from deploys import dns
    from deploys.cluster_apps import node_tunnel
    from oceanid.model import Site

    plan = make_plan()
    site = Site(hosts={plan.name: plan}, secrets={}, cluster_tunnel_id=None)
    _, ingress = dns.records(plan, site)
    local = cloudflared_node.config(plan)["ingress"]
    assert ingress == {plan.node_tunnel_id: local}
    assert node_tunnel.config(plan)["ingress"] == local
