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
APT_CACHE_PORT = 3143  # the lab's Debian package cache (lab/apt_cache.py)
PROXY_URL = f"http://{GATEWAY}:{PROXY_PORT}"
MIRROR_URL = f"http://{GATEWAY}:{MIRROR_PORT}"
APT_CACHE_URL = f"http://{GATEWAY}:{APT_CACHE_PORT}"
S3_PORT = 9900  # the object store of the backups, moto's S3 server (lab/s3.py)
S3_URL = f"http://{GATEWAY}:{S3_PORT}"
#: an operator's file server: the documents whose URLs Label Studio's tasks hold, which the
#: ML-backend adapter on a GPU host fetches (lab/files.py)
FILES_PORT = 8090
FILES_URL = f"http://{GATEWAY}:{FILES_PORT}"
FILES_DIR = LAB_DIR / "files"
#: the wheels every GPU host installs (the Triton wheel, the models' requirements), served as
#: a pip `--find-links` page by the mirror (lab/wheelhouse.py)
WHEELHOUSE_URL = f"{MIRROR_URL}/pypi/"
APT_CACHE_DIR = CACHE_DIR / "apt"

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

#: `make bench-scale N=…` (lab/bench_scale.py) boots up to this many extra GPU hosts, plus two
#: more: one that fills the package cache and one that measures the one-host figures; none of
#: them is part of `make lab`.
SCALE_MAX = 16
#: The first extra GPU host's number: calypso4 is `gpu4.<base>`, with the ESC keys
#: cloudflareNode4TunnelId and cloudflareNode4TunnelToken (calypso3 is gpu3).
SCALE_FIRST = 4
SCALE_HOSTS = tuple(
    LabHost(f"calypso{SCALE_FIRST + i}", 16 + i, "gpu host (bench-scale)")
    for i in range(SCALE_MAX + 2)
)
ALL_HOSTS = HOSTS + SCALE_HOSTS


def scale_number(lab_host: LabHost) -> int:
    """The number in a bench-scale host's name, its public name and its ESC keys."""
    return int(lab_host.name.removeprefix("calypso"))


def host(name: str) -> LabHost:
    for candidate in ALL_HOSTS:
        if candidate.name == name:
            return candidate
    raise KeyError(name)
