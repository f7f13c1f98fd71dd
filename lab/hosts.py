"""Boot, wait for, and stop the lab's hosts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from lab import processes
from lab.topology import RUN_DIR, SSH_DIR, LabHost


def record_name(lab_host: LabHost) -> str:
    return f"host-{lab_host.name}"


def boot(lab_host: LabHost) -> int:
    return processes.start(
        record_name(lab_host), [sys.executable, "-m", "lab.supervise", lab_host.name]
    )


def ssh_argv(lab_host: LabHost, *command: str) -> list[str]:
    return [
        "ssh",
        "-F",
        str(SSH_DIR / "config"),
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=3",
        lab_host.name,
        *command,
    ]


def wait_ready(lab_host: LabHost, timeout: float = 60.0) -> None:
    """Wait until sshd answers and systemd has finished booting."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((lab_host.address, 22), timeout=1) as sock:
                if sock.recv(16).startswith(b"SSH-"):
                    break
        except OSError:
            time.sleep(0.2)
    else:
        raise TimeoutError(f"{lab_host.name}: sshd did not answer within {timeout:.0f}s")
    # sshd answers before boot is over; until systemd-user-sessions has run, pam_nologin
    # turns away every user but root (calypso's oceanid), so ask again until the deadline.
    state, reason = "", ""
    while time.monotonic() < deadline:
        done = subprocess.run(
            ssh_argv(lab_host, "systemctl", "is-system-running", "--wait"),
            capture_output=True,
            text=True,
            timeout=max(5.0, deadline - time.monotonic()),
            check=False,
        )
        state, reason = done.stdout.strip(), done.stderr.strip()
        if state in ("running", "degraded"):
            return
        if state:  # systemd answered: starting, maintenance, stopping…: not a boot to wait on
            break
        time.sleep(0.5)
    raise RuntimeError(f"{lab_host.name}: systemd is {state or 'unreachable'}: {reason}")


def stop(lab_hosts: list[LabHost], timeout: float = 10.0) -> list[str]:
    """Halt the containers together; kill a PID 1 whose halt hangs. Returns the names stopped.

    Containers are found by their root filesystem under .lab/hosts, not only through the
    supervisors' records, so a host booted by a run that was killed before it wrote the
    record is halted too; a host not in `lab_hosts` is left running.
    """
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    for lab_host in lab_hosts:
        (RUN_DIR / f"{lab_host.name}.stop").touch()  # no supervisor boots its host again
    owned = processes.lab_owned()
    stopped, inits = [], []
    roots = {f"--directory={lab_host.rootfs}" for lab_host in lab_hosts}
    for pid in owned:
        argv = processes.cmdline(pid) or [""]
        if argv[0].endswith("systemd-nspawn") and roots.intersection(argv):
            stopped += [a.split("=", 1)[1] for a in argv if a.startswith("--machine=")]
            inits += processes.children(pid)
            os.kill(pid, signal.SIGTERM)  # nspawn asks the container's systemd to halt
    for pid in processes.wait_gone(inits, timeout):
        os.kill(pid, signal.SIGKILL)
    processes.wait_gone(inits, 5.0)
    for lab_host in lab_hosts:
        processes.stop(record_name(lab_host), timeout=5.0)
    names = {lab_host.name for lab_host in lab_hosts}
    supervisors = [
        p
        for p in processes.lab_owned()
        if "lab.supervise" in (argv := processes.cmdline(p) or []) and argv[-1] in names
    ]
    processes.terminate(supervisors)
    for lab_host in lab_hosts:
        (RUN_DIR / f"{lab_host.name}.stop").unlink(missing_ok=True)
    return sorted(stopped)
