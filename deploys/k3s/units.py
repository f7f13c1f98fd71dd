"""The k3s systemd units, and the kernel modules and sysctls k3s needs, as file contents.

The units are ours, not the install script's: they keep what the upstream unit has (notify
start, process kill mode so an upgrade leaves pods running, cgroup delegation, no resource
limits, restart forever) and nothing else. No flag and no environment file: the settings are in
config.yaml, and the token must never be in a unit or an environment.

k3s loads `br_netfilter` and `overlay` and sets the bridge and forwarding sysctls itself when it
starts; the files below make them persistent, so a reboot or another program resetting them
(a firewall's sysctl file) does not break pod networking until k3s restarts.
"""

from __future__ import annotations

from pathlib import Path
from string import Template
from typing import Literal

HERE = Path(__file__).parent
BINARY = "/usr/local/bin/k3s"
HEADER = "# Managed by oceanid-deploys (deploys/k3s); local edits are overwritten.\n"

UNIT_NAMES = {"server": "k3s.service", "agent": "k3s-agent.service"}
DESCRIPTIONS = {
    "server": "Lightweight Kubernetes (k3s server)",
    "agent": "Lightweight Kubernetes (k3s agent)",
}

MODULES_FILE = "/etc/modules-load.d/k3s.conf"
MODULES = ("br_netfilter", "overlay")
SYSCTL_FILE = "/etc/sysctl.d/90-k3s.conf"
# br_netfilter's keys exist only once it is loaded: systemd-sysctl runs after
# systemd-modules-load at boot, which loads it from MODULES_FILE.
SYSCTLS = {
    "net.bridge.bridge-nf-call-iptables": "1",
    "net.bridge.bridge-nf-call-ip6tables": "1",
    "net.ipv4.ip_forward": "1",
}


def unit(role: Literal["server", "agent"], binary: str = BINARY) -> str:
    """
    The unit file for a server (``k3s.service``) or an agent (``k3s-agent.service``).

    + role: ``server`` or ``agent``
    + binary: the k3s binary's path
    """
    if role not in UNIT_NAMES:
        raise ValueError(f"k3s role must be 'server' or 'agent', got {role!r}")
    return Template((HERE / "k3s.service").read_text()).substitute(
        description=DESCRIPTIONS[role], binary=binary, role=role
    )


def modules_load() -> str:
    """`/etc/modules-load.d/k3s.conf`: one module a line."""
    return HEADER + "".join(f"{module}\n" for module in MODULES)


def sysctl() -> str:
    """`/etc/sysctl.d/90-k3s.conf`: ``key = value`` lines."""
    return HEADER + "".join(f"{key} = {value}\n" for key, value in SYSCTLS.items())
