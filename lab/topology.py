"""The lab's fixed facts: where it lives, its bridge and its hosts.

Addresses and MAC addresses are fixed so a re-created host is reachable at once (a new
MAC would sit behind a stale neighbour entry for ~30 s). Every name the lab creates on
this machine starts with `PREFIX`, which is how `lab down` finds what a killed run left.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAB_DIR = REPO / ".lab"
CACHE_DIR = LAB_DIR / "cache"
HOSTS_DIR = LAB_DIR / "hosts"
RUN_DIR = LAB_DIR / "run"
SSH_DIR = LAB_DIR / "ssh"
MIRROR_DIR = LAB_DIR / "mirror"
LOG_DIR = LAB_DIR / "logs"
SECRETS_FILE = LAB_DIR / "secrets.yaml"
ARTIFACTS_FILE = LAB_DIR / "artifacts.json"

PREFIX = "ocl"
BRIDGE = f"{PREFIX}-br0"
SUBNET = "10.77.0"
GATEWAY = f"{SUBNET}.1"
PREFIXLEN = 24
PROXY_PORT = 3128
MIRROR_PORT = 8080
PROXY_URL = f"http://{GATEWAY}:{PROXY_PORT}"
MIRROR_URL = f"http://{GATEWAY}:{MIRROR_PORT}"

#: Hosts that reach the package registries only through the lab proxy.
REGISTRY_HOSTS = ("deb.debian.org", "pypi.org", "files.pythonhosted.org")


@dataclass(frozen=True)
class LabHost:
    name: str
    octet: int
    role: str
    ssh_user: str = "root"
    docker: bool = False  # runs Docker (lab/docker_host.py: the nspawn settings it needs)

    @property
    def address(self) -> str:
        return f"{SUBNET}.{self.octet}"

    @property
    def mac(self) -> str:
        return f"02:0c:ea:77:00:{self.octet:02x}"

    @property
    def netns(self) -> str:
        return f"{PREFIX}-{self.name}"

    @property
    def veth(self) -> str:
        return f"{PREFIX}-{self.name}"[:15]

    @property
    def rootfs(self) -> Path:
        return HOSTS_DIR / self.name / "rootfs"


HOSTS = (
    LabHost("tethys", 11, "k3s server"),
    LabHost("styx", 12, "k3s agent"),
    LabHost("calypso", 13, "gpu host, k3s agent", ssh_user="oceanid"),
    LabHost("calypso2", 14, "gpu host (second tunnel), Triton in Docker", docker=True),
    LabHost("calypso3", 15, "gpu host, an HTTP model server in Docker", docker=True),
)
GPU_HOSTS = ("calypso", "calypso2", "calypso3")


def host(name: str) -> LabHost:
    for candidate in HOSTS:
        if candidate.name == name:
            return candidate
    raise KeyError(name)
