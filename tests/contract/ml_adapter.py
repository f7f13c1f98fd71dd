"""The real ML-backend adapter as a process, and a file server for the PDFs it fetches.

The adapter runs as on a GPU host: `python3 adapter.py --config <file>`, with its
credentials in a 0600 file the config names, on a free loopback port; only the Triton and
Label Studio it talks to are this machine's. Used by the contract tests and by `make
bench-predict` (bench_predict.py).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

from deploys.gpu_host.ml_backend import adapter as adapter_module
from tests.gpu.triton_smoke import free_ports, stop_server

ADAPTER = Path(adapter_module.__file__)
READY_TIMEOUT_S = 30


@dataclass
class Adapter:
    url: str
    user: str
    password: str = field(repr=False)
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def auth(self) -> tuple[str, str]:
        return (self.user, self.password)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def start_adapter(
    work: Path,
    triton_url: str,
    *,
    user: str = "label-studio",
    password: str | None = None,
    port: int | None = None,
    **settings: object,
) -> Iterator[Adapter]:
    """The adapter process, serving once its /health answers with credentials; stopped by
    PID on exit. `settings` are config keys (label_studio_url, batch, pdf_field, …)."""
    work.mkdir(parents=True, exist_ok=True)
    password = password or secrets.token_urlsafe(18)
    credentials = work / "credentials.json"
    credentials.touch(mode=0o600)
    credentials.chmod(0o600)
    credentials.write_text(json.dumps({"user": user, "password": password}))
    port = port or free_ports(1)[0]
    config = work / "config.json"
    config.write_text(
        json.dumps(
            {
                "credentials_file": str(credentials),
                "listen_port": port,
                "triton_url": triton_url,
                **settings,
            }
        )
    )
    log = work / "adapter.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, str(ADAPTER), "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    adapter = Adapter(f"http://127.0.0.1:{port}", user, password, process, log)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the adapter did not start:\n{adapter.tail()}")
            try:
                if requests.get(f"{adapter.url}/health", auth=adapter.auth, timeout=5).ok:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        yield adapter
    finally:
        stop_server(process, timeout=10)


class Server(ThreadingHTTPServer):
    request_queue_size = 128
    daemon_threads = True


class FileServer:
    """PDFs at http://127.0.0.1:<port>/<name> on a thread, as an operator's file server."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.requests: list[str] = []
        self.authorizations: list[str | None] = []  # each request's Authorization header
        served = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                served.requests.append(self.path)
                served.authorizations.append(self.headers.get("Authorization"))
                body = served.files.get(self.path.lstrip("/"))
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "application/pdf")
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: object) -> None:
                pass

        # listen(5), http.server's default, drops the SYNs of a 6th concurrent connect: the
        # client retries a second later, which a benchmark would charge to the adapter
        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> FileServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
