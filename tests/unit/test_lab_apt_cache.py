"""The lab's Debian package cache: the real apt-cacher-ng, configured as lab/services.py runs
it, in front of a local origin on loopback (a stand-in for deb.debian.org's pool).

A package asked for twice, as two lab hosts would, reaches the origin once; the bench's count
of what the cache fetched upstream (lab/bench_scale.apt_fetched) reads apt-cacher-ng's own log.
`make lab-deps` installs apt-cacher-ng; CI runs it before the tests.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from lab import bench_scale, processes, services

PACKAGE = "debian/pool/main/f/foo/foo_1.0-1_amd64.deb"


def low_free_port() -> int:
    """A free port below 32768: apt-cacher-ng 3.7.4 keeps ports in a signed 16-bit number, so
    it cannot listen on a higher one ("Error resolving address for binding") nor fetch from
    one (503 "Connection refused"); the lab's is 3143, Debian's mirrors are on 80."""
    for port in range(20000 + os.getpid() % 1000, 32768, 7):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below 32768")


class Origin(http.server.SimpleHTTPRequestHandler):
    """Serves the test's folder and remembers every path it was asked for."""

    asked: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        Origin.asked.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def origin(tmp_path):
    root = tmp_path / "origin"
    (root / PACKAGE).parent.mkdir(parents=True)
    (root / PACKAGE).write_bytes(hashlib.sha256(b"foo").digest() * 4096)  # 128 KiB
    Origin.asked = []
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", low_free_port()), lambda *a: Origin(*a, directory=str(root))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()


@pytest.fixture
def apt_cache(tmp_path, monkeypatch):
    port = low_free_port()
    cache = tmp_path / "cache"
    folder = services.apt_cache_config(
        tmp_path / "conf", cache, "127.0.0.1", port, AllowUserPorts=0
    )
    monkeypatch.setattr(bench_scale, "APT_LOG", cache / "log" / "apt-cacher.log")
    log = (tmp_path / "acng.out").open("wb")
    proc = subprocess.Popen(services.apt_cache_argv(folder), stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while not (folder / "pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        services._wait_port(port, "127.0.0.1")
        yield f"http://127.0.0.1:{port}", cache
    finally:
        processes.terminate([proc.pid])
        proc.wait(timeout=5)
        log.close()


def _through(proxy: str, url: str) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))
    with opener.open(url, timeout=20) as answer:
        return answer.read()


def _logged(fetches: int) -> None:
    """Wait for apt-cacher-ng to log `fetches` upstream fetches: it logs one when the file is
    stored, a moment after the client has it."""
    deadline = time.monotonic() + 10
    while bench_scale.apt_fetched(0)[0] < fetches and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_package_is_fetched_once_however_many_hosts_ask(origin, apt_cache):
    base, root = origin
    proxy, cache = apt_cache
    before = bench_scale.apt_log_size()
    expected = (root / PACKAGE).read_bytes()
    for _ in range(3):
        assert _through(proxy, f"{base}/{PACKAGE}") == expected
    assert Origin.asked == [f"/{PACKAGE}"]
    cached = [p for p in cache.rglob(Path(PACKAGE).name) if p.is_file()]
    assert cached and cached[0].read_bytes() == expected
    _logged(1)
    files, size = bench_scale.apt_fetched(before)
    assert files == 1 and len(expected) <= size < len(expected) + 4096  # with its headers


def test_nothing_fetched_is_counted_as_nothing(origin, apt_cache):
    base, _ = origin
    proxy, _ = apt_cache
    _through(proxy, f"{base}/{PACKAGE}")
    _logged(1)
    after_first = bench_scale.apt_log_size()
    _through(proxy, f"{base}/{PACKAGE}")
    assert bench_scale.apt_fetched(after_first) == (0, 0)
    assert bench_scale.apt_fetched(0)[0] == 1
