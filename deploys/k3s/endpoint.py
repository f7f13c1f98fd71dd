"""The control-plane endpoint: HAProxy on each server, in front of every server's API.

With `enable_control_plane_lb`, agents, `tls-san` and the operators' kubeconfig reach the API at
`https://<first server>:<k3s_lb_port>`, where HAProxy (Debian's) forwards TCP to whichever
server's 6443 passes its health check; without it, at the first server's 6443. The port is
never one k3s binds itself (`oceanid.settings.K3S_PORTS`): that collision is what broke the old
stack's load balancer.

haproxy.cfg is not YAML: it is built here as data (section -> lines) and rendered by a small
function; the new file is checked by `haproxy -c` before it replaces the old one.
"""

from __future__ import annotations

from collections.abc import Sequence

from oceanid.model import HostPlan
from operations.managed import DesiredState, ManagedFile

API_PORT = 6443
CONFIG = "/etc/haproxy/haproxy.cfg"
UNIT = "haproxy.service"
PACKAGE = "haproxy"
HEADER = "# Managed by oceanid-deploys (deploys/k3s/endpoint.py); local edits are overwritten.\n"


def config(port: int, servers: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    """
    HAProxy's configuration as data: TCP in on `port`, out to every server's API.

    + port: where HAProxy listens (``k3s_lb_port``)
    + servers: (node name, address) of every k3s server, the first first

    A server is checked by k3s's own unauthenticated ``/ping`` over TLS (``pong``), so one
    whose process is up but whose supervisor does not answer gets no connections.
    """
    backend = [
        "mode tcp",
        "balance roundrobin",
        "option httpchk GET /ping",
        "http-check expect string pong",
        "default-server check check-ssl verify none inter 5s fall 3 rise 2",
    ]
    backend += [f"server {name} {address}:{API_PORT}" for name, address in servers]
    return {
        "global": [
            "log /dev/log local0",
            "chroot /var/lib/haproxy",
            "user haproxy",
            "group haproxy",
            "daemon",
        ],
        "defaults": [
            "log global",
            "mode tcp",
            "option tcplog",
            "timeout connect 5s",
            # kubectl watches and logs hold a connection for long
            "timeout client 1h",
            "timeout server 1h",
        ],
        "frontend k3s-api": [f"bind :{port}", "default_backend k3s-servers"],
        "backend k3s-servers": backend,
    }


def render(document: dict[str, list[str]]) -> str:
    """haproxy.cfg text: each section's header, then its lines indented."""
    parts = [HEADER]
    for section, lines in document.items():
        parts.append(f"\n{section}\n" + "".join(f"    {line}\n" for line in lines))
    return "".join(parts)


def add_to(desired: DesiredState, plan: HostPlan, servers: Sequence[tuple[str, str]]) -> str:
    """Declare HAProxy on this server; return its config's path (its change restarts it)."""
    text = render(config(plan.settings.k3s_lb_port, servers))
    desired.packages.append(PACKAGE)
    desired.files.append(ManagedFile(CONFIG, text.encode(), validate="haproxy -c -q -f {path}"))
    desired.units.append(UNIT)
    return CONFIG
