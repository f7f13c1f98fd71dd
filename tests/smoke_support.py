"""Helpers for the smoke command's tests (tests/unit/test_smoke.py, tests/contract/test_smoke.py).

The command is run as an operator runs it (`python -m oceanid.smoke` in a site folder, secrets
from SECRETS_FILE), against servers on 127.0.0.1 only: the Cloudflare API stand-in, small HTTP
servers that answer like Label Studio or a broken Triton, and (in the contract test) the real
tritonserver.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import ssl
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.standins.cloudflare_api import StandinState, base_url, make_server

REPO = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_S = 120
# Identifiers sit in public places (CNAME targets, API paths); everything else is a secret.
NOT_SECRET = ("Id", "Hostname", "Target", "Email")


def site_dir(tmp: Path, group_data_extra: str = "") -> Path:
    """A copy of the production inventory and group data, with lines appended to group data."""
    site = tmp / "site"
    (site / "group_data").mkdir(parents=True)
    shutil.copy(REPO / "inventory.py", site / "inventory.py")
    text = (REPO / "group_data" / "all.py").read_text()
    (site / "group_data" / "all.py").write_text(text + textwrap.dedent(group_data_extra))
    return site


def write_secrets(tmp: Path, values: Mapping[str, str]) -> dict[str, str]:
    path = tmp / "secrets.json"
    path.write_text(json.dumps(dict(values)))
    path.chmod(0o600)
    return {"SECRETS_FILE": str(path)}


def run_smoke(site: Path, env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m oceanid.smoke inventory.py ARGS` in the site folder, with a clean environment."""
    return run_module("oceanid.smoke", site, env, *args)


def run_module(
    module: str, site: Path, env: Mapping[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    """`python -m MODULE inventory.py ARGS` in the site folder, with a clean environment."""
    return subprocess.run(
        [sys.executable, "-m", module, "inventory.py", *args],
        cwd=site,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )


def assert_no_secret(output: str, secrets: Mapping[str, str]) -> None:
    for key, value in secrets.items():
        if not key.endswith(NOT_SECRET):
            for line in value.strip().splitlines():
                assert line.strip() not in output, f"{key} leaked into the output"


def _serve(server: ThreadingHTTPServer) -> None:
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()


@dataclass
class Standin:
    state: StandinState
    url: str


@contextmanager
def cloudflare_standin(secrets: Mapping[str, str], tunnels: list[dict[str, Any]]) -> Iterator:
    """The API stand-in on an ephemeral port, knowing the secrets' account, zone and token."""
    seed = {
        "account_id": secrets["cloudflareAccountId"],
        "zones": [{"id": secrets["cloudflareZoneId"], "name": "boathou.se"}],
        "tunnels": tunnels,
    }
    state = StandinState.from_seed(seed, secrets["cloudflareApiToken"])
    server = make_server(state, "127.0.0.1", 0)
    _serve(server)
    try:
        yield Standin(state, base_url(server))
    finally:
        server.shutdown()
        server.server_close()


Answer = tuple[int, str] | tuple[int, str, dict[str, str]]
Route = Answer | Callable[[Any, bytes], Answer]


@contextmanager
def http_server(routes: Mapping[str, Route], tls: Path | None = None) -> Iterator[str]:
    """An HTTP/1.1 server answering `path -> (status, body[, headers])` or `path -> f(headers,
    body)`, 404 otherwise; over TLS with `tls` (a PEM holding key and certificate). Yields its
    base URL.

    HTTP/1.1 with Content-Length because tritonclient's client keeps connections open.
    """

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            route = routes.get(self.path.split("?")[0], (404, '{"error": "not found"}'))
            status, text, *extra = route(self.headers, body) if callable(route) else route
            data = text.encode()
            self.send_response(status)
            for name, value in (extra[0] if extra else {}).items():  # e.g. a redirect's Location
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    _serve(server)
    try:
        host, port = server.server_address[:2]
        yield f"{'https' if tls else 'http'}://{host}:{port}"
    finally:
        server.shutdown()
        server.server_close()


def triton_echo(mangle: bool = False, error: str | None = None) -> Callable[[Any, bytes], Answer]:
    """A fake `POST /v2/models/<model>/infer` that answers like docling_granite_python given
    `text` (binary tensor extension in, JSON out); `mangle` returns other text instead, `error`
    the model's {"error"} row. Like Triton for the batched model, it refuses an input without
    the batch dimension (a batch of one is [1, 1])."""

    def infer(headers: Any, body: bytes) -> Answer:
        size = int(headers.get("Inference-Header-Content-Length") or len(body))
        request, blob = json.loads(body[:size]), body[size:]
        (tensor,) = request["inputs"]
        if tensor["shape"] != [1, 1]:
            message = f"unexpected shape for input 'text'. Expected [-1,1], got {tensor['shape']}"
            return 400, json.dumps({"error": message})
        text = blob[4 : 4 + struct.unpack("<I", blob[:4])[0]].decode()
        answer = {"text": text[::-1] if mangle else text, "model": "fake", "device": "cpu"}
        if error is not None:
            answer = {"error": error}
        output = {"name": "response", "datatype": "BYTES", "shape": [1, 1]}
        output["data"] = [json.dumps(answer)]
        return 200, json.dumps({"model_name": "docling_granite_python", "outputs": [output]})

    return infer


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: (key and certificate PEM for the server,
    certificate alone for the client to trust)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "oceanid smoke test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    pem = folder / "tls.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    trust = folder / "ca.pem"
    trust.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return pem, trust


def lines(output: str, prefix: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(prefix)]


@contextmanager
def connector_edge(tmp: Path, ingress: list[dict[str, Any]]) -> Iterator[str]:
    """The cloudflared stand-in running `ingress` (tests/standins/cloudflared), connected; yields
    the URL of its edge on a free loopback port, where a request is routed by those rules and
    proxied as cloudflared proxies it."""
    from tests.standins.test_standins import CLOUDFLARED, TUNNEL_ID, write_cloudflared_config

    config = write_cloudflared_config(tmp)  # and its credentials.json beside it
    config.write_text(json.dumps({
        "tunnel": TUNNEL_ID, "credentials-file": str(tmp / "credentials.json"),
        "metrics": "127.0.0.1:0", "ingress": ingress,
    }))  # fmt: skip
    log = tmp / "cloudflared.log"
    with log.open("w") as err:
        process = subprocess.Popen(
            [sys.executable, str(CLOUDFLARED), "tunnel", "--config", str(config), "run"],
            stdout=subprocess.DEVNULL, stderr=err,
            env={**os.environ, "CLOUDFLARED_STANDIN_EDGE": "127.0.0.1:0", "HOME": str(tmp)},
        )  # fmt: skip
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:
            text = log.read_text()
            edge = re.search(r"STAND-IN edge for this tunnel's hostnames on (http://\S+)", text)
            if edge and "Registered tunnel connection connIndex=0" in text:
                break
            assert process.poll() is None and time.monotonic() < deadline, text
            time.sleep(0.05)
        yield edge.group(1)
    finally:
        process.terminate()
        process.wait(timeout=10)
