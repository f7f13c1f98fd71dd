"""Lab tests: real hosts under systemd-nspawn (root only).

The lab is booted once per test session (`tests/lab/conftest.py`) and shared by every
lab module; a test that breaks something on purpose puts it back before it ends, so the
next one finds a converged lab.
"""

from __future__ import annotations

import subprocess
import sys

import yaml

from lab.topology import REPO
from oceanid import tunnel_credentials


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
    "k3s_token",
    "labelStudioDbUrl",
    "labelStudioApiToken",
    "labelStudioAdminPassword",
    "hfAccessToken",
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
