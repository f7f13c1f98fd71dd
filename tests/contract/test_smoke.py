"""Contract: `make smoke` against the real tritonserver (the nvidia-pytriton wheel's, on CPU).

The server is the contract tests' shared one (tests/contract/conftest.py: repository rendered
by oceanid.triton_repo with KIND_CPU, assembled and launched by oceanid.triton_runtime). The
smoke checks look only at the models of triton-models/. The command reaches it the way the
public name does: through the cloudflared stand-in's edge, routed by the node tunnel's rules
(oceanid/ingress.py), with `--url gpu.boathou.se=<edge>` (the name stays the Host header); the
tunnels come from the Cloudflare API stand-in and Label Studio's health from a small local server.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
import tritonclient.http as triton_http

from oceanid.ingress import node_ingress
from oceanid.settings import GpuService
from tests.smoke_support import (
    assert_no_secret,
    cloudflare_standin,
    connector_edge,
    http_server,
    lines,
    run_smoke,
    site_dir,
    write_secrets,
)

pytestmark = pytest.mark.contract

ROOT = Path(__file__).resolve().parents[2]
MODEL = "docling_granite_python"
READY_TIMEOUT_S = 90
CONNECTED = [{"conns": 4, "version": "2025.8.1"}]


def gpu_rules(triton_url: str) -> list[dict]:
    """The node tunnel's ingress for a Triton on `triton_url`'s port, as the deploy renders it."""
    return node_ingress("gpu.boathou.se", GpuService(port=int(triton_url.rsplit(":", 1)[1])))


def test_whole_smoke_passes_against_the_real_triton(tmp_path, lab_secrets, triton):
    triton_url = triton.url
    tunnels = [
        {
            "id": lab_secrets["cloudflareTunnelId"],
            "name": "oceanid-cluster",
            "connectors": CONNECTED,
        },
        {"id": lab_secrets["cloudflareNodeTunnelId"], "name": "calypso", "connectors": CONNECTED},
    ]
    with (
        cloudflare_standin(lab_secrets, tunnels) as api,
        http_server(
            {"/health": (200, '{"status": "UP"}'), "/": (302, "", {"Location": "/user/login/"})}
        ) as label,
        connector_edge(tmp_path, gpu_rules(triton_url)) as edge,
    ):
        site = site_dir(
            tmp_path, f'secret_sources = ["file"]\ncloudflare_api_base_url = "{api.url}"\n'
        )
        done = run_smoke(
            site,
            write_secrets(tmp_path, lab_secrets),
            "--url",
            f"label.boathou.se={label}",
            "--url",
            f"gpu.boathou.se={edge}",
        )
        # the real Triton answers the repository API; through the connector it is refused
        direct = requests.post(f"{triton_url}/v2/repository/index", timeout=30)
        assert direct.status_code == 200
        for path in (
            "/v2/repository/models/x/load",
            "/v2/systemsharedmemory/status",
            "/v2/trace/setting",
            "/v2/logging",
            f"/v2/models/{MODEL}/stats",
        ):
            refused = requests.post(f"{edge}{path}", headers={"Host": "gpu.boathou.se"}, timeout=30)
            assert refused.status_code == 404, path
            assert refused.content == b""  # the connector's http_status:404, not Triton's
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout.splitlines()
    assert [line.split(" — ")[0] for line in out[:-1]] == [
        "PASS cluster tunnel (label.boathou.se)",
        "PASS calypso's node tunnel (gpu.boathou.se)",
        "PASS label.boathou.se Label Studio",
        "PASS label.boathou.se Label Studio login",
        "PASS gpu.boathou.se Triton",
        "PASS gpu.boathou.se repository API refused",
        f"PASS gpu.boathou.se model {MODEL}",
        f"PASS gpu.boathou.se inference {MODEL}",
        "SKIP ml.boathou.se",  # no adapter in this test (tests/contract/test_smoke_ml.py)
        "SKIP k3s nodes",  # no cluster/kubeconfig.yaml here: not a pass, not counted
    ]
    (inference,) = [line for line in out if line.startswith("PASS gpu.boathou.se inference")]
    assert inference.endswith("(text input (passed through), cpu)")
    assert out[-1] == "smoke: 8 passed, 0 failed"
    assert_no_secret(done.stdout + done.stderr, lab_secrets)


def test_unloaded_model_fails_the_smoke(tmp_path, lab_secrets, triton):
    triton_url = triton.url
    """With its model unloaded Triton answers "not ready" (400); the model line says which."""
    site = site_dir(tmp_path, 'secret_sources = ["file"]\nmanage_dns = False\n')
    env = write_secrets(tmp_path, lab_secrets)
    client = triton_http.InferenceServerClient(triton_url.removeprefix("http://"))
    with connector_edge(tmp_path, gpu_rules(triton_url)) as edge:
        args = ("--only", "gpu", "--url", f"gpu={edge}", "--timeout", "30")
        try:
            client.unload_model(MODEL)
            done = run_smoke(site, env, *args)
            assert done.returncode == 1, done.stdout + done.stderr
            (ready,) = lines(done.stdout, "FAIL gpu.boathou.se Triton — ")
            assert f"GET {edge}/v2/health/ready: HTTP 400 in" in ready
            (model,) = lines(done.stdout, f"FAIL gpu.boathou.se model {MODEL} — ")
            assert model.endswith("not ready")
            assert lines(done.stdout, f"FAIL gpu.boathou.se inference {MODEL} — not run")
            assert done.stdout.splitlines()[-1] == "smoke: 1 passed, 3 failed"
        finally:
            client.load_model(MODEL)
            client.close()
        done = run_smoke(site, env, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "smoke: 4 passed, 0 failed"
