"""A throwaway PostgreSQL cluster from Debian's package, on 127.0.0.1 and a free port.

initdb and pg_ctl refuse to run as root, so as root they run as the `postgres` user the
package creates, in a folder of its own under /tmp (pytest's own folders are 0700 root).
Connections over TCP need the password (scram-sha-256), as Label Studio's will in
production; the test's own administration goes through the cluster's Unix socket.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.gpu.triton_smoke import free_ports


def bindir() -> Path:
    """The newest installed server's bin folder; a missing package fails, never skips."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4])
    )
    if not found:
        raise AssertionError(
            "PostgreSQL server is not installed: apt-get install -y postgresql (Debian's package)"
        )
    return Path(found[-1]).parent


@dataclass
class Cluster:
    bindir: Path
    folder: Path
    port: int
    user: str | None  # run the tools as this user (root cannot)

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bindir / tool), *args]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(
            command, cwd=self.folder, capture_output=True, text=True, check=check, timeout=120
        )

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run one statement as the superuser over the socket; its unaligned output."""
        return self.run(
            "psql", "-h", str(self.folder), "-p", str(self.port), "-U", "postgres",
            "-d", database, "-v", "ON_ERROR_STOP=1", "-AtX", "-c", statement,
        ).stdout  # fmt: skip

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.folder}"
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "log"), "-o", options,
                 "-w", "-t", "60", "start")  # fmt: skip

    def stop(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop",
                 check=False)  # fmt: skip

    def create_database(self, name: str, user: str, password: str) -> None:
        quoted = password.replace("'", "''")
        self.sql(f"CREATE ROLE \"{user}\" LOGIN PASSWORD '{quoted}'")
        self.sql(f'CREATE DATABASE "{name}" OWNER "{user}"')


def start_cluster() -> Cluster:
    folder = Path(tempfile.mkdtemp(prefix="oceanid-postgres-"))
    user = None
    if os.geteuid() == 0:
        user = "postgres"
        entry = pwd.getpwnam(user)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    (port,) = free_ports(1)
    cluster = Cluster(bindir(), folder, port, user)
    cluster.run("initdb", "-D", str(cluster.data), "-U", "postgres", "--auth-local=trust",
                "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync")  # fmt: skip
    cluster.start()
    return cluster


def remove(cluster: Cluster) -> None:
    cluster.stop()
    shutil.rmtree(cluster.folder, ignore_errors=True)
