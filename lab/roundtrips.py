"""Round trips counted from the lab hosts' side: what each host's sshd logged.

Every lab host's sshd logs at VERBOSE (lab/rootfs.py), which adds one line per command a
connection runs ("Starting session: command for root from 10.77.0.1 port 41234 id 0") beside
the line for each accepted login. Counting those lines between two journal cursors gives
the connections and remote commands a pyinfra run cost each host, whatever our own code
believes it sent. The connection that reads the journal is itself the last one logged; it
is left out.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from lab.hosts import ssh_argv
from lab.topology import HOSTS, LabHost

ACCEPTED = re.compile(r"^Accepted \S+ for \S+ from \S+ port (\d+) ")
SESSION = re.compile(r"^Starting session: (.+?) for \S+ from \S+ port (\d+) id \d+")


@dataclass(frozen=True)
class Count:
    connections: int
    commands: int

    def __str__(self) -> str:
        return f"{self.connections} connection(s), {self.commands} command(s)"


def _journal(lab_host: LabHost, *args: str) -> str:
    sudo = [] if lab_host.ssh_user == "root" else ["sudo", "-n"]
    done = subprocess.run(
        ssh_argv(lab_host, *sudo, "journalctl", "-t", "sshd", "-o", "cat", *args),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def cursors(hosts: tuple[LabHost, ...] = HOSTS) -> dict[str, str]:
    """Each host's journal position now: count from here."""

    def one(lab_host: LabHost) -> str:
        out = _journal(lab_host, "-n0", "--show-cursor")
        return out.strip().rpartition("-- cursor: ")[2]

    with ThreadPoolExecutor(len(hosts)) as pool:
        return dict(zip((h.name for h in hosts), pool.map(one, hosts), strict=True))


def parse(lines: list[str]) -> Count:
    """Connections and commands in sshd's log lines, less the last connection (the reader's)."""
    ports: list[str] = []
    commands: dict[str, int] = {}
    for line in lines:
        if match := ACCEPTED.match(line):
            ports.append(match.group(1))
        elif match := SESSION.match(line):
            commands[match.group(2)] = commands.get(match.group(2), 0) + 1
    counted = ports[:-1]
    return Count(len(counted), sum(commands.get(port, 0) for port in counted))


def since(marks: dict[str, str], hosts: tuple[LabHost, ...] = HOSTS) -> dict[str, Count]:
    """What each host received after `cursors()` returned `marks`."""

    def one(lab_host: LabHost) -> Count:
        cursor = shlex.quote(f"--after-cursor={marks[lab_host.name]}")  # ssh runs it in a shell
        return parse(_journal(lab_host, cursor).splitlines())

    with ThreadPoolExecutor(len(hosts)) as pool:
        return dict(zip((h.name for h in hosts), pool.map(one, hosts), strict=True))
