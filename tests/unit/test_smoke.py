"""`make smoke` (oceanid.smoke) against servers on 127.0.0.1.

The command runs as an operator runs it, in a copy of the production site with the lab's fake
secrets; the tunnels come from the Cloudflare API stand-in, Label Studio and a half-broken Triton
from small local HTTP servers, the k3s nodes from the k3s stand-in's API. The real Triton path
is in tests/contract/test_smoke.py.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from oceanid import smoke
from tests.smoke_support import (
    REPO,
    assert_no_secret,
    cloudflare_standin,
    connector_edge,
    http_server,
    lines,
    run_smoke,
    self_signed,
    site_dir,
    triton_echo,
    write_secrets,
)

CONNECTED = [{"conns": 4, "version": "2025.8.1"}]
HEALTHY = (200, '{"status": "UP"}')
TO_LOGIN = (302, "", {"Location": "/user/login/"})  # Label Studio's `/` for a visitor


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tunnel_seed(secrets: dict[str, str], cluster: list, node: list | None) -> list[dict]:
    tunnels = [
        {"id": secrets["cloudflareTunnelId"], "name": "oceanid-cluster", "connectors": cluster},
    ]
    if node is not None:
        tunnels.append(
            {"id": secrets["cloudflareNodeTunnelId"], "name": "calypso", "connectors": node}
        )
    return tunnels


def api_site(tmp_path: Path, api_url: str) -> Path:
    return site_dir(tmp_path, f'secret_sources = ["file"]\ncloudflare_api_base_url = "{api_url}"\n')


def test_healthy_tunnels_and_label_pass(tmp_path, lab_secrets):
    seed = tunnel_seed(lab_secrets, CONNECTED, CONNECTED + CONNECTED)
    with (
        cloudflare_standin(lab_secrets, seed) as api,
        http_server({"/health": HEALTHY, "/": TO_LOGIN}) as label,
    ):
        done = run_smoke(
            api_site(tmp_path, api.url),
            write_secrets(tmp_path, lab_secrets),
            "--only",
            "label",
            "--url",
            f"label.boathou.se={label}",
        )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout.splitlines()
    assert out[0].startswith("PASS cluster tunnel (label.boathou.se) — tunnel oceanid-cluster (")
    assert "healthy, 1 connector(s), 4 connection(s), cloudflared 2025.8.1" in out[0]
    assert out[1].startswith(f"PASS label.boathou.se Label Studio — GET {label}/health: HTTP 200")
    assert out[2].startswith(f"PASS label.boathou.se Label Studio login — GET {label}/: HTTP 302")
    assert out[2].endswith(", redirected to /user/login/")
    assert out[-1] == "smoke: 3 passed, 0 failed"
    assert len(out) == 4 and done.stderr == ""
    assert_no_secret(done.stdout + done.stderr, lab_secrets)


def test_json_prints_one_object_per_check(tmp_path, lab_secrets):
    """`--json` (issue 23): JSON lines, one object per check, for monitoring; the summary
    goes to stderr so stdout stays parseable; a failed check still exits 1."""
    seed = tunnel_seed(lab_secrets, [], CONNECTED)  # the cluster tunnel down
    with (
        cloudflare_standin(lab_secrets, seed) as api,
        http_server({"/health": HEALTHY, "/": TO_LOGIN}) as label,
    ):
        site, env = api_site(tmp_path, api.url), write_secrets(tmp_path, lab_secrets)
        done = run_smoke(
            site, env, "--json", "--only", "label", "--url", f"label.boathou.se={label}"
        )
    assert done.returncode == 1, done.stdout + done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["status"] for r in records] == ["fail", "pass", "pass"], records
    assert records[0]["check"] == "cluster tunnel (label.boathou.se)"
    assert "not serving" in records[0]["detail"]
    assert records[1]["check"] == "label.boathou.se Label Studio"
    assert records[1]["detail"].startswith(f"GET {label}/health: HTTP 200")
    assert done.stderr.strip() == "smoke: 2 passed, 1 failed"
    assert_no_secret(done.stdout + done.stderr, lab_secrets)


def test_a_bad_argument_exits_3(tmp_path):
    done = run_smoke(site_dir(tmp_path, ""), {}, "--only", "nothing")
    assert done.returncode == 3 and "invalid choice" in done.stderr


def test_status_reports_every_tunnel_and_fails_on_a_down_one(tmp_path, lab_secrets):
    seed = tunnel_seed(lab_secrets, CONNECTED + CONNECTED, [])
    with cloudflare_standin(lab_secrets, seed) as api:
        site, env = api_site(tmp_path, api.url), write_secrets(tmp_path, lab_secrets)
        done = run_smoke(site, env, "--status-only")
        assert done.returncode == 1, done.stdout + done.stderr
        assert len(lines(done.stdout, "PASS cluster tunnel")) == 1
        assert "2 connector(s), 8 connection(s)" in done.stdout
        (node,) = lines(done.stdout, "FAIL calypso's node tunnel (gpu.boathou.se)")
        assert "inactive, 0 connector(s), 0 connection(s); not serving" in node
        assert done.stdout.splitlines()[-1] == "status: 1 passed, 1 failed"

        # the node's cloudflared connects: the same command now passes
        api.state.set_connectors(lab_secrets["cloudflareNodeTunnelId"], CONNECTED)
        done = run_smoke(site, env, "--status-only")
        assert done.returncode == 0, done.stdout
        assert done.stdout.splitlines()[-1] == "status: 2 passed, 0 failed"

        # and disconnects again: "down" now, since it was connected once
        api.state.set_connectors(lab_secrets["cloudflareNodeTunnelId"], [])
        done = run_smoke(site, env, "--status-only", "--only", "gpu")
        assert done.returncode == 1
        assert lines(done.stdout, "FAIL calypso's node tunnel")[0].count(": down, 0 connector") == 1
        assert done.stdout.splitlines()[-1] == "status: 0 passed, 1 failed"
    assert_no_secret(done.stdout + done.stderr, lab_secrets)


def test_api_error_is_a_failed_check_with_one_line(tmp_path, lab_secrets):
    """The node tunnel does not exist in the account: the API's 404 becomes a FAIL line."""
    with cloudflare_standin(lab_secrets, tunnel_seed(lab_secrets, CONNECTED, None)) as api:
        done = run_smoke(
            api_site(tmp_path, api.url), write_secrets(tmp_path, lab_secrets), "--status-only"
        )
    assert done.returncode == 1
    (node,) = lines(done.stdout, "FAIL calypso's node tunnel")
    assert "reading tunnel" in node and "1003 Tunnel not found" in node
    assert "set ESC cloudflareNodeTunnelId to the ID of an existing tunnel" in node
    assert "Traceback" not in done.stderr


def test_unreachable_api_is_a_failed_check(tmp_path, lab_secrets):
    api_url = f"http://127.0.0.1:{closed_port()}/client/v4"
    done = run_smoke(
        api_site(tmp_path, api_url), write_secrets(tmp_path, lab_secrets), "--status-only"
    )
    assert done.returncode == 1, done.stderr
    failed = lines(done.stdout, "FAIL ")
    assert len(failed) == 2 and all("cannot reach the API" in line for line in failed)
    assert done.stdout.splitlines()[-1] == "status: 0 passed, 2 failed"


def test_label_answering_503_fails(tmp_path, lab_secrets):
    site = site_dir(tmp_path, 'secret_sources = ["file"]\nmanage_dns = False\n')
    with http_server({"/health": (503, '{"status": "DOWN"}')}) as label:
        done = run_smoke(
            site, write_secrets(tmp_path, lab_secrets), "--only", "label", "--url", f"label={label}"
        )
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        "SKIP tunnels — manage_dns is off, so no Cloudflare API access is configured",
        *lines(done.stdout, "FAIL label.boathou.se Label Studio — "),
        *lines(done.stdout, "FAIL label.boathou.se Label Studio login — "),
        "smoke: 0 passed, 2 failed",
    ]
    assert "HTTP 503" in done.stdout
    assert "HTTP 404 in " in done.stdout and "expected a redirect to /user/login/" in done.stdout


def test_gpu_on_a_closed_port_fails_cleanly(tmp_path, lab_secrets):
    site = site_dir(tmp_path, 'secret_sources = ["file"]\nmanage_dns = False\n')
    url = f"http://127.0.0.1:{closed_port()}"
    done = run_smoke(
        site,
        write_secrets(tmp_path, lab_secrets),
        "--only",
        "gpu",
        "--url",
        f"gpu.boathou.se={url}",
    )
    assert done.returncode == 1
    (failed,) = lines(done.stdout, "FAIL ")
    assert failed == (
        f"FAIL gpu.boathou.se Triton — GET {url}/v2/health/ready: Connection refused; "
        "models and inference not checked"
    )
    assert done.stdout.splitlines()[-1] == "smoke: 0 passed, 1 failed"
    assert "Traceback" not in done.stderr


def test_triton_ready_but_model_not_ready_fails(tmp_path, lab_secrets):
    """A server that says ready while the model failed to load (what a bad upload looks like)."""
    site = site_dir(tmp_path, 'secret_sources = ["file"]\nmanage_dns = False\n')
    routes = {
        "/v2/health/ready": (200, ""),
        "/v2/models/docling_granite_python/ready": (400, '{"error": "model not ready"}'),
    }
    with http_server(routes) as triton:
        done = run_smoke(
            site, write_secrets(tmp_path, lab_secrets), "--only", "gpu", "--url", f"gpu={triton}"
        )
    assert done.returncode == 1, done.stdout + done.stderr
    assert lines(done.stdout, "PASS gpu.boathou.se Triton — ")
    assert lines(done.stdout, "PASS gpu.boathou.se repository API refused — ")
    assert lines(done.stdout, "FAIL gpu.boathou.se model docling_granite_python — ")
    assert lines(done.stdout, "FAIL gpu.boathou.se inference docling_granite_python — not run")
    assert done.stdout.splitlines()[-1] == "smoke: 2 passed, 2 failed"


def test_preflight_failure_exits_3_without_traceback(tmp_path):
    site = site_dir(tmp_path, 'base_domain = "bad domain"\nsecret_sources = ["file"]\n')
    done = run_smoke(site, {})
    assert done.returncode == 3  # bad input: never drift's 2 (oceanid/exitcodes.py)
    assert done.stdout == ""
    errors = done.stderr.strip().splitlines()
    assert errors[0].startswith("smoke: base_domain: must be a lower-case DNS name")
    assert errors[-1] == "smoke: 1 problem(s) in inventory.py"
    assert "Traceback" not in done.stderr


def test_missing_secrets_exit_3(tmp_path):
    done = run_smoke(site_dir(tmp_path, 'secret_sources = ["file"]\n'), {}, "--status-only")
    assert done.returncode == 3
    assert done.stderr.startswith("status: SECRETS_FILE: not set")
    assert "Traceback" not in done.stderr


def test_unknown_url_name_and_status_without_api_exit_3(tmp_path, lab_secrets):
    site = site_dir(tmp_path, 'secret_sources = ["file"]\nmanage_dns = False\n')
    env = write_secrets(tmp_path, lab_secrets)
    done = run_smoke(site, env, "--url", "gpu9=http://127.0.0.1:1")
    assert done.returncode == 3
    assert done.stderr == (
        "smoke: --url gpu9.boathou.se: not a public name of this inventory "
        "(label.boathou.se, gpu.boathou.se, ml.boathou.se)\n"
    )
    done = run_smoke(site, env, "--status-only")
    assert (done.returncode, done.stdout) == (3, "")
    assert "manage_dns is off" in done.stderr


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("gpu=http://127.0.0.1:18000/", {"gpu.boathou.se": "http://127.0.0.1:18000"}),
        ("GPU2.boathou.se.=https://x.example/p", {"gpu2.boathou.se": "https://x.example/p"}),
    ],
)
def test_url_overrides(value, expected):
    assert smoke.parse_overrides([value], "boathou.se") == expected


@pytest.mark.parametrize("value", ["gpu", "gpu=127.0.0.1:8000", "=http://x", "gpu=http://"])
def test_bad_url_overrides_are_refused(value):
    with pytest.raises(smoke.UsageError, match="--url"):
        smoke.parse_overrides([value], "boathou.se")


def ml_health(headers: Any, body: bytes) -> tuple[int, str]:
    """An ML backend's /health: 200 with basic auth, 401 without (the real one is tested in
    tests/contract/test_smoke_ml.py)."""
    if (headers.get("Authorization") or "").startswith("Basic "):
        return 200, '{"status": "UP", "model_version": "docling_granite_python@1"}'
    return 401, '{"error": "basic auth required"}'


def test_https_through_both_clients_with_a_fake_triton(tmp_path, lab_secrets):
    """The production path is https: requests and tritonclient (ssl=True) both verify the
    certificate, in the gevent-patched process the command runs in, and the inference check
    compares the text it sent with the text that came back."""
    site = site_dir(tmp_path, 'secret_sources = ["file"]\nmanage_dns = False\n')
    server_pem, trusted = self_signed(tmp_path)
    env = write_secrets(tmp_path, lab_secrets) | {"REQUESTS_CA_BUNDLE": str(trusted)}
    routes = {
        "/health": HEALTHY,
        "/": TO_LOGIN,
        "/v2/health/ready": (200, ""),
        "/v2/models/docling_granite_python/ready": (200, ""),
        "/v2/models/docling_granite_python/infer": triton_echo(),
    }
    ml_routes = {"/health": ml_health}  # the ML backend beside Triton (oceanid/ingress.py)
    with http_server(routes, tls=server_pem) as url, http_server(ml_routes, server_pem) as ml:
        args = ("--url", f"label={url}", "--url", f"gpu={url}", "--url", f"ml={ml}")
        done = run_smoke(site, env, *args)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.splitlines()[1:] == [
            *lines(done.stdout, f"PASS label.boathou.se Label Studio — GET {url}/health: HTTP 200"),
            *lines(done.stdout, f"PASS label.boathou.se Label Studio login — GET {url}/: HTTP 302"),
            *lines(done.stdout, f"PASS gpu.boathou.se Triton — GET {url}/v2/health/ready: HTTP"),
            *lines(done.stdout, f"PASS gpu.boathou.se repository API refused — POST {url}/v2/r"),
            "PASS gpu.boathou.se model docling_granite_python — ready",
            *lines(done.stdout, "PASS gpu.boathou.se inference docling_granite_python — text came"),
            *lines(done.stdout, f"PASS ml.boathou.se ML backend — GET {ml}/health with its cred"),
            *lines(done.stdout, f"PASS ml.boathou.se ML backend refuses no credentials — GET {ml}"),
            *lines(done.stdout, "SKIP ml.boathou.se ML backend prediction — no smoke_pdf_url"),
            *lines(done.stdout, "SKIP k3s nodes — no cluster/kubeconfig.yaml: run `make kube"),
            "smoke: 8 passed, 0 failed",
        ]

        routes["/v2/models/docling_granite_python/infer"] = triton_echo(mangle=True)
        done = run_smoke(site, env, "--only", "gpu", *args)
        assert done.returncode == 1
        (failed,) = lines(done.stdout, "FAIL gpu.boathou.se inference docling_granite_python")
        assert "sent 'oceanid smoke " in failed and "got back '" in failed

        routes["/v2/models/docling_granite_python/infer"] = triton_echo(error="it broke")
        done = run_smoke(site, env, "--only", "gpu", *args)
        assert done.returncode == 1
        (failed,) = lines(done.stdout, "FAIL gpu.boathou.se inference docling_granite_python")
        assert failed.endswith("the model answered an error: it broke")

        done = run_smoke(site, {"SECRETS_FILE": env["SECRETS_FILE"]}, "--only", "label", *args)
        assert done.returncode == 1  # without the lab CA, the certificate is refused
        assert "CERTIFICATE_VERIFY_FAILED" in lines(done.stdout, "FAIL label.boathou.se")[0]


# -- k3s nodes, through the kubernetes client and a kubeconfig (the k3s stand-in's API) ----------

K3S = REPO / "tests" / "standins" / "k3s"
K3S_TOKEN = "k3s-stand-in-cluster-token-0123456789"
CALYPSO_NODE = """
hosts["calypso"]["k3s"] = {
    "labels": {"oceanid.cluster/tunnel-enabled": "true"},
    "taints": ["workload-type=gpu-compute:NoSchedule"],
}
"""


@contextmanager
def k3s(tmp_path: Path, role: str, name: str, config: str, ready: str) -> Iterator[str]:
    """The k3s stand-in as `role` until the log matches `ready`; yields the match's group 1."""
    (tmp_path / f"{name}.yaml").write_text(config + f"node-name: {name}\ntoken: {K3S_TOKEN}\n")
    log = tmp_path / f"{name}.log"
    with log.open("w") as err:
        process = subprocess.Popen(
            [sys.executable, str(K3S), role, "--config", str(tmp_path / f"{name}.yaml")],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 30
        while not (match := re.search(ready, log.read_text())):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield match.group(1) if match.groups() else ""
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_k3s_nodes_ready_with_labels_and_taints(tmp_path, lab_secrets):
    """tethys (server) and calypso (agent) joined, calypso without its taint, styx not at all."""
    site = site_dir(tmp_path, 'secret_sources = ["file"]\nmanage_dns = False\n' + CALYPSO_NODE)
    kubeconfig = tmp_path / "k3s.yaml"
    server = (
        f"data-dir: {tmp_path / 'tethys'}\nwrite-kubeconfig: {kubeconfig}\n"
        "https-listen-port: 0\nbind-address: 127.0.0.1\n"
    )
    with k3s(
        tmp_path, "server", "tethys", server, r"API listening on https://[\d.]+:(\d+)"
    ) as port:
        agent = f"server: https://127.0.0.1:{port}\nnode-label:\n  - oceanid.cluster/tunnel-enabled=true\n"  # noqa: E501
        with k3s(tmp_path, "agent", "calypso", agent, r"(Node registered with the server)"):
            done = run_smoke(
                site, write_secrets(tmp_path, lab_secrets), "--only", "k3s",
                "--kubeconfig", str(kubeconfig),
            )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.splitlines()[1:] == [
        "FAIL k3s node calypso — taint workload-type=gpu-compute:NoSchedule missing; "
        "wants 1 label(s), 1 taint(s)",
        "FAIL k3s node styx — not a node of the cluster (has its k3s joined?)",
        "PASS k3s node tethys — Ready, v1.33.4+k3s1",
        "smoke: 1 passed, 2 failed",
    ]


def test_k3s_nodes_without_the_tunnel_say_to_open_it(tmp_path, lab_secrets):
    site = site_dir(tmp_path, 'secret_sources = ["file"]\nmanage_dns = False\n')
    env = write_secrets(tmp_path, lab_secrets)
    done = run_smoke(site, env, "--only", "k3s")
    assert done.stdout.splitlines()[1] == (
        "SKIP k3s nodes — no cluster/kubeconfig.yaml: run `make kubeconfig`, then `make tunnel`"
    )
    kubeconfig = tmp_path / "kubeconfig.yaml"
    port = closed_port()
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: oceanid\n"
        f"clusters:\n- name: oceanid\n  cluster:\n    server: https://127.0.0.1:{port}\n"
        "contexts:\n- name: oceanid\n  context: {cluster: oceanid, user: oceanid}\n"
        "users:\n- name: oceanid\n  user: {token: not-a-real-token}\n"
    )
    done = run_smoke(site, env, "--only", "k3s", "--kubeconfig", str(kubeconfig))
    assert done.stdout.splitlines()[1] == (
        f"SKIP k3s nodes — nothing listens on https://127.0.0.1:{port}: run `make tunnel`"
    )
    assert done.returncode == 3  # nothing was checked: never a pass
    assert "not-a-real-token" not in done.stdout + done.stderr


def test_public_names_without_cloudflares_edge_are_skipped(tmp_path, lab_secrets):
    """The lab's API is a stand-in: no edge serves label.<base>; a --url still checks gpu."""
    seed = tunnel_seed(lab_secrets, CONNECTED, CONNECTED)
    routes = {"/v2/health/ready": (503, "")}
    with cloudflare_standin(lab_secrets, seed) as api, http_server(routes) as triton:
        done = run_smoke(
            api_site(tmp_path, api.url), write_secrets(tmp_path, lab_secrets),
            "--url", f"gpu={triton}",
        )  # fmt: skip
    (skipped,) = lines(done.stdout, "SKIP label.boathou.se — ")
    assert f"no Cloudflare edge serves it here (cloudflare_api_base_url is {api.url}" in skipped
    assert "--url label.boathou.se=URL checks it another way" in skipped
    assert lines(done.stdout, "FAIL gpu.boathou.se Triton — ")
    assert "PASS label" not in done.stdout
    assert done.returncode == 1


def test_an_inventory_that_refuses_to_load_exits_3_with_its_line(tmp_path):
    site = site_dir(tmp_path)
    (site / "inventory.py").write_text('raise SystemExit("lab: the lab is down (no bridge)")\n')
    done = run_smoke(site, {})
    assert (done.returncode, done.stdout) == (3, "")
    assert done.stderr == "smoke: inventory.py: lab: the lab is down (no bridge)\n"


# -- GPU names: the model repository API must be refused, checked through the connector ----------


def _recording(routes: dict, hosts: list[str]) -> dict:
    """`routes` with every answer also noting the request's Host header in `hosts`."""

    def record(answer):
        def route(headers, body):
            hosts.append(headers.get("Host"))
            return answer(headers, body) if callable(answer) else answer

        return route

    return {path: record(answer) for path, answer in routes.items()}


FAKE_TRITON = {
    "/v2/health/ready": (200, ""),
    "/v2/models/docling_granite_python/ready": (200, ""),
    "/v2/models/docling_granite_python/infer": triton_echo(),
    "/v2/repository/index": (200, "[]"),  # what Triton answers when nothing is in front of it
}


@pytest.mark.parametrize(("status", "ok"), [(200, False), (404, True), (403, True), (400, False)])
def test_repository_api_must_be_refused(tmp_path, lab_secrets, status, ok):
    site = site_dir(tmp_path, 'secret_sources = ["file"]\nmanage_dns = False\n')
    hosts: list[str] = []
    routes = _recording({**FAKE_TRITON, "/v2/repository/index": (status, "[]")}, hosts)
    with http_server(routes) as triton:
        done = run_smoke(
            site, write_secrets(tmp_path, lab_secrets), "--only", "gpu", "--url", f"gpu={triton}"
        )
    (line,) = lines(done.stdout, f"{'PASS' if ok else 'FAIL'} gpu.boathou.se repository API")
    assert f"POST {triton}/v2/repository/index: HTTP {status} in " in line
    if not ok:
        assert "it must be refused (404 at the connector)" in line
    assert done.returncode == (0 if ok else 1), done.stdout
    # --url keeps the public name as the Host header, for requests and tritonclient alike
    assert hosts and set(hosts) == {"gpu.boathou.se"}


@pytest.mark.parametrize("closed", [True, False])
def test_smoke_through_the_connector_refuses_the_repository(tmp_path, lab_secrets, closed):
    """Smoke through the connector stand-in's edge, routed by the rules the deploy renders:
    the repository check passes because the connector refuses it, not Triton. With the old
    catch-all rule (every path to Triton) the same Triton fails it."""
    from oceanid.ingress import node_ingress
    from oceanid.settings import GpuService

    site = site_dir(tmp_path, 'secret_sources = ["file"]\nmanage_dns = False\n')
    with http_server(FAKE_TRITON) as triton:
        service = GpuService(kind="triton", port=int(triton.rsplit(":", 1)[1]))
        old = [{"hostname": "gpu.boathou.se", "service": f"http://localhost:{service.port}"},
               {"service": "http_status:404"}]  # fmt: skip
        ingress = node_ingress("gpu.boathou.se", service) if closed else old
        with connector_edge(tmp_path, ingress) as edge:
            done = run_smoke(
                site, write_secrets(tmp_path, lab_secrets), "--only", "gpu", "--url", f"gpu={edge}"
            )
    assert lines(done.stdout, "PASS gpu.boathou.se inference docling_granite_python — text came")
    verdict = "PASS" if closed else "FAIL"
    (line,) = lines(done.stdout, f"{verdict} gpu.boathou.se repository API refused — ")
    assert f"HTTP {404 if closed else 200} in" in line
    assert done.returncode == (0 if closed else 1), done.stdout + done.stderr
