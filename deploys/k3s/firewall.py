"""The host firewall on every k3s node: k3s's ports answer the cluster's nodes and no one else.

tethys and styx are public machines. Without this, 6443 (API and supervisor), 10250 (kubelet),
2379-2380 (etcd), flannel's UDP ports and the API endpoint's port answer every address on the
internet. The deploy owns one nftables table, ``inet oceanid``, whose input chain drops those
ports from every source that is not a cluster node's address (from the inventory: each k3s
host's `address` where it is an IP, `node_ip`, `node_external_ip`), loopback, or a pod on this
node. It never touches another table (Docker's, the iptables-nft rules of k3s and kube-proxy)
nor any other port, SSH above all; the operator reaches the API through SSH (`make tunnel`),
which arrives on loopback.

The rules are data (`ruleset`) turned into nft's text (`render`), written to RULES and checked
with ``nft -c -f`` before the file replaces the old one. The file deletes and redefines the
table in one transaction (an empty definition first, so the delete finds a table on the first
load), so every load is atomic: there is never a moment without the table, and a file nft
refuses changes nothing. `oceanid-firewall.service` loads it at boot before the network and
before k3s, and again when the file changes; k3s is not restarted for it. Every run renders the
file from the inventory, so a node removed from the inventory is gone from the set.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from pathlib import Path
from string import Template

from deploys.k3s import cluster, units
from oceanid.model import HostPlan, Site
from operations import services
from operations.managed import DesiredState, ManagedDirectory, ManagedFile

HERE = Path(__file__).parent
FOLDER = "/etc/oceanid"
RULES = f"{FOLDER}/firewall.nft"
UNIT = "oceanid-firewall.service"
UNIT_FILE = f"/etc/systemd/system/{UNIT}"
PACKAGE = "nftables"
TABLE = "inet oceanid"
HEADER = "# Managed by oceanid-deploys (deploys/k3s/firewall.py); local edits are overwritten.\n"

# What k3s listens on for other nodes (docs.k3s.io, "Inbound Rules for K3s Nodes").
TCP_PORTS: tuple[int | tuple[int, int], ...] = (
    6443,  # the API server and k3s's supervisor (agents join here)
    10250,  # the kubelet (metrics, logs, exec)
    (2379, 2380),  # embedded etcd, between servers
)
UDP_PORTS: tuple[int | tuple[int, int], ...] = (
    8472,  # flannel vxlan
    (51820, 51821),  # flannel wireguard-native, IPv4 and IPv6
)
# Pods on this node reach its API (the `kubernetes` Service) and kubelet from the bridge k3s's
# flannel CNI puts them on; pods on other nodes arrive masqueraded as their node.
POD_BRIDGE = "cni0"


def node_addresses(site: Site) -> list[str]:
    """Every cluster node's IP addresses from the inventory, servers first."""
    found: list[str] = []
    for plan in cluster.nodes(site):
        found += plan.settings.host(plan.name).k3s.ip_addresses()
    return list(dict.fromkeys(found))


def ruleset(addresses: Iterable[str], lb_port: int | None = None) -> dict:
    """
    The table as data: the node sets by family and the ports dropped for everyone else.

    + addresses: the cluster nodes' IP addresses
    + lb_port: the API endpoint's port (HAProxy's, with ``enable_control_plane_lb``)
    """
    parsed = sorted({ipaddress.ip_address(a) for a in addresses}, key=lambda a: (a.version, a))
    tcp = list(TCP_PORTS) + ([lb_port] if lb_port is not None else [])
    return {
        "nodes_v4": [str(a) for a in parsed if a.version == 4],
        "nodes_v6": [str(a) for a in parsed if a.version == 6],
        "tcp": sorted(tcp, key=lambda p: p if isinstance(p, int) else p[0]),
        "udp": list(UDP_PORTS),
    }


def _ports(ports: list) -> str:
    return ", ".join(str(p) if isinstance(p, int) else f"{p[0]}-{p[1]}" for p in ports)


def _set(name: str, kind: str, elements: list[str]) -> list[str]:
    lines = [f"\tset {name} {{", f"\t\ttype {kind}"]
    if elements:
        lines.append(f"\t\telements = {{ {', '.join(elements)} }}")
    return [*lines, "\t}"]


def render(rules: dict) -> str:
    """The file nft loads: the table deleted and defined again, in one transaction.

    Rules, in order: replies to what was already admitted (a connection this node opened that
    comes back to an ephemeral port in 51820-51821, say), loopback, this node's pods and the
    cluster's nodes pass this chain; what remains is dropped on k3s's ports only. The chain's
    policy is accept: it decides nothing for any other port, and another table's drop still
    drops.
    """
    body = [
        *_set("nodes_v4", "ipv4_addr", rules["nodes_v4"]),
        *_set("nodes_v6", "ipv6_addr", rules["nodes_v6"]),
        "\tchain input {",
        "\t\ttype filter hook input priority filter; policy accept;",
        "\t\tct state established,related accept",
        '\t\tiif "lo" accept',
        f'\t\tiifname "{POD_BRIDGE}" accept',
        "\t\tip saddr @nodes_v4 accept",
        "\t\tip6 saddr @nodes_v6 accept",
        f"\t\ttcp dport {{ {_ports(rules['tcp'])} }} counter drop",
        f"\t\tudp dport {{ {_ports(rules['udp'])} }} counter drop",
        "\t}",
    ]
    return "".join(
        [
            HEADER,
            f"table {TABLE} {{}}\n",
            f"delete table {TABLE}\n",
            f"table {TABLE} {{\n",
            *(f"{line}\n" for line in body),
            "}\n",
        ]
    )


def unit() -> str:
    """`oceanid-firewall.service`: the unit file beside this module, with our paths."""
    return Template((HERE / UNIT).read_text()).substitute(
        rules=RULES, k3s_units=" ".join(units.UNIT_NAMES.values())
    )


def add_to(desired: DesiredState, plan: HostPlan, site: Site) -> None:
    """Declare the firewall on this node: nftables, the rules (checked by nft), the unit."""
    settings = plan.settings
    lb_port = settings.k3s_lb_port if settings.enable_control_plane_lb else None
    text = render(ruleset(node_addresses(site), lb_port))
    desired.packages.append(PACKAGE)
    desired.directories.append(ManagedDirectory(FOLDER))
    desired.files += [
        ManagedFile(RULES, text.encode(), validate="nft -c -f {path}"),
        ManagedFile(UNIT_FILE, unit().encode()),
    ]
    desired.units.append(UNIT)


def start(desired: DesiredState) -> None:
    """Load the rules (again) when they or the unit changed; enable the unit for every boot.

    A restart of this oneshot unit runs `nft -f` once more: the unit has no stop command, so
    the table stays in place until the new one replaces it in the same transaction.
    """
    services.unit(
        name="host firewall (nftables table inet oceanid)",
        desired=desired,
        unit_name=UNIT,
        unit_file=UNIT_FILE,
        inputs=[RULES],
    )
