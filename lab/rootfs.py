"""Build the lab's Debian bookworm root filesystem once, then give each host a copy.

The base is what a fresh VPS image has (systemd, sshd, sudo, python3) plus the lab's
network settings (the registry proxy and this machine's CA certificates, since HTTPS
to the registries is intercepted). It is cached by a hash of everything that shapes
it, so a second `make lab` reuses it. Per-host changes are what cloud-init would do on
a new VPS: hostname, SSH host keys, the operator's authorized key.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

from lab import docker_host, kubectl, wheelhouse
from lab.topology import (
    APT_CACHE_URL,
    CACHE_DIR,
    GATEWAY,
    HOSTS,
    PROXY_URL,
    SSH_DIR,
    LabHost,
)

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "sudo",
    "python3",
    "iproute2",
    "ca-certificates",
    "procps",
    "iputils-ping",
    "less",
    "openssl",
)
CA_DIR = Path("/usr/local/share/ca-certificates")

APT_SOURCES = f"""\
Types: deb
URIs: {MIRROR}
Suites: {SUITE} {SUITE}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: {SUITE}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
APT_PROXY = f'Acquire::http::Proxy "{PROXY_URL}";\nAcquire::https::Proxy "{PROXY_URL}";\n'
PIP_CONF = f"[global]\nproxy = {PROXY_URL}\ncert = /etc/ssl/certs/ca-certificates.crt\n"
# The proxy is for the registries only: the hosts reach each other directly (k3s agents join the
# server, curl waits for its API), as they would without a proxy. Addresses are listed one by
# one, since Python's urllib (the stand-ins) reads no CIDR in no_proxy.
_DIRECT = ",".join(
    ["localhost", "127.0.0.1", GATEWAY, *(h.address for h in HOSTS), *(h.name for h in HOSTS)]
)
ENVIRONMENT = f"http_proxy={PROXY_URL}\nhttps_proxy={PROXY_URL}\nno_proxy={_DIRECT}\n"
SSHD_CONF = "PasswordAuthentication no\nPermitRootLogin prohibit-password\nUseDNS no\n"
# sshd logs every command a connection runs ("Starting session: command for root from ..."),
# so the bench counts each host's round trips from the host's side (lab/roundtrips.py).
SSHD_COUNT_CONF = "LogLevel VERBOSE\n"
# Each host's packages come from the lab's caches (lab/services.py, lab/wheelhouse.py): Debian's
# through the package cache (https, which it cannot cache, still through the registry proxy), and
# pip's from the wheelhouse only. Written per host, over the base's, so the base stays as a
# fresh VPS image has it and its cached tarball stays valid.
APT_CACHED = f'Acquire::http::Proxy "{APT_CACHE_URL}";\nAcquire::https::Proxy "{PROXY_URL}";\n'


def _ca_files() -> list[Path]:
    return sorted(CA_DIR.glob("*.crt")) if CA_DIR.is_dir() else []


def base_key() -> str:
    """A hash of everything that shapes the base image."""
    digest = hashlib.sha256()
    for part in (
        SUITE,
        MIRROR,
        " ".join(PACKAGES),
        APT_SOURCES,
        APT_PROXY,
        PIP_CONF,
        ENVIRONMENT,
        SSHD_CONF,
    ):
        digest.update(part.encode())
    for ca in _ca_files():
        digest.update(ca.read_bytes())
    return digest.hexdigest()[:16]


def _write(root: Path, relpath: str, content: str, mode: int = 0o644) -> None:
    path = root / relpath.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    path.chmod(mode)


def build_base(log) -> Path:
    """Return the cached base tarball, building it with mmdebstrap when missing."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tarball = CACHE_DIR / f"{SUITE}-{base_key()}.tar"
    if tarball.exists():
        log(f"rootfs: cached {tarball.name}")
        return tarball
    for stale in CACHE_DIR.glob(f"{SUITE}-*.tar"):
        stale.unlink()
    staging = CACHE_DIR / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    _write(staging, "etc/apt/sources.list.d/debian.sources", APT_SOURCES)
    _write(staging, "etc/apt/apt.conf.d/00lab-proxy", APT_PROXY)
    _write(staging, "etc/pip.conf", PIP_CONF)
    _write(staging, "etc/environment", ENVIRONMENT)
    _write(staging, "etc/ssh/sshd_config.d/lab.conf", SSHD_CONF)
    for ca in _ca_files():
        _write(staging, f"usr/local/share/ca-certificates/{ca.name}", ca.read_text())
    partial = tarball.with_suffix(".partial")
    cmd = [
        "mmdebstrap",
        "--variant=minbase",
        "--format=tar",
        f"--include={','.join(PACKAGES)}",
        f'--customize-hook=tar -C {staging} -c . | tar -C "$1" -x',
        '--customize-hook=rm -f "$1"/etc/apt/sources.list',
        '--customize-hook=chroot "$1" update-ca-certificates --fresh >/dev/null',
        '--customize-hook=rm -f "$1"/etc/ssh/ssh_host_*',
        '--customize-hook=truncate -s0 "$1"/etc/machine-id',
        SUITE,
        str(partial),
        MIRROR,
    ]
    log(f"rootfs: building {tarball.name} with mmdebstrap")
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    partial.rename(tarball)
    shutil.rmtree(staging, ignore_errors=True)
    return tarball


def _hosts_file() -> str:
    lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
    lines += [f"{h.address} {h.name}" for h in HOSTS]
    lines.append(f"{GATEWAY} lab-gateway")
    return "\n".join(lines) + "\n"


def prepare_host(lab_host: LabHost, tarball: Path) -> None:
    """A fresh copy of the base for one host, personalised like cloud-init would."""
    root = lab_host.rootfs
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-xpf", str(tarball)], check=True)
    _write(root, "etc/hostname", lab_host.name + "\n")
    _write(root, "etc/ssh/sshd_config.d/lab-count.conf", SSHD_COUNT_CONF)
    _write(root, "etc/apt/apt.conf.d/00lab-proxy", APT_CACHED)
    _write(root, "etc/pip.conf", wheelhouse.PIP_CONF)
    if lab_host.docker:  # an operator's daemon.json, which the deploy's merge must keep
        _write(root, "etc/docker/daemon.json", json.dumps(docker_host.daemon_json()) + "\n")
    _write(root, "etc/hosts", _hosts_file())
    _write(
        root, "etc/resolv.conf", "# the lab has no DNS; registries are reached through the proxy\n"
    )
    for key in SSH_DIR.glob(f"host_{lab_host.name}_*"):
        kind = key.name.removeprefix(f"host_{lab_host.name}_")
        target = root / "etc/ssh" / kind
        shutil.copyfile(key, target)
        target.chmod(0o644 if kind.endswith(".pub") else 0o600)
    # the real kubectl, where only the k3s stand-in looks (`k3s kubectl …` execs it)
    target = root / kubectl.STANDIN_PATH.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(kubectl.kubectl(), target)
    target.chmod(0o755)
    authorized = (SSH_DIR / "id_ed25519.pub").read_text()
    if lab_host.ssh_user == "root":
        _write(root, "root/.ssh/authorized_keys", authorized, 0o600)
        (root / "root/.ssh").chmod(0o700)
    else:
        # Production's calypso already has its operator account; so does the lab's.
        user = lab_host.ssh_user
        subprocess.run(["chroot", str(root), "useradd", "-m", "-s", "/bin/bash", user], check=True)
        _write(root, f"home/{user}/.ssh/authorized_keys", authorized, 0o600)
        _write(root, f"etc/sudoers.d/{user}", f"{user} ALL=(ALL) NOPASSWD:ALL\n", 0o440)
        subprocess.run(
            ["chroot", str(root), "chown", "-R", f"{user}:{user}", f"/home/{user}/.ssh"], check=True
        )
