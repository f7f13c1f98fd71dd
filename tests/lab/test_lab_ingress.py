"""GPU names serve Triton's inference plane only, proven through the connector on the lab hosts.

Each GPU host's connector (the cloudflared stand-in under the deploy's own unit) plays the edge
for its hostnames on 127.0.0.1:20880 (tests/standins/cloudflared `DEFAULT_EDGE`); the tests reach
it through an SSH port forward and send the public name as the Host header, so a request is
routed by the rules the connector runs, as Cloudflare's edge would hand it over:

- the local file: a freshly started connector runs /etc/cloudflared/config.yaml (version -1);
- the API's configuration: calypso's tunnel is remotely managed (lab/services.py seeds it so),
  and the deploy stored its rules through the Cloudflare API stand-in; the test hands that
  stored configuration to the connector as the edge does on registration (`UpdateConfiguration`,
  version >= 0 beats the local file), through the stand-in's `/__standin__/configuration`.

In both, calypso's repository, shared-memory, trace, logging and statistics paths get the
connector's 404 and the inference paths reach Triton; `make smoke` passes through the connector
and turns red when Triton stops.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request

import pytest
import yaml

from lab.services import CLOUDFLARE_URL
from lab.topology import SECRETS_FILE
from oceanid.ingress import TRITON_PATHS
from tests.lab import SSH, edges, ssh
from tests.lab.test_lab_commands import GPU_NAMES, edge_sees, failed, heal, smoke

pytestmark = pytest.mark.lab

METRICS = "127.0.0.1:2200"  # group_data: cloudflared_metrics_address
MODEL = "docling_granite_python"
REFUSED = [
    ("POST", "/v2/repository/index"),
    ("POST", "/v2/repository/models/x/load"),
    ("POST", f"/v2/repository/models/{MODEL}/unload"),
    ("GET", "/v2/systemsharedmemory/status"),
    ("POST", "/v2/systemsharedmemory/region/r/register"),
    ("GET", "/v2/cudasharedmemory/status"),
    ("GET", "/v2/trace/setting"),
    ("POST", "/v2/trace/setting"),
    ("GET", "/v2/logging"),
    ("GET", "/v2/models/stats"),
    ("GET", f"/v2/models/{MODEL}/stats"),
    ("GET", f"/v2/models/{MODEL}/versions/1/stats"),
    ("GET", f"/v2/models/{MODEL}/infer/../../../repository/index"),
    ("GET", "/v2/health/readyX"),
    ("GET", "/metrics"),
]
ALLOWED = [
    "/v2/health/live",
    "/v2/health/ready",
    "/v2",
    f"/v2/models/{MODEL}",
    f"/v2/models/{MODEL}/ready",
    f"/v2/models/{MODEL}/config",
    f"/v2/models/{MODEL}/versions/1",
    f"/v2/models/{MODEL}/versions/1/ready",
]


def through(edge: str, host: str, method: str, path: str, body: bytes | None = None):
    """One request to the edge with `host` as the Host header: (status, body)."""
    request = urllib.request.Request(edge + path, data=body, method=method)
    request.add_header("Host", host)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def stored_configuration(tunnel_key: str) -> dict:
    """The tunnel's configuration as the Cloudflare API stand-in stores it (the deploy's PUT)."""
    values = yaml.safe_load(SECRETS_FILE.read_text())
    path = (
        f"{CLOUDFLARE_URL}/accounts/{values['cloudflareAccountId']}/cfd_tunnel/"
        f"{values[tunnel_key]}/configurations"
    )
    request = urllib.request.Request(
        path, headers={"Authorization": f"Bearer {values['cloudflareApiToken']}"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())["result"]


def edge_sends(name: str, stored: dict) -> dict:
    """What the edge does when a connector registers: the stored configuration, by version."""
    update = json.dumps({"version": stored["version"], "config": stored["config"]})
    done = subprocess.run(
        [*SSH.split(), name, "curl -s --max-time 10 -X PUT --data-binary @- "
         f"http://{METRICS}/__standin__/configuration"],
        input=update, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def restart_connector(name: str) -> None:
    """A fresh connector runs its local file (version -1) until the edge sends a configuration."""
    assert ssh(name, "sudo systemctl restart cloudflared-node.service").returncode == 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready = ssh(name, f"curl -s --max-time 5 http://{METRICS}/ready || true").stdout
        if '"status":200' in ready:
            return
        time.sleep(0.5)
    raise AssertionError(f"{name}'s connector never became ready")


def assert_inference_plane_only(edge: str, host: str) -> None:
    for method, path in REFUSED:
        body = b"{}" if method == "POST" else None
        status, content = through(edge, host, method, path, body)
        assert (status, content) == (404, b""), f"{method} {path}: {status} {content[:200]!r}"
    for path in ALLOWED:
        status, content = through(edge, host, "GET", path)
        assert status == 200, f"GET {path}: {status} {content[:200]!r}"
    status, content = through(edge, host, "POST", f"/v2/models/{MODEL}/infer", INFER)
    assert status == 200 and json.loads(content)["outputs"], content[:300]  # Triton answered


INFER = json.dumps({  # a batch of one document: the model's inputs are [B, 1]
    "inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES",
                "data": ["through the edge"]}],
    "outputs": [{"name": "response"}],
}).encode()  # fmt: skip


def test_calypso_local_file_serves_the_inference_plane_only(converged):
    restart_connector("calypso")
    with edges("calypso") as urls:
        assert_inference_plane_only(urls["calypso"], "gpu.boathou.se")
    metrics = ssh("calypso", f"curl -s --max-time 5 http://{METRICS}/metrics").stdout
    assert "cloudflared_orchestration_config_version 0" in metrics  # no remote config applied


def test_calypso_api_configuration_serves_the_inference_plane_only(converged):
    stored = stored_configuration("cloudflareNodeTunnelId")
    assert stored["source"] == "cloudflare" and stored["version"] >= 0
    rules = stored["config"]["ingress"]
    # the GPU name's allow-list, then the ML backend's name (deploys/gpu_host/ml_backend)
    assert {rule.get("path") for rule in rules[1:-2]} == set(TRITON_PATHS)
    assert {rule["hostname"] for rule in rules[:-2]} == {"gpu.boathou.se"}
    assert rules[-2]["hostname"] == "ml.boathou.se"

    restart_connector("calypso")
    assert edge_sends("calypso", stored) == {"lastAppliedVersion": stored["version"]}
    log = ssh("calypso", "sudo journalctl -u cloudflared-node.service -n 50 --no-pager").stdout
    assert f"Updated to new configuration version={stored['version']}" in log
    with edges("calypso") as urls:
        assert_inference_plane_only(urls["calypso"], "gpu.boathou.se")


def test_smoke_through_the_connectors_and_red_when_triton_stops(converged):
    for name in GPU_NAMES:
        edge_sees(name)
    with edges(*GPU_NAMES) as urls:
        args = []
        for name, public in GPU_NAMES.items():
            args += ["--url", f"{public}.boathou.se={urls[name]}"]
        done = smoke("--only", "gpu", *args)
        assert done.returncode == 0, done.stdout + done.stderr
        for public in ("gpu", "gpu2"):  # the triton kind
            assert f"PASS {public}.boathou.se repository API refused — " in done.stdout
            assert f"PASS {public}.boathou.se inference {MODEL}" in done.stdout
        assert "PASS gpu3.boathou.se service — " in done.stdout  # the http kind: every path

        try:
            assert ssh("calypso", "sudo systemctl stop tritonserver.service").returncode == 0
            done = smoke("--only", "gpu", *args)
            assert done.returncode == 1, done.stdout
            red = failed(done.stdout)
            assert any(line.startswith("FAIL gpu.boathou.se Triton — ") for line in red), red
            assert "HTTP 502" in done.stdout  # the connector answers, its origin does not
            assert "PASS gpu.boathou.se repository API refused — " in done.stdout
            assert not any("gpu2.boathou.se" in line for line in red)
        finally:
            heal("calypso")
