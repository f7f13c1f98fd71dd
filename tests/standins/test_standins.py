"""
The cloudflared and k3s stand-ins, run as the lab runs them: as executables under python3.

What is checked is what makes them worth trusting in the lab: they say they are stand-ins, they
refuse what the real programs refuse (with the real messages) without echoing a secret, and a good
configuration runs, answers on 127.0.0.1 and stops on SIGTERM. Every wait is bounded; every process
started here is stopped here, by its PID.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from facts.cloudflared import CloudflaredReady, CloudflaredVersion

HERE = Path(__file__).parent
CLOUDFLARED = HERE / "cloudflared"
K3S = HERE / "k3s"
PYTHON = shutil.which("python3") or sys.executable
TIMEOUT = 20

TUNNEL_ID = "6f1c2b8e-0d3a-4c5e-9a1b-2c3d4e5f6a7b"
OTHER_TUNNEL_ID = "0d9a4c1e-5b6f-4a7c-8d9e-0f1a2b3c4d5e"
ACCOUNT_TAG = "5ab4e9dfbd435d24068829fda0077963"
SECRET_BYTES = b"stand-in-test-secret-32-bytes!!!"
TUNNEL_SECRET = base64.b64encode(SECRET_BYTES).decode()
TOKEN = base64.b64encode(
    json.dumps({"a": ACCOUNT_TAG, "t": TUNNEL_ID, "s": TUNNEL_SECRET}).encode(),
).decode()
K3S_TOKEN = "k3s-stand-in-cluster-token-0123456789"
SECRETS = (TOKEN, TUNNEL_SECRET, SECRET_BYTES.decode(), ACCOUNT_TAG, K3S_TOKEN)


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, "a secret reached the stand-in's output"


def run(program: Path, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    return subprocess.run(
        [PYTHON, str(program), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


class Running:
    """A started stand-in whose stderr is collected line by line for bounded waits."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = TIMEOUT) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.stderr)
            if match:
                return match
            if self.process.poll() is not None:
                self._reader.join(timeout=2)
                match = re.search(pattern, self.stderr)
                if match:
                    return match
                raise AssertionError(f"exited {self.process.returncode}:\n{self.stderr}")
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} within {timeout}s:\n{self.stderr}")

    def terminate(self) -> int:
        os.kill(self.process.pid, signal.SIGTERM)
        code = self.process.wait(timeout=TIMEOUT)
        self._reader.join(timeout=2)
        return code


@contextmanager
def started(program: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Running]:
    process = subprocess.Popen(
        [PYTHON, str(program), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        yield Running(process)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=TIMEOUT)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


# --- cloudflared ---------------------------------------------------------------------------------


def write_cloudflared_config(tmp_path: Path, **changes: object) -> Path:
    """A calypso-shaped config (YAML as the deploy writes it); `changes` edit its keys."""
    credentials = tmp_path / "credentials.json"
    credentials.write_text(
        json.dumps(
            {"AccountTag": ACCOUNT_TAG, "TunnelSecret": TUNNEL_SECRET, "TunnelID": TUNNEL_ID}
        ),
    )
    values: dict[str, object] = {
        "tunnel": TUNNEL_ID,
        "credentials-file": str(credentials),
        "metrics": "127.0.0.1:0",
        "no-autoupdate": "true",
        "ingress": (
            "\n  - hostname: gpu.boathou.se\n    service: http://localhost:8000"
            "\n    originRequest:\n      connectTimeout: 30s"
            "\n  - service: http_status:404"
        ),
    }
    values.update(changes)
    text = "# written by the test\n" + "".join(
        f"{key}:{'' if str(value).startswith(chr(10)) else ' '}{value}\n"
        for key, value in values.items()
        if value is not None
    )
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_cloudflared_version_says_stand_in_and_parses_as_a_version() -> None:
    done = run(CLOUDFLARED, "--version")
    assert done.returncode == 0
    assert "STAND-IN" in done.stdout and "not the real cloudflared" in done.stdout
    assert CloudflaredVersion().process(done.stdout.splitlines()) == "2025.8.1"


REJECTIONS = {
    "unknown top-level key": (
        {"tunel": TUNNEL_ID},
        [],
        {},
        "unknown key(s) in the top level: tunel",
    ),
    "credentials for another tunnel": (
        {"tunnel": OTHER_TUNNEL_ID},
        [],
        {},
        "Unauthorized: Invalid tunnel secret",
    ),
    "credentials file missing": (
        {"credentials-file": "/nonexistent/creds.json"},
        [],
        {},
        "Tunnel credentials file '/nonexistent/creds.json' doesn't exist or is not a file",
    ),
    "last rule not catch-all": (
        {"ingress": "\n  - hostname: gpu.boathou.se\n    service: http://localhost:8000"},
        [],
        {},
        "The last ingress rule must match all URLs (i.e. it should not have a hostname or path",
    ),
    "rule without service": (
        {"ingress": "\n  - hostname: gpu.boathou.se\n  - service: http_status:404"},
        [],
        {},
        "is an invalid address, please make sure it has a scheme and a hostname",
    ),
    "unknown originRequest key": (
        {"originRequest": "\n  noTlsVerify: true"},
        [],
        {},
        "unknown key(s) in originRequest: noTlsVerify",
    ),
    "token not base64 JSON": (
        {},
        ["--token", "not-a-token"],
        {},
        "Provided Tunnel token is not valid.",
    ),
    "env token is credentials.json in base64": (
        {},
        [],
        {
            "TUNNEL_TOKEN": base64.b64encode(
                json.dumps(
                    {
                        "AccountTag": ACCOUNT_TAG,
                        "TunnelSecret": TUNNEL_SECRET,
                        "TunnelID": TUNNEL_ID,
                    },
                ).encode(),
            ).decode(),
        },
        "Provided Tunnel token is not valid.",
    ),
}


@pytest.mark.parametrize("case", REJECTIONS, ids=list(REJECTIONS))
def test_cloudflared_refuses(tmp_path: Path, case: str) -> None:
    changes, args, env, message = REJECTIONS[case]
    config = write_cloudflared_config(tmp_path, **changes)
    done = run(
        CLOUDFLARED,
        "--no-autoupdate",
        "--config",
        str(config),
        "tunnel",
        "run",
        *args,
        env={"HOME": str(tmp_path), **env},
    )
    assert done.returncode == 1, done.stderr
    assert message in done.stderr
    assert_no_secret(done.stdout, done.stderr)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"AccountTag": ACCOUNT_TAG, "TunnelID": TUNNEL_ID}), "lacks TunnelSecret"),
    ],
)
def test_cloudflared_refuses_a_bad_credentials_file(
    tmp_path: Path, content: str, message: str
) -> None:
    config = write_cloudflared_config(tmp_path)
    (tmp_path / "credentials.json").write_text(content)
    done = run(CLOUDFLARED, "tunnel", "--config", str(config), "run", env={"HOME": str(tmp_path)})
    assert done.returncode == 1
    assert message in done.stderr
    assert_no_secret(done.stdout, done.stderr)


def test_cloudflared_refuses_a_token_for_another_tunnel(tmp_path: Path) -> None:
    config = write_cloudflared_config(tmp_path, tunnel=OTHER_TUNNEL_ID)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    done = run(
        CLOUDFLARED, "tunnel", "--config", str(config), "run", "--token-file", str(token_file)
    )
    assert done.returncode == 1
    assert f"the token is for tunnel {TUNNEL_ID}" in done.stderr
    assert_no_secret(done.stdout, done.stderr)


def test_cloudflared_ingress_validate_and_rule(tmp_path: Path) -> None:
    good = write_cloudflared_config(tmp_path)
    done = run(CLOUDFLARED, "tunnel", "--config", str(good), "ingress", "validate")
    assert (done.returncode, done.stdout.splitlines()[-1]) == (0, "OK")

    done = run(
        CLOUDFLARED, "tunnel", "--config", str(good), "ingress", "rule", "https://gpu.boathou.se/v2"
    )
    assert done.returncode == 0
    assert "Matched rule #0" in done.stdout and "service: http://localhost:8000" in done.stdout

    bad = write_cloudflared_config(tmp_path, ingress="\n  - hostname: a.b\n    service: http://x:1")
    done = run(CLOUDFLARED, "tunnel", "--config", str(bad), "ingress", "validate")
    assert done.returncode == 1
    assert "Validation failed: The last ingress rule must match all URLs" in done.stderr


def ready_fact(address: str) -> object:
    """Run CloudflaredReady's own shell command here, and parse its output with the fact."""
    fact = CloudflaredReady()
    command = fact.command(address).get_raw_value()
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    return fact.process(done.stdout.splitlines())


@pytest.mark.skipif(shutil.which("curl") is None, reason="the fact's command needs curl")
def test_cloudflared_runs_serves_ready_and_metrics_and_stops_on_sigterm(tmp_path: Path) -> None:
    config = write_cloudflared_config(tmp_path)
    with started(CLOUDFLARED, "--no-autoupdate", "--config", str(config), "tunnel", "run") as cfd:
        address = cfd.wait_for(r"Starting metrics server on (127\.0\.0\.1:\d+)/metrics").group(1)
        cfd.wait_for(r"Registered tunnel connection connIndex=3")

        status, body = get(f"http://{address}/ready")
        ready = json.loads(body)
        assert (status, ready["status"], ready["readyConnections"]) == (200, 200, 4)
        assert str(uuid.UUID(ready["connectorId"])) == ready["connectorId"]

        status, metrics = get(f"http://{address}/metrics")
        assert status == 200
        assert "cloudflared_tunnel_ha_connections 4" in metrics
        assert re.search(r'build_info\{[^}]*version="2025\.8\.1"\} 1', metrics)
        assert get(f"http://{address}/healthcheck") == (200, "OK\n")

        assert ready_fact(address) == {
            "status": 200,
            "ready_connections": 4,
            "connector_id": ready["connectorId"],
        }
        assert cfd.terminate() == 0
        assert "Initiating graceful shutdown due to signal terminated" in cfd.stderr
        assert_no_secret(cfd.stderr)
    assert ready_fact(address) is None  # nothing listens any more


@pytest.mark.skipif(shutil.which("curl") is None, reason="the fact's command needs curl")
def test_cloudflared_with_a_token_and_no_edge_answers_503(tmp_path: Path) -> None:
    config = write_cloudflared_config(tmp_path, tunnel=None, **{"credentials-file": None})
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    with started(
        CLOUDFLARED,
        "tunnel",
        "--config",
        str(config),
        "run",
        "--token-file",
        str(token_file),
        env={"CLOUDFLARED_STANDIN_CONNECTIONS": "0"},
    ) as cfd:
        address = cfd.wait_for(r"Starting metrics server on (127\.0\.0\.1:\d+)/metrics").group(1)
        status, body = get(f"http://{address}/ready")
        assert (status, json.loads(body)["readyConnections"]) == (503, 0)
        fact = ready_fact(address)
        assert isinstance(fact, dict) and (fact["status"], fact["ready_connections"]) == (503, 0)
        assert cfd.terminate() == 0
        assert f"tunnelID={TUNNEL_ID}" in cfd.stderr
        assert_no_secret(cfd.stderr)


# --- k3s -----------------------------------------------------------------------------------------


def test_k3s_version_says_stand_in() -> None:
    done = run(K3S, "--version")
    assert done.returncode == 0
    first = done.stdout.splitlines()[0]
    assert first.startswith("k3s version v1.33.4+k3s1 (stand-in)") and "STAND-IN" in first


MANIFEST_OK = """\
apiVersion: v1
kind: Namespace
metadata:
  name: apps
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: label-studio
  namespace: apps
spec:
  template:
    spec:
      containers:
        - name: label-studio
          args: ["label-studio", "start"]
"""


def test_k3s_server_runs_applies_manifests_and_stops_on_sigterm(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    manifests = data_dir / "server" / "manifests"
    manifests.mkdir(parents=True)
    (manifests / "apps.yaml").write_text(MANIFEST_OK)
    (manifests / "broken.yaml").write_text("apiVersion: v1\nmetadata:\n  name: nameless\n")
    kubeconfig = tmp_path / "k3s.yaml"
    config = tmp_path / "config.yaml"
    config.write_text(
        f'data-dir: {data_dir}\nwrite-kubeconfig: {kubeconfig}\nwrite-kubeconfig-mode: "0640"\n'
        f"https-listen-port: 0\nbind-address: 127.0.0.1\ntoken: {K3S_TOKEN}\n"
        "disable:\n  - traefik\n"
        "node-label:\n  - oceanid.cluster/role=server\n",
    )
    with started(K3S, "server", "--config", str(config)) as k3s:
        port = k3s.wait_for(r"API listening on https://127\.0\.0\.1:(\d+)").group(1)
        k3s.wait_for(r"applied manifest.*objects=\"Namespace/apps,Deployment/label-studio\"")
        k3s.wait_for(r"failed to process .*broken\.yaml: document 1 lacks kind")

        assert kubeconfig.stat().st_mode & 0o777 == 0o640
        assert f"server: https://127.0.0.1:{port}" in kubeconfig.read_text()
        node_token = data_dir / "server" / "node-token"
        assert node_token.stat().st_mode & 0o777 == 0o600
        assert node_token.read_text().strip().endswith(f"::server:{K3S_TOKEN}")

        assert k3s.terminate() == 0
        assert_no_secret(k3s.stderr)


def test_k3s_agent_runs_until_sigterm(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(K3S_TOKEN)
    config = tmp_path / "config.yaml"
    config.write_text(
        f"server: https://127.0.0.1:9\ntoken-file: {token_file}\n"
        "node-label:\n  - oceanid.cluster/tunnel-enabled=true\n"
        "node-taint:\n  - workload-type=gpu-compute:NoSchedule\n",
    )
    with started(K3S, "agent", "--config", str(config)) as agent:
        agent.wait_for(r"Starting k3s agent v1\.33\.4\+k3s1")
        assert agent.terminate() == 0
        assert_no_secret(agent.stderr)


K3S_REJECTIONS = {
    "unknown key": (
        "server",
        f"token: {K3S_TOKEN}\nclusterinit: true\n",
        "Unknown flag --clusterinit",
    ),
    "server-only key on an agent": (
        "agent",
        f"server: https://tethys:6443\ntoken: {K3S_TOKEN}\ncluster-init: true\n",
        "Unknown flag --cluster-init found in config.yaml for `k3s agent`",
    ),
    "agent without server": ("agent", f"token: {K3S_TOKEN}\n", "--server is required"),
    "agent without token": ("agent", "server: https://tethys:6443\n", "--token or --token-file"),
    "agent with http server": (
        "agent",
        f"server: http://tethys:6443\ntoken: {K3S_TOKEN}\n",
        "must be https://host:port",
    ),
    "bad taint effect": (
        "agent",
        f"server: https://tethys:6443\ntoken: {K3S_TOKEN}\nnode-taint:\n  - gpu=yes:NoScheduling\n",
        "invalid node-taint",
    ),
    "missing token file": (
        "agent",
        "server: https://tethys:6443\ntoken-file: /nonexistent/token\n",
        "failed to read token file /nonexistent/token",
    ),
    "unknown disable": (
        "server",
        "disable: [traefik, trafik]\n",
        "invalid value 'trafik' for --disable",
    ),
    "unknown flannel backend": (  # ipsec was removed in k3s v1.27
        "server",
        "flannel-backend: ipsec\n",
        "Cannot configure unknown flannel backend 'ipsec'",
    ),
    "flannel backend on an agent": (  # agents take the server's
        "agent",
        f"server: https://tethys:6443\ntoken: {K3S_TOKEN}\nflannel-backend: vxlan\n",
        "Unknown flag --flannel-backend found in config.yaml for `k3s agent`",
    ),
}


@pytest.mark.parametrize("case", K3S_REJECTIONS, ids=list(K3S_REJECTIONS))
def test_k3s_refuses(tmp_path: Path, case: str) -> None:
    role, text, message = K3S_REJECTIONS[case]
    config = tmp_path / "config.yaml"
    config.write_text(f"data-dir: {tmp_path / 'data'}\n" + text if role == "server" else text)
    done = run(K3S, role, "--config", str(config))
    assert done.returncode == 1, done.stderr
    assert message in done.stderr
    assert_no_secret(done.stdout, done.stderr)


def test_both_stand_ins_carry_the_same_yaml_reader() -> None:
    """The reader is copied so each stand-in stays one self-contained file: keep copies equal."""

    def block(path: Path) -> str:
        text = path.read_text()
        return text[text.index("# --- mini-yaml begin") : text.index("# --- mini-yaml end")]

    assert block(CLOUDFLARED) == block(K3S)
