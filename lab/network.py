"""The lab's network: one bridge, and one network namespace per host hanging off it.

The namespaces have no default route and this machine does not forward, so a lab host
reaches nothing but its neighbours, the artifact mirror and the registry proxy on the
bridge address. Everything is named with the lab prefix so teardown can find it even
after a killed run.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from lab.topology import BRIDGE, GATEWAY, PREFIX, PREFIXLEN, LabHost


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def create_bridge() -> None:
    _ip("link", "add", BRIDGE, "type", "bridge")
    _ip("addr", "add", f"{GATEWAY}/{PREFIXLEN}", "dev", BRIDGE)
    _ip("link", "set", BRIDGE, "up")


def create_host_netns(host: LabHost) -> None:
    """A namespace with `eth0` (fixed MAC and address) wired to the bridge."""
    _ip("netns", "add", host.netns)
    _ip("link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
    _ip("link", "set", host.veth, "master", BRIDGE)
    _ip("link", "set", host.veth, "up")
    ns = ("-n", host.netns)
    _ip(*ns, "link", "set", "eth0", "address", host.mac)
    _ip(*ns, "addr", "add", f"{host.address}/{PREFIXLEN}", "dev", "eth0")
    _ip(*ns, "link", "set", "lo", "up")
    _ip(*ns, "link", "set", "eth0", "up")


def leftovers() -> dict[str, list[str]]:
    """Namespaces and links with the lab prefix that exist now."""
    netns = [
        line.split()[0]
        for line in _ip("netns", "list", check=False).stdout.splitlines()
        if line.startswith(f"{PREFIX}-")
    ]
    links = []
    for line in _ip("-o", "link", "show", check=False).stdout.splitlines():
        name = line.split(":", 2)[1].strip().split("@")[0]
        if name.startswith(f"{PREFIX}-"):
            links.append(name)
    return {"netns": netns, "links": links}


def destroy_all() -> list[str]:
    """Remove every lab namespace and link; return what was removed."""
    removed = []
    found = leftovers()
    for name in found["netns"]:
        _ip("netns", "delete", name, check=False)
        removed.append(f"netns {name}")
    for name in leftovers()["links"]:
        _ip("link", "delete", name, check=False)
        removed.append(f"link {name}")
    stale = Path("/run/netns")
    if stale.is_dir():
        for path in stale.glob(f"{PREFIX}-*"):
            subprocess.run(["umount", str(path)], check=False, capture_output=True)
            path.unlink(missing_ok=True)
            removed.append(f"netns mount {path}")
    return removed
