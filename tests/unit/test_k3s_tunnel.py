"""scripts/k3s-ssh-tunnel.sh against a real OpenSSH server on 127.0.0.1 (its own keys and config).

The "API" behind the tunnel is a TCP listener in the test standing in for k3s's 6443; what the
tests check is SSH's part: the forward, the control socket, the second open, the close.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "k3s-ssh-tunnel.sh"
SSHD = "/usr/sbin/sshd"
GREETING = b"k3s API stand-in\n"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_port(port: int, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@dataclass
class Tunnel:
    env: dict[str, str]
    local_port: int
    control_dir: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPT), *args, "127.0.0.1"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A real sshd on a free 127.0.0.1 port that lets this user in with a key of the test's own."""
    assert os.path.exists(SSHD), "these tests need OpenSSH's server: apt-get install openssh-server"
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    for name in ("host", "client"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True
        )
    shutil.copy(keys / "client.pub", keys / "authorized_keys")
    port = _free_port()
    config = tmp_path / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {keys / 'host'}\n"
        f"AuthorizedKeysFile {keys / 'authorized_keys'}\nPidFile {tmp_path / 'sshd.pid'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "PermitRootLogin prohibit-password\nStrictModes no\nAllowTcpForwarding local\n"
    )
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # its privilege separation directory
    server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)
    try:
        _wait_for_port(port)
        ssh = (
            f"ssh -F /dev/null -p {port} -i {keys / 'client'} -o IdentitiesOnly=yes "
            f"-o BatchMode=yes -o UserKnownHostsFile={keys / 'known_hosts'} "
            "-o StrictHostKeyChecking=accept-new"
        )
        yield ssh, port
    finally:
        # The sessions outlive their listener: end them too (the listener's children, by PID),
        # which also ends any ssh client a failed test left connected.
        children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
        server.terminate()
        server.wait(timeout=10)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGTERM)


@pytest.fixture
def api() -> Iterator[int]:
    """A listener for the remote end: every connection gets GREETING."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(GREETING)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port
    stop.set()
    thread.join()
    listener.close()


@pytest.fixture
def tunnel(sshd: tuple[str, int], api: int) -> Iterator[Tunnel]:
    ssh, _ = sshd
    local_port = _free_port()
    # A socket path has at most 107 bytes and ssh adds a 17-byte suffix while it binds: pytest's
    # tmp_path is too deep for it.
    control = Path(tempfile.mkdtemp(prefix="k3st-", dir="/tmp")) / "control"
    env = {
        **os.environ,
        "SSH": ssh,
        "LOCAL_PORT": str(local_port),
        "REMOTE_PORT": str(api),
        "CONTROL_DIR": str(control),
    }
    result = Tunnel(env, local_port, control)
    yield result
    result.run("--close")  # a failed test must not leave its ssh master running
    shutil.rmtree(control.parent)


def _through(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        return conn.recv(100)


def test_opens_in_the_background_and_forwards(tunnel: Tunnel) -> None:
    opened = tunnel.run()
    assert opened.returncode == 0, opened.stderr
    assert f"open: https://127.0.0.1:{tunnel.local_port}" in opened.stdout
    assert _through(tunnel.local_port) == GREETING
    assert tunnel.run("--check").returncode == 0


def test_a_second_open_says_it_is_open_and_keeps_the_first(tunnel: Tunnel) -> None:
    assert tunnel.run().returncode == 0
    again = tunnel.run()
    assert again.returncode == 0
    assert "already open" in again.stdout
    assert _through(tunnel.local_port) == GREETING


def test_close_ends_the_master_through_its_socket(tunnel: Tunnel) -> None:
    assert tunnel.run().returncode == 0
    closed = tunnel.run("--close")
    assert closed.returncode == 0 and "closed" in closed.stdout
    assert tunnel.run("--check").returncode != 0
    deadline = time.monotonic() + 5
    while True:  # the master exits after answering; the port is then free again
        try:
            _through(tunnel.local_port)
        except OSError:
            break
        assert time.monotonic() < deadline, "the forward outlived the close"
        time.sleep(0.05)
    assert tunnel.run("--close").stdout.strip().endswith("is not open")


def test_a_busy_local_port_fails_and_leaves_no_master(tunnel: Tunnel) -> None:
    with socket.create_server(("127.0.0.1", tunnel.local_port)):
        opened = tunnel.run()
    assert opened.returncode == 1
    assert f"127.0.0.1:{tunnel.local_port} already in use" in opened.stderr
    assert tunnel.run("--check").returncode != 0


def test_a_stale_socket_does_not_stop_a_new_master(tunnel: Tunnel) -> None:
    """A master that died leaves its socket; ssh would then run without one, unclosable."""
    tunnel.control_dir.mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tunnel.control_dir / f"oceanid-k3s-127.0.0.1-{tunnel.local_port}.sock"))
    stale.close()
    assert tunnel.run().returncode == 0
    assert tunnel.run("--check").returncode == 0
    assert tunnel.run("--close").returncode == 0
    assert tunnel.run("--check").returncode != 0


@pytest.mark.parametrize(("name", "value"), [("LOCAL_PORT", "16443x"), ("REMOTE_PORT", "70000")])
def test_a_bad_port_is_one_line(tunnel: Tunnel, name: str, value: str) -> None:
    tunnel.env[name] = value
    result = tunnel.run()
    assert result.returncode == 2
    assert result.stderr == (
        f"k3s tunnel: port '{value}' is not a TCP port; set LOCAL_PORT/REMOTE_PORT to 1-65535\n"
    )


def test_make_tunnel_reaches_the_server_as_the_inventory_says(tunnel: Tunnel, tmp_path) -> None:
    """`make tunnel INVENTORY=...` as operators run it: the ssh command carries no host, port,
    user or key; tethys's ssh_hostname, ssh_port, ssh_user, ssh_key and known_hosts come from
    the inventory alone, as pyinfra reads them (HOST defaults to tethys)."""
    keys = tmp_path / "keys"  # the sshd fixture's
    port = tunnel.env["SSH"].split(" -p ")[1].split()[0]
    login = {
        "ssh_hostname": "127.0.0.1",
        "ssh_port": int(port),
        "ssh_user": getpass.getuser(),
        "ssh_key": str(keys / "client"),
        "ssh_known_hosts_file": str(keys / "inventory_known_hosts"),
        "ssh_strict_host_key_checking": "accept-new",
    }
    inventory = tmp_path / "inventory.py"
    inventory.write_text(f"k3s_servers = [('tethys', {login!r})]\n")
    tunnel.env["SSH"] = "ssh -F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes"

    def make(target: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["make", "-s", "-C", str(SCRIPT.parents[1]), target, f"INVENTORY={inventory}", *args],
            env=tunnel.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    opened = make("tunnel")
    assert opened.returncode == 0, opened.stderr
    assert "k3s tunnel to tethys open" in opened.stdout
    assert "already open" in make("tunnel").stdout
    assert _through(tunnel.local_port) == GREETING
    assert "closed" in make("tunnel-close").stdout
    assert tunnel.run("--check").returncode != 0
    # without the inventory, the same ssh command cannot know where tethys is
    assert make("tunnel", "INVENTORY=inventory.py", "HOST=nowhere").returncode != 0


def test_a_host_the_inventory_lacks_is_refused_before_ssh_runs(tunnel: Tunnel) -> None:
    tunnel.env.update(INVENTORY="inventory.py", SSH="false")
    result = subprocess.run(
        [str(SCRIPT), "thetys"], env=tunnel.env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert result.stderr.startswith("ssh target: no host 'thetys' in ")
    assert "inventory.py (its hosts: tethys, styx, calypso)" in result.stderr
