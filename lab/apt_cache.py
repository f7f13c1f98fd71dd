"""The lab's Debian package cache: a small caching HTTP proxy that the lab hosts' apt uses.

A site with many hosts has its apt go through a local cache, so each package crosses the
internet once however many hosts install it; so does the lab (`python -m lab.apt_cache`, started
by lab/services.py on the bridge address, its files kept in .lab/cache/apt across runs).

Why not a packaged cache: apt-cacher-ng 3.7.4 was tried and hung eight hosts' `apt-get update`
(replacing a stale InRelease for several clients at once fails, "Failure to move file ... out of
the way ... File exists"), and passing those files through with its DontCacheRequested answered
400 Bad Request; squid's and apt-cacher-ng's packages start a system service on a systemd
machine, which squid's would start on 3128, the lab proxy's port. docs/lab.md's
known traps say more.

What it caches is only what never changes under its name: packages (`/pool/…`) and the package
lists apt fetches by hash (`/by-hash/…`). Everything else (InRelease, Release, …) is passed
through with the client's conditional headers, so apt sees the archive as it is now. Several
hosts asking for one file at once wait for one download. A download goes to a temporary file and
is renamed into place only when its length is what the archive said, so a broken transfer never
leaves a half file in the cache. Only the registry hosts are served (REGISTRY_HOSTS, plain
HTTP); anything else is refused.

Its log (standard output, one line per request) is `RESULT BYTES CLIENT URL`, RESULT being HIT
(from the cache), MISS (fetched and cached), PASS (passed through), or FAIL with the HTTP status
in place of the bytes: the bench counts what came from Debian from it (lab/bench_scale.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import TypeVar
from urllib.parse import urlsplit

from lab.topology import REGISTRY_HOSTS

T = TypeVar("T")

#: the request headers passed on to the archive, and the answer headers passed back
CONDITIONAL = ("If-Modified-Since", "If-None-Match", "Range", "If-Range")
ANSWER = ("Content-Type", "Last-Modified", "ETag", "Content-Range", "Accept-Ranges", "Date")
TIMEOUT = 120.0


def cacheable(path: str) -> bool:
    """A path whose content never changes: a package, or a list fetched by its hash."""
    parts = PurePosixPath(path).parts
    return "pool" in parts or "by-hash" in parts


class Cache:
    """The cache folder, and a lock per file so that one download serves every waiting host."""

    def __init__(self, root: Path, allowed: tuple[str, ...]):
        self.root, self.allowed = root, allowed
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.opener = urllib.request.build_opener()  # this machine's own proxy settings, if any

    def lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def file(self, host: str, path: str) -> Path | None:
        """Where the file for `host` and `path` is kept; None for a path that would leave it."""
        parts = PurePosixPath(path).parts[1:]
        if not parts or any(p in ("..", ".", "") for p in parts):
            return None
        return self.root / host / Path(*parts)

    def fetch(self, url: str, target: Path) -> int:
        """Download `url` into `target` whole, or not at all; returns its size."""
        target.parent.mkdir(parents=True, exist_ok=True)
        with self.opener.open(url, timeout=TIMEOUT) as answer:
            expected = answer.headers.get("Content-Length")
            fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".partial-")
            try:
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(answer, out, 1 << 20)
                size = Path(temporary).stat().st_size
                if expected is not None and int(expected) != size:
                    raise OSError(f"{url}: {size} of {expected} bytes arrived")
                os.replace(temporary, target)
            finally:
                Path(temporary).unlink(missing_ok=True)
        return size


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # apt keeps its connection and pipelines requests
    server: Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        url = urlsplit(self.path)
        cache = self.server.cache
        if url.scheme != "http" or url.hostname not in cache.allowed:
            self._refuse(403, "the lab's package cache serves the registries only")
            return
        full = url.geturl()
        target = cache.file(url.netloc, url.path) if cacheable(url.path) else None
        if target is None:
            self._pass(full)
            return
        with cache.lock(str(target)):
            result = "HIT"
            if not target.is_file():
                if self._from_archive(full, lambda: cache.fetch(full, target)) is None:
                    return
                result = "MISS"
        self._send_file(target, result, full)

    def _from_archive(self, full: str, fetch: Callable[[], T]) -> T | None:
        """`fetch()`'s result; None once the archive's error (or 502, unreachable) is sent."""
        try:
            return fetch()
        except urllib.error.HTTPError as error:
            self._relay_error(error, full)
        except OSError as error:
            self._refuse(502, f"fetching it failed: {error}", full)
        return None

    def _send_file(self, target: Path, result: str, full: str) -> None:
        """The cached file; `result`: HIT, or MISS when it was fetched for this request."""
        size = target.stat().st_size
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        with target.open("rb") as source:
            shutil.copyfileobj(source, self.wfile, 1 << 20)
        self._log(f"{result} {size}", full)

    def _pass(self, full: str) -> None:
        headers = {h: self.headers[h] for h in CONDITIONAL if self.headers.get(h)}
        request = urllib.request.Request(full, headers=headers)

        def read() -> tuple[int, Message, bytes]:
            with self.server.cache.opener.open(request, timeout=TIMEOUT) as answer:
                return answer.status, answer.headers, answer.read()

        got = self._from_archive(full, read)
        if got is None:
            return
        status, answer_headers, body = got
        self._answer(status, answer_headers, body)
        self._log(f"PASS {len(body)}", full)

    def _relay_error(self, error: urllib.error.HTTPError, full: str) -> None:
        """The archive's own answer (304 Not Modified, 404, …), never cached."""
        body = error.read() if error.code != 304 else b""
        self._answer(error.code, error.headers, body)
        self._log(f"PASS {len(body)}" if error.code == 304 else f"FAIL {error.code}", full)

    def _answer(self, status: int, headers, body: bytes) -> None:
        self.send_response(status)
        for name in ANSWER:
            if headers.get(name):
                self.send_header(name, headers[name])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _refuse(self, status: int, why: str, full: str | None = None) -> None:
        body = (why + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self._log(f"FAIL {status}", full or self.path)

    def _log(self, result: str, url: str) -> None:
        print(f"{result} {self.client_address[0]} {url}", flush=True)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's name)
        pass  # one line per request, from _log, is the log


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], cache: Cache):
        self.cache = cache
        super().__init__(address, Handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.apt_cache", description=__doc__)
    parser.add_argument("--listen", required=True, help="ADDRESS:PORT")
    parser.add_argument("--cache", required=True, type=Path, help="the cache folder")
    parser.add_argument(
        "--allow", action="append", default=[], help="another host to serve (tests' origins)"
    )
    args = parser.parse_args(argv)
    address, _, port = args.listen.rpartition(":")
    cache = Cache(args.cache, (*REGISTRY_HOSTS, *args.allow))
    args.cache.mkdir(parents=True, exist_ok=True)
    with Server((address, int(port)), cache) as server:
        print(f"apt cache on {args.listen}, files in {args.cache}", file=sys.stderr, flush=True)
        server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
