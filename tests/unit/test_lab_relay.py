"""lab/relay.py on real sockets on 127.0.0.1: the latency it adds, that it does not limit
throughput, the bytes and the half-close it carries, its command line, and the SSH config it
writes, checked with OpenSSH and pyinfra's own SSH client against a real sshd.

Timing bounds leave hundreds of milliseconds of margin for a loaded two-core machine; an upper
bound is only as tight as it must be to tell a pipelined relay from a serialized one.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyinfra.connectors.sshuserclient import SSHClient

from lab import relay
from tests.unit import test_k3s_tunnel

REPO = Path(__file__).resolve().parents[2]
TRAILER = b"EOF-SEEN"
MARGIN = 0.5

sshd = test_k3s_tunnel.sshd  # a real sshd on 127.0.0.1, its keys under tmp_path/keys


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    """An echo server: sends back what it reads; at the client's EOF it sends TRAILER, then
    its own EOF, so a test sees data flowing after its half-close."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def handle(conn: socket.socket) -> None:
        # A test that closes without reading the echo resets the connection: not an error here.
        with conn, contextlib.suppress(OSError):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while data := conn.recv(65536):
                conn.sendall(data)
            conn.sendall(TRAILER)
            conn.shutdown(socket.SHUT_WR)

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()
    stop.set()
    thread.join()
    listener.close()


def _connect(port: int) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", port), timeout=30)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        assert chunk, f"EOF after {len(data)} of {size} bytes"
        data += chunk
    return data


def _round_trips(port: int, count: int) -> float:
    with _connect(port) as conn:
        started = time.monotonic()
        for _ in range(count):
            conn.sendall(b"ping")
            assert _recv_exactly(conn, 4) == b"ping"
        return time.monotonic() - started


def test_each_round_trip_costs_the_delay(echo: tuple[str, int]) -> None:
    with relay.running({"echo": echo}, 0.1) as ports:
        seconds = _round_trips(ports["echo"], 5)
    assert 0.5 <= seconds < 0.5 + MARGIN


def test_no_delay_adds_nothing_noticeable(echo: tuple[str, int]) -> None:
    with relay.running({"echo": echo}, 0.0) as ports:
        seconds = _round_trips(ports["echo"], 5)
    assert seconds < 0.25  # five round trips at even 50 ms would take 0.25 s


def test_a_stream_is_pipelined_not_serialized(echo: tuple[str, int]) -> None:
    """50 chunks 10 ms apart through a 100 ms relay: the last echo is back ~100 ms after the
    last chunk went out. A relay holding each chunk in turn would need 50 x 50 ms each way,
    about 2 s more than the sending takes."""
    chunk = b"c" * 1000
    with relay.running({"echo": echo}, 0.1) as ports, _connect(ports["echo"]) as conn:
        received = bytearray()
        first_back = []

        def read() -> None:
            while len(received) < 50 * len(chunk):
                data = conn.recv(65536)
                assert data
                if not received:
                    first_back.append(time.monotonic())
                received.extend(data)

        reader = threading.Thread(target=read)
        reader.start()
        started = time.monotonic()
        for _ in range(50):
            conn.sendall(chunk)
            time.sleep(0.01)
        sent = time.monotonic()
        reader.join(timeout=30)
        all_back = time.monotonic()
    assert bytes(received) == chunk * 50
    assert first_back[0] - started >= 0.1
    assert all_back - sent < 0.1 + 1.0


def test_bytes_arrive_intact_in_order_and_after_a_half_close(echo: tuple[str, int]) -> None:
    payload = os.urandom(4 * 1024 * 1024)
    with relay.running({"echo": echo}, 0.02) as ports, _connect(ports["echo"]) as conn:

        def send() -> None:
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)  # the client is done writing; it still reads

        sender = threading.Thread(target=send)
        sender.start()
        received = bytearray()
        while data := conn.recv(1 << 20):
            received.extend(data)
        sender.join()
    # The echo server saw the EOF only after all the data, and its answer to it came back.
    assert bytes(received) == payload + TRAILER


def test_a_closed_relay_refuses_connections(echo: tuple[str, int]) -> None:
    with relay.running({"echo": echo}, 0.0) as ports:
        pass
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", ports["echo"]), timeout=5)


def _ended(conn: socket.socket) -> bool:
    """Whether the peer closed or reset `conn` (rather than leaving it open)."""
    conn.settimeout(10)
    try:
        return conn.recv(1) == b""
    except ConnectionResetError:
        return True


def test_closing_the_relays_ends_the_connections_they_carry(echo: tuple[str, int]) -> None:
    with relay.running({"echo": echo}, 0.0) as ports:
        conn = _connect(ports["echo"])
        assert _round_trips(ports["echo"], 1) < MARGIN
    with conn:
        assert _ended(conn)


def test_an_unreachable_target_ends_the_client_connection() -> None:
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    with (
        relay.running({"gone": ("127.0.0.1", port)}, 0.0) as ports,
        _connect(ports["gone"]) as conn,
    ):
        assert _ended(conn)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_command_line_prints_ports_relays_and_ends_on_a_signal(
    echo: tuple[str, int], signum: int
) -> None:
    host, port = echo
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab.relay", "--delay", "100ms", f"a={host}:{port}", "b=x:1"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = [proc.stdout.readline().split() for _ in range(2)]
        assert [name for name, _ in lines] == ["a", "b"]
        ports = {name: int(address.removeprefix("127.0.0.1:")) for name, address in lines}
        assert 0.1 <= _round_trips(ports["a"], 1) < 0.1 + MARGIN
        proc.send_signal(signum)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()
    assert "Traceback" not in proc.stderr.read()
    for listening in ports.values():
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", listening), timeout=5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--delay", "fast", "a=h:22"], "delay 'fast': not a duration"),
        (["--delay", "50ms", "tethys"], "'tethys': expected NAME=HOST:PORT"),
        (["--delay", "50ms", "a=h:22", "a=h:23"], "each relay NAME may be given once"),
    ],
)
def test_command_line_errors_are_one_line(args: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lab.relay", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_a_busy_port_is_named() -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with (
            pytest.raises(OSError, match=f"relay a: cannot listen on 127.0.0.1:{port}"),
            relay.running({"a": ("127.0.0.1", 1)}, 0, listen={"a": port}),
        ):
            pass


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0.0), ("50ms", 0.05), ("0.1s", 0.1), ("100", 0.1), (" 2s ", 2.0), ("1.5ms", 0.0015)],
)
def test_parse_delay(text: str, seconds: float) -> None:
    assert relay.parse_delay(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "-50ms", "50 ms", "50us", "1e3", "nan", "inf"])
def test_parse_delay_rejects_garbage_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match=f"delay {text!r}: not a duration"):
        relay.parse_delay(text)


LAB_CONFIG = """\
Host tethys
    HostName 10.77.0.11
    User root
    IdentityFile /work/main/.lab/ssh/id_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile /work/main/.lab/ssh/known_hosts
    StrictHostKeyChecking yes

Host styx
    HostName 10.77.0.12
    User root
    IdentityFile /work/main/.lab/ssh/id_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile /work/main/.lab/ssh/known_hosts
    StrictHostKeyChecking yes
"""


def test_ssh_config_sends_each_host_to_its_relay_and_keeps_the_rest() -> None:
    rewritten = relay.ssh_config(LAB_CONFIG, {"tethys": 40001}, "/tmp/relay/known_hosts")
    assert (
        rewritten
        == """\
Host tethys
    HostName 127.0.0.1
    Port 40001
    HostKeyAlias tethys
    UserKnownHostsFile /tmp/relay/known_hosts
    User root
    IdentityFile /work/main/.lab/ssh/id_ed25519
    IdentitiesOnly yes
    StrictHostKeyChecking yes

Host styx
    HostName 10.77.0.12
    User root
    IdentityFile /work/main/.lab/ssh/id_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile /work/main/.lab/ssh/known_hosts
    StrictHostKeyChecking yes
"""
    )


def test_ssh_config_replaces_options_it_sets_in_either_syntax() -> None:
    original = "Host a\n  Port=2222\n  HostName=h\n  # Port 1 (a comment stays)\n  User u\n"
    rewritten = relay.ssh_config(original, {"a": 5}, "kh")
    assert rewritten.splitlines() == [
        "Host a",
        "    HostName 127.0.0.1",
        "    Port 5",
        "    HostKeyAlias a",
        "    UserKnownHostsFile kh",
        "  # Port 1 (a comment stays)",
        "  User u",
    ]


@pytest.mark.parametrize(
    ("ports", "message"),
    [
        ({"calypso": 1}, "no `Host` block for calypso"),
        ({"a": 1}, "'Host a b': relay only a single-name Host"),
    ],
)
def test_ssh_config_errors(ports: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        relay.ssh_config(LAB_CONFIG + "\nHost a b\n    User x\n", ports, "kh")


def test_known_hosts_adds_the_relay_address_to_each_relayed_host() -> None:
    original = "tethys,10.77.0.11 ssh-ed25519 AAAAT\nstyx,10.77.0.12 ssh-ed25519 AAAAS\n"
    assert relay.known_hosts(original, {"styx": 40002}) == (
        "tethys,10.77.0.11 ssh-ed25519 AAAAT\nstyx,10.77.0.12,[127.0.0.1]:40002 ssh-ed25519 AAAAS\n"
    )
    with pytest.raises(ValueError, match="no key listed under the name calypso"):
        relay.known_hosts(original, {"calypso": 1})


def _lab_like_ssh_files(tmp_path: Path, relay_port: int) -> Path:
    """The lab's SSH config and known_hosts, in the lab's format, for one host `tethys` whose
    sshd is the test's; rewritten for its relay. Returns the rewritten config."""
    keys = tmp_path / "keys"
    host_key = " ".join((keys / "host.pub").read_text().split()[:2])
    original_known = tmp_path / "known_hosts"
    original_known.write_text(f"tethys,10.77.0.11 {host_key}\n")
    original = (
        f"Host tethys\n    HostName 10.77.0.11\n    User {getpass.getuser()}\n"
        f"    IdentityFile {keys / 'client'}\n    IdentitiesOnly yes\n"
        f"    UserKnownHostsFile {original_known}\n    StrictHostKeyChecking yes\n"
    )
    relay_known = tmp_path / "relay_known_hosts"
    relay_known.write_text(relay.known_hosts(original_known.read_text(), {"tethys": relay_port}))
    config = tmp_path / "relay_config"
    config.write_text(relay.ssh_config(original, {"tethys": relay_port}, str(relay_known)))
    return config


def test_openssh_logs_in_through_the_relay_with_the_host_key_checked(
    sshd: tuple[str, int], tmp_path: Path
) -> None:
    """OpenSSH finds the key under HostKeyAlias: the lab's own known_hosts is enough for it."""
    _, sshd_port = sshd
    with relay.running({"tethys": ("127.0.0.1", sshd_port)}, 0.02) as ports:
        config = _lab_like_ssh_files(tmp_path, ports["tethys"])
        done = subprocess.run(
            ["ssh", "-F", str(config), "-o", "BatchMode=yes", "-o"]
            + [f"UserKnownHostsFile={tmp_path / 'known_hosts'}", "tethys", "echo", "through"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "through\n"


def test_pyinfra_logs_in_through_the_relay_with_the_host_key_checked(
    sshd: tuple[str, int], tmp_path: Path
) -> None:
    """pyinfra's client (paramiko) ignores HostKeyAlias: it finds the key by the relay's
    address, which known_hosts() adds; strict checking fails the connect otherwise."""
    _, sshd_port = sshd
    with relay.running({"tethys": ("127.0.0.1", sshd_port)}, 0.02) as ports:
        config = _lab_like_ssh_files(tmp_path, ports["tethys"])
        client = SSHClient()
        client.connect("tethys", _pyinfra_ssh_config_file=str(config), timeout=30)
        try:
            _, stdout, _ = client.exec_command("echo through")
            assert stdout.read() == b"through\n"
            assert stdout.channel.recv_exit_status() == 0
        finally:
            client.close()


def test_describe_says_what_is_delayed_and_what_is_not() -> None:
    line = relay.describe(0.05)
    assert "50 ms per round trip" in line and "25 ms each way" in line
    assert "not delayed: the TCP handshake and the relay's connect to sshd" in line
