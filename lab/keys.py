"""SSH material for the lab: the operator's key, each host's host keys, an SSH config.

Host keys are made here and copied into each host, so the lab's known_hosts is exact
and strict host key checking stays on, as it should against real machines. The bench-scale
hosts (lab/topology.SCALE_HOSTS) get theirs too, so booting them rewrites nothing here.
"""

from __future__ import annotations

import subprocess

from lab.topology import ALL_HOSTS, SSH_DIR

HOST_KEY_TYPES = ("ed25519",)


def ensure() -> None:
    SSH_DIR.mkdir(parents=True, exist_ok=True)
    SSH_DIR.chmod(0o700)
    client = SSH_DIR / "id_ed25519"
    if not client.exists():
        _keygen(client, "oceanid-lab")
    known = []
    for lab_host in ALL_HOSTS:
        for kind in HOST_KEY_TYPES:
            key = SSH_DIR / f"host_{lab_host.name}_ssh_host_{kind}_key"
            if not key.exists():
                _keygen(key, f"root@{lab_host.name}", kind)
            public = (key.with_name(key.name + ".pub")).read_text().split()[:2]
            known.append(f"{lab_host.name},{lab_host.address} {' '.join(public)}")
    (SSH_DIR / "known_hosts").write_text("\n".join(known) + "\n")
    config = []
    for lab_host in ALL_HOSTS:
        config += [
            f"Host {lab_host.name}",
            f"    HostName {lab_host.address}",
            f"    User {lab_host.ssh_user}",
            f"    IdentityFile {client}",
            "    IdentitiesOnly yes",
            f"    UserKnownHostsFile {SSH_DIR / 'known_hosts'}",
            "    StrictHostKeyChecking yes",
            "",
        ]
    (SSH_DIR / "config").write_text("\n".join(config))


def _keygen(path, comment: str, kind: str = "ed25519") -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", comment, "-f", str(path)],
        check=True,
    )
