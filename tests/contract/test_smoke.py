"""Contract: `make smoke` against the real tritonserver (the nvidia-pytriton wheel's, on CPU).

The server is the contract tests' shared one (tests/contract/conftest.py: repository rendered
by oceanid.triton_repo with KIND_CPU, assembled and launched by oceanid.triton_runtime). The
smoke checks look only at the models of triton-models/. The command reaches it
through `--url gpu.boathou.se=http://127.0.0.1:<port>`, the way an operator points it at a lab
port-forward; the tunnels come from the Cloudflare API stand-in and Label Studio's health from a
small local server.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import tritonclient.http as triton_http

from tests.smoke_support import (
    assert_no_secret,
    cloudflare_standin,
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
            f"gpu.boathou.se={triton_url}",
        )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout.splitlines()
    assert [line.split(" — ")[0] for line in out[:-1]] == [
        "PASS cluster tunnel (label.boathou.se)",
        "PASS calypso's node tunnel (gpu.boathou.se)",
        "PASS label.boathou.se Label Studio",
        "PASS label.boathou.se Label Studio login",
        "PASS gpu.boathou.se Triton",
        f"PASS gpu.boathou.se model {MODEL}",
        f"PASS gpu.boathou.se inference {MODEL}",
        "SKIP k3s nodes",  # no cluster/kubeconfig.yaml here: not a pass, not counted
    ]
    assert out[-3].endswith("(text input (passed through), cpu)")
    assert out[-1] == "smoke: 7 passed, 0 failed"
    assert_no_secret(done.stdout + done.stderr, lab_secrets)


def test_unloaded_model_fails_the_smoke(tmp_path, lab_secrets, triton):
    triton_url = triton.url
    """With its model unloaded Triton answers "not ready" (400); the model line says which."""
    site = site_dir(tmp_path, 'secret_sources = ["file"]\nmanage_dns = False\n')
    env = write_secrets(tmp_path, lab_secrets)
    args = ("--only", "gpu", "--url", f"gpu={triton_url}", "--timeout", "30")
    client = triton_http.InferenceServerClient(triton_url.removeprefix("http://"))
    try:
        client.unload_model(MODEL)
        done = run_smoke(site, env, *args)
        assert done.returncode == 1, done.stdout + done.stderr
        (ready,) = lines(done.stdout, "FAIL gpu.boathou.se Triton — ")
        assert f"GET {triton_url}/v2/health/ready: HTTP 400 in" in ready
        (model,) = lines(done.stdout, f"FAIL gpu.boathou.se model {MODEL} — ")
        assert model.endswith("not ready")
        assert lines(done.stdout, f"FAIL gpu.boathou.se inference {MODEL} — not run")
        assert done.stdout.splitlines()[-1] == "smoke: 0 passed, 3 failed"
    finally:
        client.load_model(MODEL)
        client.close()
    done = run_smoke(site, env, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "smoke: 3 passed, 0 failed"
