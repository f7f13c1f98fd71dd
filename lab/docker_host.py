"""What a lab host needs so that Debian's docker.io runs containers inside it (issue 13).

Found by trying, on this machine (no systemd as PID 1, cgroup v1 hybrid, nspawn 252): the
attempts and their exact errors are in lab/docker.md. With the lab's nspawn settings alone,
dockerd starts but `docker run` fails, for two reasons; a third concerns every lab host:

- nspawn mounts every cgroup v1 controller read-only (no user namespace), so runc cannot
  create a container's cgroup. A pure cgroup2 view (`nspawn_env`) gives the host a writable
  cgroup of its own instead; Docker then runs as on a Debian 12 server (cgroup v2, the
  systemd cgroup driver), but without resource limits, because every controller of this
  machine is bound to a v1 hierarchy (`docker run --memory` warns and discards the limit).
- nspawn's seccomp filter refuses keyctl and bpf, which runc needs (`nspawn_options`).
- Without systemd on the machine, nspawn --keep-unit puts every host's payload into the same
  `/payload` cgroup, so hosts would share unit cgroups such as system.slice/docker.service.
  `join_cgroups` gives each supervisor a cgroup of its own first.
"""

from __future__ import annotations

import os
from pathlib import Path

from lab.topology import PREFIX

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
#: /proc/self/cgroup's hierarchy field -> the folder it is mounted at under CGROUP_ROOT: the
#: two hierarchies nspawn places its payload in (cgroup2 sits at `unified` on a hybrid machine).
HIERARCHIES = {"name=systemd": "systemd", "": "unified"}


def nspawn_options() -> list[str]:
    """Extra systemd-nspawn arguments for a host that runs Docker.

    runc joins a new session keyring for every container (`keyctl`), and on cgroup2 it limits
    devices with an eBPF program (`bpf`); nspawn's default filter answers both with EPERM:
    "unable to join session keyring: ... operation not permitted" and "bpf_prog_query
    (BPF_CGROUP_DEVICE) failed: operation not permitted". nspawn adds repeated filters up.
    No extra capability is needed; CAP_SYS_RESOURCE would be, for `--ulimit memlock=-1`, but
    this machine's own bounding set lacks it, so nspawn cannot grant it (see lab/docker.md).
    """
    return ["--system-call-filter=@keyring", "--system-call-filter=bpf"]


def nspawn_env() -> dict[str, str]:
    """Environment for systemd-nspawn on a host that runs Docker.

    UNIFIED_HIERARCHY=1: the host sees only cgroup2, mounted writable at its own cgroup, where
    Docker (systemd driver) creates its containers' scopes; the default hybrid view has every
    v1 controller read-only ("mkdir /sys/fs/cgroup/cpuset/docker: read-only file system").
    API_VFS_WRITABLE=network (what every lab host already gets): Docker's default bridge
    writes net.ipv4.ip_forward; with /proc/sys read-only dockerd does not start.
    """
    return {"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1", "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network"}


def daemon_json() -> dict:
    """What the lab host's /etc/docker/daemon.json holds before the deploy runs.

    Networking needs nothing: each host has its own network namespace, so the default bridge
    and iptables work and `-p 127.0.0.1:PORT:PORT` publishes as in production. overlay2 is
    already Docker's choice on the hosts' ext4; pinning it makes a backing filesystem it cannot
    use fail at dockerd's start instead of falling back to vfs (a full copy per container). It
    also gives the deploy an operator key that its daemon.json merge must keep.
    """
    return {"storage-driver": "overlay2"}


def cgroup_name(host: str) -> str:
    """The lab host's cgroup, named with the lab prefix so teardown can find what a run left."""
    return f"{PREFIX}-{host}"


def cgroup_dirs(host: str, proc_cgroup: str, root: Path = CGROUP_ROOT) -> list[Path]:
    """The host's cgroup in each payload hierarchy: a child of the caller's own cgroup there."""
    dirs = []
    for line in proc_cgroup.splitlines():
        _, hierarchy, path = line.split(":", 2)
        folder = HIERARCHIES.get(hierarchy)
        if folder is not None and (root / folder).is_dir():
            dirs.append(root / folder / path.lstrip("/") / cgroup_name(host))
    return dirs


def join_cgroups(host: str, root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> None:
    """Move the calling process (the host's supervisor) into the host's own cgroups.

    Call it before the first boot: nspawn and its payload inherit the cgroup, and each host's
    systemd then manages a tree of its own.
    """
    for path in cgroup_dirs(host, proc_cgroup.read_text(), root):
        path.mkdir(exist_ok=True)
        (path / "cgroup.procs").write_text(f"{os.getpid()}\n")


def remove_cgroups(host: str, root: Path = CGROUP_ROOT) -> list[Path]:
    """Remove the host's cgroups that a stopped run left (deepest first); return them.

    Only empty cgroups can go: one that still holds a process is left as it is.
    """
    removed = []
    for folder in HIERARCHIES.values():
        for top in (root / folder).glob(f"**/{cgroup_name(host)}"):
            for path in sorted((p for p in top.rglob("*") if p.is_dir()), reverse=True):
                _rmdir(path, removed)
            _rmdir(top, removed)
    return removed


def _rmdir(path: Path, removed: list[Path]) -> None:
    try:
        path.rmdir()
    except OSError:
        return
    removed.append(path)


def cpu_seconds(host: str, root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float:
    """CPU time the host's processes have used so far (its cgroup2 `cpu.stat`), in seconds;
    0.0 where this machine shows no such file (the bench then reports no host CPU)."""
    for path in cgroup_dirs(host, proc_cgroup.read_text(), root):
        try:
            text = (path / "cpu.stat").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return int(value) / 1e6
    return 0.0
