"""Lab tests: real hosts under systemd-nspawn (root only).

The lab is booted once per test session (`tests/lab/conftest.py`) and shared by every
lab module; a test that breaks something on purpose puts it back before it ends, so the
next one finds a converged lab.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from lab.converge import lab_env
from lab.topology import REPO
from oceanid import tunnel_credentials

SSH = f"ssh -F {REPO / '.lab/ssh/config'} -o BatchMode=yes"


def lab_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`python -m lab …` as an operator runs it, output captured."""
    return subprocess.run([sys.executable, "-m", "lab", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, check=False)  # fmt: skip


def ssh(name: str, command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """One command on a lab host through the lab's SSH config."""
    return subprocess.run(
        ["ssh", "-F", str(REPO / ".lab/ssh/config"), "-o", "BatchMode=yes", name, command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


SECRET_KEYS = (
    "cloudflareApiToken",
    "cloudflareTunnelToken",
    "cloudflareNodeTunnelToken",
    "cloudflareNode2TunnelToken",
    "cloudflareNode3TunnelToken",
    "k3s_token",
    "labelStudioDbUrl",
    "labelStudioApiToken",
    "labelStudioAdminPassword",
    "hfAccessToken",
    "cloudflareAccessClientSecret",
    "backupS3AccessKeyId",  # the backups' object store (lab/s3.py)
    "backupS3SecretAccessKey",
    "mlBackendPassword",  # the ML backend's basic auth (deploys/gpu_host/ml_backend)
)


def lab_secret_lines() -> list[tuple[str, str]]:
    """Each lab secret (every line of it), and each tunnel secret inside a credential.

    Tunnel IDs and account IDs are not among them: they are public in every CNAME target.
    """
    values = yaml.safe_load((REPO / ".lab" / "secrets.yaml").read_text())
    found = []
    for key in SECRET_KEYS:
        found += [(key, line.strip()) for line in values[key].strip().splitlines()]
        if "Tunnel" in key:
            found.append((key, tunnel_credentials.parse(values[key], key=key).tunnel_secret))
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


@contextmanager
def k3s_tunnel(tmp_path: Path) -> Iterator[Path]:
    """`make kubeconfig` and `make tunnel` as an operator runs them, on a free local port."""
    port = free_port()
    kubeconfig = tmp_path / "kubeconfig.yaml"
    # a control socket's path must fit a sun_path (108 bytes): pytest's tmp_path may not
    control = Path(tempfile.mkdtemp(prefix="k3s-ctl-", dir="/tmp"))
    env = {"SSH": SSH, "LOCAL_PORT": str(port), "CONTROL_DIR": str(control)}
    wrote = subprocess.run(
        [sys.executable, "-m", "deploys.k3s.kubeconfig", "tethys",
         "--server", f"https://127.0.0.1:{port}", "--output", str(kubeconfig)],
        cwd=REPO, env={**lab_env(), **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert wrote.returncode == 0, wrote.stderr
    tunnel = [str(REPO / "scripts/k3s-ssh-tunnel.sh")]
    opened = subprocess.run([*tunnel, "tethys"], env={**lab_env(), **env}, timeout=60)
    assert opened.returncode == 0
    try:
        wait_port(port)
        yield kubeconfig
    finally:
        subprocess.run([*tunnel, "--close", "tethys"], env={**lab_env(), **env}, timeout=60)
        shutil.rmtree(control, ignore_errors=True)


#: Where each GPU host's connector plays the edge for its hostnames: the cloudflared stand-in's
#: `DEFAULT_EDGE` (tests/standins/cloudflared), on the host's loopback.
EDGE_PORT = 20880


@contextmanager
def edges(*names: str) -> Iterator[dict[str, str]]:
    """An SSH port forward to each host's connector edge: host name -> local URL. A request
    there with a public name as its Host header is routed by the rules that connector runs."""
    forwards, urls = [], {}
    try:
        for name in names:
            port = free_port()
            forwards.append(subprocess.Popen(
                [*SSH.split(), "-N", "-o", "ExitOnForwardFailure=yes",
                 "-L", f"127.0.0.1:{port}:127.0.0.1:{EDGE_PORT}", name],
            ))  # fmt: skip
            wait_port(port)
            urls[name] = f"http://127.0.0.1:{port}"
        yield urls
    finally:
        for forward in forwards:
            forward.terminate()
            forward.wait(timeout=10)
