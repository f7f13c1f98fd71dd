"""Run one lab host as a systemd-nspawn container, and boot it again when it reboots.

Each boot gets a fresh time namespace whose boot clock starts near zero, so `uptime`
restarts the way it does on a real machine and pyinfra's `server.reboot` can tell the
host came back. nspawn exits 133 when the container asks for a reboot; anything else,
or the stop flag that `lab down` writes, ends the loop.

Usage: python -m lab.supervise HOSTNAME
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lab import docker_host
from lab.topology import RUN_DIR, host

REBOOT_EXIT = 133


def nspawn_argv(name: str) -> list[str]:
    lab_host = host(name)
    uptime = int(float(Path("/proc/uptime").read_text().split()[0]))
    return [
        "unshare",
        "--time",
        "--fork",
        f"--boottime=-{uptime}",
        "systemd-nspawn",
        f"--directory={lab_host.rootfs}",
        f"--machine={name}",
        "--boot",
        "--register=no",
        "--keep-unit",
        f"--network-namespace-path=/run/netns/{lab_host.netns}",
        "--capability=CAP_NET_ADMIN",
        "--console=passive",
        "--link-journal=no",
        "--resolv-conf=off",
        "--timezone=off",
        *(docker_host.nspawn_options() if lab_host.docker else []),
    ]


def main(name: str) -> int:
    stop_flag = RUN_DIR / f"{name}.stop"
    stop_flag.unlink(missing_ok=True)
    env = {**os.environ, "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network"}
    if host(name).docker:
        env.update(docker_host.nspawn_env())
    docker_host.join_cgroups(name)  # a cgroup tree of the host's own (lab/docker.md, Traps)
    while True:
        rc = subprocess.call(nspawn_argv(name), env=env)
        if rc != REBOOT_EXIT or stop_flag.exists():
            return rc
        print(f"lab: {name} rebooted; booting it again", flush=True)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
