"""Issue 19, item 5, in the lab: agents hold only an agent token (design.md §7).

tethys (the server) has `agent-token-file` (the lab's ESC has no k3sAgentToken, so the deploy
generated it there); k3s (the stand-in, which checks tokens as k3s's source does) wrote
`server/agent-token` as `K10<CA hash>::node:<secret>`, and styx and calypso hold exactly that:
no server token, the CA hash of the cluster's CA. Their token joins them as agents and is
refused for a server join. No secret is printed: comparisons are booleans or hashes.
"""

from __future__ import annotations

import hashlib
import re

import pytest

from lab.converge import pyinfra
from tests.lab import ssh
from tests.lab.test_lab_k3s import wait_ready

pytestmark = pytest.mark.lab

AGENTS = ("styx", "calypso")
SERVER_DIR = "/var/lib/rancher/k3s/server"


def read(name: str, path: str) -> str:
    done = ssh(name, f"sudo cat {path}")
    assert done.returncode == 0, f"{name}: cannot read {path}"
    return done.stdout.strip()


def test_agents_hold_the_agent_token_never_the_server_token(converged):
    server_secret = read("tethys", f"{SERVER_DIR}/token").partition("::server:")[2]
    agent_token = read("tethys", f"{SERVER_DIR}/agent-token")
    ca_pem = read("tethys", f"{SERVER_DIR}/tls/server-ca.crt") + "\n"  # not secret
    assert ssh("tethys", f"sudo test -L {SERVER_DIR}/agent-token").returncode == 1, "a symlink"
    full = re.fullmatch(r"K10([0-9a-f]{64})::node:(\S+)", agent_token)
    assert full, f"{SERVER_DIR}/agent-token on tethys is not a full agent token"
    assert full.group(1) == hashlib.sha256(ca_pem.encode()).hexdigest(), "not the cluster's CA"
    # Booleans first: pytest's assertion messages would print the values compared.
    distinct = len(server_secret) >= 16 and full.group(2) != server_secret
    assert distinct, "the agent secret is the server's"
    shown = full.group(2) in converged.output
    assert not shown, "the agent secret was in pyinfra's output"
    assert "agent-token-file" in ssh("tethys", "sudo cat /etc/rancher/k3s/config.yaml").stdout
    mode = ssh("tethys", "sudo stat -c '%a %U' /etc/rancher/k3s/agent-token").stdout.strip()
    assert mode == "600 root"
    for name in AGENTS:
        held = read(name, "/etc/rancher/k3s/token")
        same, leaked = held == agent_token, server_secret in held
        assert same, f"{name}'s token file is not tethys's agent token"
        assert not leaked, f"{name}'s token file holds the server token"
        mode = ssh(name, "sudo stat -c '%a %U' /etc/rancher/k3s/token").stdout.strip()
        assert mode == "600 root", name
    wait_ready(["tethys", *AGENTS])


def _as(name: str, user: str, path: str) -> str:
    """The status of a supervisor request from `name` as `user` with the secret of its own
    token file, sent through curl's config on stdin (never in an argument list)."""
    endpoint = ssh(name, "sudo sed -n 's/^server: //p' /etc/rancher/k3s/config.yaml").stdout
    command = (
        f"sudo sed -n 's/^.*::node:\\(.*\\)$/user = \"{user}:\\1\"/p' /etc/rancher/k3s/token"
        f" | curl -sk -K - -o /dev/null -w '%{{http_code}}' --max-time 10"
        f" {endpoint.strip()}{path}"
    )
    return ssh(name, command).stdout.strip()


def test_an_agents_token_joins_agents_only(converged):
    """k3s: the `node` user (agent token) may read /v1-k3s/config; a server join asks
    server-bootstrap as `server`, which the agent secret is not (401), and `node` has no
    server role there (403)."""
    for name in AGENTS:
        assert _as(name, "node", "/v1-k3s/config") == "200", name
        assert _as(name, "server", "/v1-k3s/server-bootstrap") == "401", name
        assert _as(name, "node", "/v1-k3s/server-bootstrap") == "403", name


def test_a_second_converge_changes_no_token_and_restarts_nothing(converged):
    units = {"tethys": "k3s", "styx": "k3s-agent", "calypso": "k3s-agent"}
    before = {
        name: ssh(name, f"systemctl show -p InvocationID --value {unit}").stdout
        for name, unit in units.items()
    }
    tokens = {name: read(name, "/etc/rancher/k3s/token") for name in AGENTS}
    again = pyinfra("deploys/site.py")
    assert again.returncode == 0, again.output[-4000:]
    assert again.changed == {}, again.changed
    for name, unit in units.items():
        now = ssh(name, f"systemctl show -p InvocationID --value {unit}").stdout
        assert now == before[name], f"{unit} on {name} restarted"
    for name in AGENTS:
        assert read(name, "/etc/rancher/k3s/token") == tokens[name], f"{name}'s token changed"
