"""The ML-backend adapter's own rules, without Triton: its config and credentials files,
basic auth, the label config's <TextArea>, and where Label Studio's token may go.

Whole requests against the real Triton and Label Studio are in tests/contract
(test_ml_adapter.py, test_label_studio.py).
"""

from __future__ import annotations

import base64
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from deploys.gpu_host.ml_backend import adapter
from deploys.gpu_host.ml_backend.adapter import (
    Adapter,
    Config,
    ConfigError,
    Credentials,
    SetupError,
    Target,
    text_area,
)
from tests.gpu.triton_smoke import free_ports

ADAPTER = Path(adapter.__file__)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_credentials_accept_only_the_exact_pair() -> None:
    credentials = Credentials("label-studio", "s3cret:with:colons")
    assert credentials.accepts(basic("label-studio", "s3cret:with:colons"))
    for header in (
        None,
        "",
        basic("label-studio", "s3cret:with:colon"),
        basic("label-studio", "s3cret:with:colons "),
        basic("Label-studio", "s3cret:with:colons"),
        basic("", ""),
        "Basic !!!not-base64",
        "Bearer " + base64.b64encode(b"label-studio:s3cret:with:colons").decode(),
        "Basic " + base64.b64encode(b"label-studio").decode(),  # no colon at all
    ):
        assert not credentials.accepts(header), header
    assert "s3cret" not in repr(credentials)


def write(path: Path, data: object, mode: int = 0o600) -> Path:
    path.write_text(json.dumps(data))
    path.chmod(mode)
    return path


def test_credentials_file_must_be_private_and_complete(tmp_path: Path) -> None:
    good = write(tmp_path / "c.json", {"user": "u", "password": "p"})
    assert Credentials.load(str(good)) == Credentials("u", "p")
    shared = write(tmp_path / "shared.json", {"user": "u", "password": "p"}, 0o640)
    with pytest.raises(ConfigError, match="mode 0640 lets others read the password; make it"):
        Credentials.load(str(shared))
    empty = write(tmp_path / "empty.json", {"user": "u", "password": ""})
    with pytest.raises(ConfigError, match="non-empty user and password"):
        Credentials.load(str(empty))
    extra = write(tmp_path / "extra.json", {"user": "u", "password": "p", "pasword": "q"})
    with pytest.raises(ConfigError, match="unknown key"):
        Credentials.load(str(extra))


def test_config_defaults_and_errors_name_the_key() -> None:
    config = Config.from_dict({"credentials_file": "/etc/oceanid-ml-backend/credentials.json"})
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 9090)
    assert (config.model, config.pdf_field, config.batch) == ("docling_granite_python", "pdf", 8)
    cases = [
        ({}, "credentials_file is missing"),
        ({"credentials_file": "x", "bacth": 2}, "unknown key(s) bacth"),
        ({"credentials_file": "x", "batch": 0}, "batch must be at least 1"),
        ({"credentials_file": "x", "batch": "4"}, "batch must be a int"),
        ({"credentials_file": "x", "batch": True}, "batch must be a int"),
        ({"credentials_file": "x", "fetch_timeout_s": 0}, "fetch_timeout_s must be a positive"),
        ({"credentials_file": "x", "triton_url": "localhost:8000"}, "triton_url must be an http"),
        ({"credentials_file": "x", "listen_port": 70000}, "listen_port must be at most 65535"),
    ]
    for data, message in cases:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            Config.from_dict(data)


def test_the_process_refuses_a_readable_credentials_file(tmp_path: Path) -> None:
    credentials = write(tmp_path / "c.json", {"user": "u", "password": "p"}, 0o644)
    config = write(tmp_path / "config.json", {"credentials_file": str(credentials)}, 0o644)
    done = subprocess.run(
        [sys.executable, str(ADAPTER), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "mode 0644 lets others read the password" in done.stderr
    assert '"p"' not in done.stderr


def test_the_first_textarea_and_its_to_name() -> None:
    config = """<View>
      <Pdf name="doc" value="$pdf"/>
      <View><TextArea name="first" toName="doc,other"/></View>
      <TextArea name="second" toName="doc"/>
    </View>"""
    assert text_area(config) == Target("first", "doc")
    with pytest.raises(SetupError, match="no <TextArea>"):
        text_area('<View><Pdf name="doc" value="$pdf"/></View>')
    with pytest.raises(SetupError, match="needs name and toName"):
        text_area('<View><TextArea name="t"/></View>')
    with pytest.raises(SetupError, match="not valid XML"):
        text_area("<View>")


class Recorder(BaseHTTPRequestHandler):
    """A file server that records each request's Authorization header; /away redirects to
    another origin (the `other` server)."""

    seen: list[tuple[str, str | None]]
    redirect_to = ""

    def do_GET(self) -> None:  # noqa: N802
        self.seen.append((self.path, self.headers.get("Authorization")))
        if self.path == "/away":
            self.send_response(302)
            self.send_header("Location", self.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"%PDF-" + b"x" * (50 if self.path == "/big" else 5)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def serving(server) -> Iterator[str]:
    """`server` (an http.server) answering from a thread of its own until the block ends."""
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def servers() -> Iterator[tuple[str, str, list]]:
    """Two origins, Label Studio's and another one, each recording what it was sent."""
    seen: list[tuple[str, str | None]] = []
    started = []
    for _ in range(2):
        handler = type("Handler", (Recorder,), {"seen": seen})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        started.append(httpd)
    urls = [f"http://127.0.0.1:{h.server_address[1]}" for h in started]
    started[0].RequestHandlerClass.redirect_to = f"{urls[1]}/file.pdf"
    try:
        yield urls[0], urls[1], seen
    finally:
        for httpd in started:
            httpd.shutdown()
            httpd.server_close()


def make(label_studio_url: str, **settings: object) -> Adapter:
    config = Config.from_dict(
        {"credentials_file": "x", "label_studio_url": label_studio_url, **settings}
    )
    return Adapter(config, Credentials("u", "p"))


def test_the_token_goes_to_label_studio_only_and_never_along_a_redirect(servers) -> None:
    label_studio, other, seen = servers
    (closed,) = free_ports(1)
    backend = make("", triton_url=f"http://127.0.0.1:{closed}", triton_connect_timeout_s=1)
    schema = '<View><TextArea name="t" toName="d"/></View>'
    with pytest.raises(SetupError, match="cannot serve docling_granite_python"):
        # no Triton here: setup still keeps where Label Studio is and its token, first
        backend.setup({"project": "3.1", "schema": schema, "hostname": label_studio,
                       "access_token": "tok3n"})  # fmt: skip
    assert backend.fetch("/data/upload/3/a.pdf", "3.1").startswith(b"%PDF-")
    assert backend.fetch(f"{label_studio}/data/local-files/?d=b.pdf", "3.1")
    assert backend.fetch(f"{other}/c.pdf", "3.1")
    assert backend.fetch("/away", "3.1")  # Label Studio's origin, redirected to the other
    assert seen == [
        ("/data/upload/3/a.pdf", "Token tok3n"),
        ("/data/local-files/?d=b.pdf", "Token tok3n"),
        ("/c.pdf", None),
        ("/away", "Token tok3n"),
        ("/file.pdf", None),
    ]


def test_a_path_without_a_known_label_studio_and_odd_urls_are_refused(servers) -> None:
    label_studio, _other, _seen = servers
    with pytest.raises(ValueError, match="no Label Studio URL is known"):
        make("").fetch("/data/upload/1/a.pdf", "1.1")
    for url in ("ftp://x/a.pdf", "file:///etc/passwd", "//evil.example/a.pdf", "a.pdf"):
        with pytest.raises(ValueError, match="neither an http"):
            make(label_studio).fetch(url, "1.1")
    with pytest.raises(ValueError, match="larger than max_pdf_bytes"):
        make(label_studio, max_pdf_bytes=20).fetch("/big", "1.1")


@pytest.fixture
def running() -> Iterator[tuple[str, Credentials]]:
    """The adapter's HTTP server on a free port (no Triton: only what needs none)."""
    credentials = Credentials("label-studio", "pw")
    port, closed = free_ports(2)
    config = Config.from_dict(
        {"credentials_file": "x", "listen_port": port, "triton_url": f"http://127.0.0.1:{closed}"}
    )
    with serving(adapter.serve(config, credentials)) as url:
        yield url, credentials


def raw(url: str, request: bytes) -> bytes:
    """One request as bytes on a fresh connection; the status line back."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        return sock.makefile("rb").readline()


def test_http_answers_without_triton(running) -> None:
    url, _credentials = running
    auth = basic("label-studio", "pw")
    webhook = requests.post(f"{url}/webhook", json={"action": "TASK_CREATED"},
                            headers={"Authorization": auth}, timeout=10)  # fmt: skip
    assert (webhook.status_code, webhook.json()) == (200, {"status": "ok"})
    missing = requests.get(f"{url}/train", headers={"Authorization": auth}, timeout=10)
    assert missing.status_code == 404
    bad = requests.post(f"{url}/predict", data=b"[1,", headers={"Authorization": auth}, timeout=10)
    assert bad.status_code == 400
    refused = requests.post(f"{url}/webhook", json={}, timeout=10)
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith('Basic realm="oceanid-ml-backend"')
    for length in (b"-5", b"ten", str(adapter.MAX_BODY_BYTES + 1).encode()):
        line = raw(url, b"POST /predict HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth.encode()
                   + b"\r\nContent-Length: " + length + b"\r\n\r\n")  # fmt: skip
        assert line.startswith(b"HTTP/1.1 413"), (length, line)
    # Triton is not there: health says so, as a 503 Label Studio reads as unhealthy
    down = requests.get(f"{url}/health", headers={"Authorization": auth}, timeout=30)
    assert down.status_code == 503
    assert "cannot serve docling_granite_python" in down.json()["error"]


def test_answers_on_a_kept_alive_connection_are_not_held_back(running) -> None:
    """Calls on one kept-alive connection (as the node tunnel's cloudflared pools them) are
    answered at once: with Nagle on, each answer's body waited for the client's delayed ACK
    of its headers, 40 ms or more per call."""
    url, _credentials = running
    auth = basic("label-studio", "pw")
    with requests.Session() as session:
        seconds = []
        for _ in range(10):
            started = time.perf_counter()
            answer = session.post(f"{url}/webhook", json={}, headers={"Authorization": auth},
                                  timeout=10)  # fmt: skip
            seconds.append(time.perf_counter() - started)
            assert answer.status_code == 200
    assert statistics.median(seconds[1:]) < 0.02, [f"{s * 1000:.1f} ms" for s in seconds]
