"""
The cloudflared stand-in as systemd runs it, and the real program's flag rules.

The rules come from cloudflared 2025.8.1's source (cmd/cloudflared/tunnel/cmd.go,
subcommands.go, its vendored urfave/cli v2): `--token` and `--token-file` are flags of
`tunnel run` only, and Go's flag parsing stops at the first word that is not a flag, so a
flag before its command's name is "not defined". A parse error prints "Incorrect Usage" and
exits 0 (cloudflare/cloudflared#1606); a `Type=notify` unit then fails for lack of READY=1.
A token (`--token`, $TUNNEL_TOKEN, `token:`) wins over `--token-file`, and any token over a
credentials file; a config key is a flag's primary name (`cred-file:` is not read).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.standins.test_standins import (
    CLOUDFLARED,
    TOKEN,
    TUNNEL_ID,
    assert_no_secret,
    get,
    run,
    started,
    write_cloudflared_config,
)


@contextmanager
def notify_socket(abstract: bool = False) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound as systemd binds $NOTIFY_SOCKET, and the value to pass."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    folder = None
    try:
        if abstract:
            name = f"oceanid-notify-{os.getpid()}-{id(sock)}"
            sock.bind("\0" + name)
            address = "@" + name
        else:  # a short path: AF_UNIX paths stop at 107 bytes, pytest's tmp_path can be longer
            folder = tempfile.mkdtemp(prefix="notify-")
            address = os.path.join(folder, "notify")
            sock.bind(address)
        yield sock, address
    finally:
        sock.close()
        if folder:
            shutil.rmtree(folder, ignore_errors=True)


def received(sock: socket.socket, timeout: float) -> bytes | None:
    sock.settimeout(timeout)
    try:
        return sock.recv(4096)
    except TimeoutError:
        return None


def metrics_address(cfd) -> str:
    return cfd.wait_for(r"Starting metrics server on (127\.0\.0\.1:\d+)/metrics").group(1)


# ---- READY=1 through $NOTIFY_SOCKET, once connected


def test_ready_is_sent_only_once_the_first_edge_connection_is_up(tmp_path: Path) -> None:
    config = write_cloudflared_config(tmp_path)
    pidfile = tmp_path / "cloudflared.pid"
    with notify_socket() as (sock, address):
        env = {"NOTIFY_SOCKET": address, "CLOUDFLARED_STANDIN_CONNECT_DELAY": "2"}
        args = ["--config", str(config), "--pidfile", str(pidfile), "tunnel", "run"]
        with started(CLOUDFLARED, *args, env=env) as cfd:
            metrics = metrics_address(cfd)
            status, body = get(f"http://{metrics}/ready")
            assert (status, json.loads(body)["readyConnections"]) == (503, 0)
            assert received(sock, 0.3) is None  # not connected: not ready
            assert not pidfile.exists()  # the real one writes it once connected, too

            assert received(sock, 10) == b"READY=1"
            status, body = get(f"http://{metrics}/ready")
            assert status == 200 and json.loads(body)["readyConnections"] >= 1
            cfd.wait_for(r"Registered tunnel connection connIndex=0")
            assert pidfile.read_text() == str(cfd.process.pid)
            assert cfd.terminate() == 0
            assert received(sock, 0.2) is None  # READY=1 once, nothing else


def test_no_ready_while_no_edge_connection_comes_up(tmp_path: Path) -> None:
    config = write_cloudflared_config(tmp_path)
    with notify_socket() as (sock, address):
        env = {"NOTIFY_SOCKET": address, "CLOUDFLARED_STANDIN_CONNECTIONS": "0"}
        with started(CLOUDFLARED, "tunnel", "--config", str(config), "run", env=env) as cfd:
            cfd.wait_for(r"no edge connection")
            assert received(sock, 1.5) is None
            assert cfd.process.poll() is None  # still trying, as the real one does
            assert cfd.terminate() == 0


def test_ready_reaches_an_abstract_notify_socket(tmp_path: Path) -> None:
    config = write_cloudflared_config(tmp_path)
    with (
        notify_socket(abstract=True) as (sock, address),
        started(
            CLOUDFLARED, "tunnel", "--config", str(config), "run", env={"NOTIFY_SOCKET": address}
        ) as cfd,
    ):
        assert received(sock, 10) == b"READY=1"
        assert cfd.terminate() == 0


# ---- where each flag may stand


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (["--token-file", "{token}", "tunnel", "run"], "Incorrect Usage. {undefined}: -token-file"),
        (["tunnel", "--token-file", "{token}", "run"], "Incorrect Usage. {undefined}: -token-file"),
        (["tunnel", "--token", TOKEN, "run"], "Incorrect Usage. {undefined}: -token"),
        (["tunnel", "run", "--config", "{config}"], "Incorrect Usage: {undefined}: -config"),
        (["tunnel", "run", "--metrics", "127.0.0.1:0"], "Incorrect Usage: {undefined}: -metrics"),
    ],
    ids=[
        "token-file before tunnel",
        "token-file before run",
        "token before run",
        "config after run",
        "metrics after run",
    ],
)
def test_a_flag_outside_its_command_is_not_defined(
    tmp_path: Path, where: list[str], message: str
) -> None:
    config = write_cloudflared_config(tmp_path, tunnel=None, **{"credentials-file": None})
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    args = [arg.format(token=token, config=config) for arg in where]
    done = run(CLOUDFLARED, *args, env={"HOME": str(tmp_path)})
    assert done.returncode == 0  # the real exit status of a usage error
    expected = message.format(undefined="flag provided but not defined")
    assert done.stdout.splitlines()[0] == expected
    assert "Starting tunnel" not in done.stderr
    assert_no_secret(done.stdout, done.stderr)


def test_the_deploys_order_of_flags_runs_the_tunnel(tmp_path: Path) -> None:
    """Global flags first, `tunnel run`, then `--token-file`: the unit's ExecStart shape."""
    config = write_cloudflared_config(tmp_path, tunnel=None, **{"credentials-file": None})
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    args = ["--no-autoupdate", "--config", str(config), "tunnel", "run", "--token-file", str(token)]
    with started(CLOUDFLARED, *args) as cfd:
        cfd.wait_for(f"Starting tunnel tunnelID={TUNNEL_ID}")
        cfd.wait_for(r"Registered tunnel connection connIndex=0")
        assert cfd.terminate() == 0
        assert_no_secret(cfd.stderr)


def test_a_flag_after_the_tunnel_argument_is_an_extra_argument(tmp_path: Path) -> None:
    config = write_cloudflared_config(tmp_path)
    done = run(
        CLOUDFLARED, "tunnel", "--config", str(config), "run", TUNNEL_ID, "--protocol", "quic"
    )
    assert done.returncode == 1
    assert '"cloudflared tunnel run" accepts only one argument' in done.stderr


def test_tunnel_without_run_points_at_run(tmp_path: Path) -> None:
    """`cloudflared tunnel` with a config naming a tunnel does not run it (TunnelCommand)."""
    config = write_cloudflared_config(tmp_path)
    done = run(CLOUDFLARED, "--config", str(config), "tunnel")
    assert done.returncode == 1
    assert f"Use `cloudflared tunnel run` to start tunnel {TUNNEL_ID}" in done.stderr


@pytest.mark.parametrize("flag", ["-V", "-v", "--version"])
def test_each_version_flag_prints_the_version(flag: str) -> None:
    done = run(CLOUDFLARED, flag)
    assert done.returncode == 0
    assert done.stdout.startswith("cloudflared version 2025.8.1 (built ")


# ---- which credential wins


def _runs_tunnel(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Start the stand-in, wait for its first edge connection, stop it; its stderr."""
    with started(CLOUDFLARED, *args, env={"HOME": str(tmp_path), **(env or {})}) as cfd:
        cfd.wait_for(r"Registered tunnel connection connIndex=0")
        assert cfd.terminate() == 0
        assert_no_secret(cfd.stderr)
        return cfd.stderr


def test_a_token_wins_over_a_token_file(tmp_path: Path) -> None:
    """The token file is not even read: one that does not exist does not matter."""
    config = write_cloudflared_config(tmp_path, tunnel=None, **{"credentials-file": None})
    absent = str(tmp_path / "no-such-token")
    base = ["tunnel", "--config", str(config), "run", "--token-file", absent]
    assert f"tunnelID={TUNNEL_ID}" in _runs_tunnel(tmp_path, *base, "--token", TOKEN)
    assert f"tunnelID={TUNNEL_ID}" in _runs_tunnel(tmp_path, *base, env={"TUNNEL_TOKEN": TOKEN})

    done = run(CLOUDFLARED, *base, env={"HOME": str(tmp_path)})
    assert done.returncode == 1
    assert f"Failed to read token file: open {absent}: no such file or directory" in done.stderr


def test_any_token_wins_over_a_credentials_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing-credentials.json")
    config = write_cloudflared_config(tmp_path, **{"credentials-file": missing})
    stderr = _runs_tunnel(tmp_path, "tunnel", "--config", str(config), "run", "--token", TOKEN)
    assert f"tunnelID={TUNNEL_ID}" in stderr

    done = run(CLOUDFLARED, "tunnel", "--config", str(config), "run")
    assert done.returncode == 1
    assert f"Tunnel credentials file '{missing}' doesn't exist" in done.stderr


@pytest.mark.parametrize("key", ["token", "token-file"])
def test_token_and_token_file_are_config_keys(tmp_path: Path, key: str) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    value = TOKEN if key == "token" else str(token)
    config = write_cloudflared_config(
        tmp_path, tunnel=None, **{"credentials-file": None, key: value}
    )
    stderr = _runs_tunnel(tmp_path, "tunnel", "--config", str(config), "run")
    assert f"tunnelID={TUNNEL_ID}" in stderr


def test_cred_file_is_read_as_a_flag_but_not_as_a_config_key(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials.json"
    config = write_cloudflared_config(tmp_path, **{"credentials-file": None})
    (tmp_path / "config.yaml").write_text(config.read_text() + f"cred-file: {credentials}\n")
    done = run(CLOUDFLARED, "tunnel", "--config", str(config), "run", env={"HOME": str(tmp_path)})
    assert done.returncode == 1
    assert "tunnel credentials file not found" in done.stderr
    assert "ignores `cred-file` in a config file" in done.stderr

    flag = ["tunnel", "--config", str(config), "run", "--cred-file", str(credentials)]
    assert f"tunnelID={TUNNEL_ID}" in _runs_tunnel(tmp_path, *flag)


# ---- protocol


@pytest.mark.parametrize(
    ("protocol", "used"),
    [("auto", "quic"), ("quic", "quic"), ("http2", "http2"), ("h2mux", "http2")],
)
def test_each_protocol_cloudflared_knows_runs(tmp_path: Path, protocol: str, used: str) -> None:
    config = write_cloudflared_config(tmp_path, protocol=protocol)
    stderr = _runs_tunnel(tmp_path, "tunnel", "--config", str(config), "run")
    assert f"Initial protocol {used}" in stderr
    assert (protocol == "h2mux") == ("h2mux is no longer a supported protocol" in stderr)


@pytest.mark.parametrize("where", ["config", "flag"])
def test_an_unknown_protocol_is_refused(tmp_path: Path, where: str) -> None:
    config = write_cloudflared_config(
        tmp_path, **({"protocol": "websocket"} if where == "config" else {})
    )
    flag = ["--protocol", "websocket"] if where == "flag" else []
    done = run(CLOUDFLARED, "tunnel", "--config", str(config), "run", *flag)
    assert done.returncode == 1
    assert "unknown protocol websocket, Available protocols: 'auto'" in done.stderr
    assert "Registered tunnel connection" not in done.stderr


# ---- ingress matching as cloudflared's ingress/ (FindMatchingRule, matchHost, Rule.Matches)

MATCHING = (
    "\n  - hostname: gpu.boathou.se\n    path: ^/v2/health/ready$\n    service: http://localhost:1"
    "\n  - hostname: gpu.boathou.se\n    path: /models/\n    service: http://localhost:2"
    "\n  - hostname: '*.example.com'\n    service: http://localhost:3"
    "\n  - hostname: bücher.example\n    service: http://localhost:4"
    "\n  - service: http_status:404"
)


@pytest.mark.parametrize(
    ("url", "index", "why"),
    [
        ("https://gpu.boathou.se/v2/health/ready", 0, "anchored path, exact"),
        ("https://gpu.boathou.se:8443/v2/health/ready", 0, "the port is not compared"),
        ("https://gpu.boathou.se/v2/health/ready%0A", 4, "RE2's $ is the end of the text"),
        ("https://gpu.boathou.se/v2/health/readyX", 4, "anchored: nothing after"),
        ("https://gpu.boathou.se/x/v2/models/y", 1, "unanchored: found anywhere in the path"),
        ("https://gpu.boathou.se/v2/%6Dodels/y", 1, "the decoded path is matched"),
        ("https://GPU.boathou.se/v2/health/ready", 4, "hostnames are compared as strings"),
        ("https://a.example.com/", 2, "a `*.` wildcard takes subdomains"),
        ("https://a.b.example.com/", 2, "of any depth"),
        ("https://example.com/", 4, "but not the domain itself"),
        ("https://xn--bcher-kva.example/", 3, "the punycode form of a rule's hostname"),
        ("https://other.boathou.se/v2/health/ready", 4, "no rule: the last one"),
    ],
)
def test_ingress_rule_matches_as_cloudflared(tmp_path: Path, url: str, index: int, why: str):
    config = write_cloudflared_config(tmp_path, ingress=MATCHING)
    done = run(CLOUDFLARED, "tunnel", "--config", str(config), "ingress", "rule", url)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"Using rules from {config}"
    assert lines[1] == f"Matched rule #{index}", why
    assert lines[-1].startswith("\tservice: ")


def test_ingress_rule_prints_the_rule_as_cloudflared(tmp_path: Path) -> None:
    config = write_cloudflared_config(tmp_path, ingress=MATCHING)
    done = run(
        CLOUDFLARED, "tunnel", "--config", str(config), "ingress", "rule",
        "https://gpu.boathou.se/v2/health/ready",
    )  # fmt: skip
    assert done.stdout == (
        f"Using rules from {config}\nMatched rule #0\n\thostname: gpu.boathou.se\n"
        "\tpath: ^/v2/health/ready$\n\tservice: http://localhost:1\n"
    )
    done = run(CLOUDFLARED, "tunnel", "--config", str(config), "ingress", "rule", "gpu.boathou.se")
    assert done.returncode == 1
    assert done.stderr == "gpu.boathou.se doesn't have a hostname, consider adding a scheme\n"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("^/v2(?!/repository)", "Rule #1 has an invalid regex: error parsing regexp: invalid or "
         "unsupported Perl syntax: `(?!`"),
        ("(a)\\1", "Rule #1 has an invalid regex: error parsing regexp: invalid escape sequence"),
        ("[", "Rule #1 has an invalid regex: error parsing regexp:"),
    ],
)  # fmt: skip
def test_ingress_validate_refuses_what_re2_refuses(tmp_path: Path, path: str, message: str):
    rules = f"\n  - hostname: gpu.boathou.se\n    path: '{path}'\n    service: http://localhost:1"
    config = write_cloudflared_config(tmp_path, ingress=rules + "\n  - service: http_status:404")
    done = run(CLOUDFLARED, "tunnel", "--config", str(config), "ingress", "validate")
    assert done.returncode == 1
    assert done.stdout == f"Validating rules from {config}\n"
    assert done.stderr.startswith(f"Validation failed: {message}")


def test_ingress_validate_reads_json(tmp_path: Path) -> None:
    rules = {"ingress": [{"hostname": "a.b", "service": "http_status:999"}, {"service": "bastion"}]}
    done = run(CLOUDFLARED, "tunnel", "ingress", "validate", "--json", json.dumps(rules))
    assert (done.returncode, done.stdout) == (0, "Validating rules from cmdline flag --json\nOK\n")
    rules["ingress"][0]["service"] = "http_status:1000"
    done = run(CLOUDFLARED, "tunnel", "ingress", "validate", "-j", json.dumps(rules))
    assert done.returncode == 1
    assert done.stderr == "Validation failed: invalid HTTP status code: 1000\n"


# ---- the stand-in edge: requests routed by the rules the connector runs, to a real origin


@contextmanager
def origin() -> Iterator[tuple[int, list[tuple[str, str, str]]]]:
    """A loopback HTTP origin that answers every request with what it received."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[tuple[str, str, str]] = []

    class Echo(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            seen.append((self.command, self.path, self.headers.get("Host") or ""))
            data = json.dumps({"path": self.path, "body": body}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()


def edge_request(edge: str, host: str, path: str, method: str = "GET") -> tuple[int, str]:
    connection = http.client.HTTPConnection(edge, timeout=10)
    try:
        connection.request(method, path, body=b"{}" if method == "POST" else None,
                           headers={"Host": host})  # fmt: skip
        answer = connection.getresponse()
        return answer.status, answer.read().decode()
    finally:
        connection.close()


def push(metrics: str, version: int, config: dict) -> dict:
    request = urllib.request.Request(
        f"http://{metrics}/__standin__/configuration",
        data=json.dumps({"version": version, "config": config}).encode(),
        method="PUT",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def test_edge_routes_by_the_local_rules_then_by_a_remote_configuration(tmp_path: Path) -> None:
    with origin() as (port, seen):
        local = (
            f"\n  - hostname: gpu.boathou.se\n    path: ^/v2/health/ready$"
            f"\n    service: http://127.0.0.1:{port}\n  - service: http_status:404"
        )
        config = write_cloudflared_config(tmp_path, ingress=local)
        env = {"CLOUDFLARED_STANDIN_EDGE": "127.0.0.1:0"}
        with started(CLOUDFLARED, "tunnel", "--config", str(config), "run", env=env) as cfd:
            edge = cfd.wait_for(r"STAND-IN edge for this tunnel's hostnames on http://(\S+)")[1]
            metrics = metrics_address(cfd)
            cfd.wait_for(r"Registered tunnel connection connIndex=0")

            # the local file: only /v2/health/ready on gpu.boathou.se reaches the origin
            assert edge_request(edge, "gpu.boathou.se", "/v2/health/ready")[0] == 200
            assert edge_request(edge, "gpu.boathou.se:443", "/v2/health/ready?x=1")[0] == 200
            assert edge_request(edge, "gpu.boathou.se", "/v2/repository/index", "POST") == (404, "")
            assert edge_request(edge, "gpu2.boathou.se", "/v2/health/ready")[0] == 404
            assert seen == [
                ("GET", "/v2/health/ready", "gpu.boathou.se"),
                ("GET", "/v2/health/ready?x=1", "gpu.boathou.se:443"),
            ]  # path, query and Host header as the eyeball sent them

            # the edge sends the tunnel's stored configuration: version 0 already wins over -1
            remote = {
                "ingress": [
                    {"hostname": "gpu.boathou.se", "path": "^/v2/repository/",
                     "service": f"http://127.0.0.1:{port}",
                     "originRequest": {"connectTimeout": 30}},
                    {"service": "http_status:404"},
                ],
                "warp-routing": {"enabled": False},
            }  # fmt: skip
            assert push(metrics, 0, remote) == {"lastAppliedVersion": 0}
            cfd.wait_for(r"Updated to new configuration version=0 config=")
            assert edge_request(edge, "gpu.boathou.se", "/v2/repository/index", "POST")[0] == 200
            assert edge_request(edge, "gpu.boathou.se", "/v2/health/ready")[0] == 404
            status, body = get(f"http://{metrics}/metrics")
            assert "cloudflared_orchestration_config_version 0" in body

            # an older or equal version is ignored; a bad one is refused and changes nothing
            assert push(metrics, 0, {"ingress": [{"service": "http_status:503"}]}) == {
                "lastAppliedVersion": 0
            }
            refused = push(metrics, 1, {"ingress": [{"hostname": "a.b", "service": "http://x:1"}]})
            assert refused["lastAppliedVersion"] == 0 and "must match all URLs" in refused["err"]
            assert edge_request(edge, "gpu.boathou.se", "/v2/repository/index", "POST")[0] == 200
            assert cfd.terminate() == 0


def test_edge_answers_502_when_the_origin_is_down(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ingress = (
        f"\n  - hostname: gpu.boathou.se\n    service: http://127.0.0.1:{port}"
        "\n  - service: http_status:404"
    )
    config = write_cloudflared_config(tmp_path, ingress=ingress)
    env = {"CLOUDFLARED_STANDIN_EDGE": "127.0.0.1:0"}
    with started(CLOUDFLARED, "tunnel", "--config", str(config), "run", env=env) as cfd:
        edge = cfd.wait_for(r"STAND-IN edge for this tunnel's hostnames on http://(\S+)")[1]
        cfd.wait_for(r"Registered tunnel connection connIndex=0")
        assert edge_request(edge, "gpu.boathou.se", "/v2/health/ready")[0] == 502
        cfd.wait_for("Unable to reach the origin service")
        assert cfd.terminate() == 0


def test_edge_answers_530_while_the_tunnel_has_no_connection(tmp_path: Path) -> None:
    """Cloudflare's answer for a tunnel without a live connector (error 1033): the edge cannot
    hand the request to anyone, whatever the rules say."""
    config = write_cloudflared_config(tmp_path)
    env = {"CLOUDFLARED_STANDIN_EDGE": "127.0.0.1:0", "CLOUDFLARED_STANDIN_CONNECTIONS": "0"}
    with started(CLOUDFLARED, "tunnel", "--config", str(config), "run", env=env) as cfd:
        edge = cfd.wait_for(r"STAND-IN edge for this tunnel's hostnames on http://(\S+)")[1]
        status, body = edge_request(edge, "gpu.boathou.se", "/v2/health/ready")
        assert status == 530 and "1033" in body
        assert cfd.terminate() == 0
