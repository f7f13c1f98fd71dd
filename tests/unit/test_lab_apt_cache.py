"""The lab's Debian package cache (lab/apt_cache.py), run as lab/services.py runs it, in front of a
local origin on loopback that stands in for deb.debian.org (its pool and its release files).

A package asked for by many hosts, one after the other or all at once, reaches the origin once;
release files reach it every time, with apt's conditional headers; a broken download leaves
nothing in the cache; other hosts are refused; the bench counts what was fetched from its log.
"""

from __future__ import annotations

import hashlib
import http.server
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate

import pytest

from lab import bench_scale, processes, services
from lab.topology import REPO
from tests.lab import free_port

PACKAGE = "debian/pool/main/f/foo/foo_1.0-1_amd64.deb"
RELEASE = "debian/dists/bookworm/InRelease"
SHORT = "debian/pool/main/s/short/short_1_amd64.deb"  # the origin sends less than it announces
MODIFIED = formatdate(0, usegmt=True)


class Origin(http.server.SimpleHTTPRequestHandler):
    """Serves the test's folder, remembers every path asked for, and breaks SHORT."""

    asked: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        Origin.asked.append(self.path)
        if self.path == f"/{SHORT}":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            return
        if self.path == f"/{RELEASE}" and self.headers.get("If-Modified-Since") == MODIFIED:
            self.send_response(304)
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def origin(tmp_path):
    root = tmp_path / "origin"
    for path, body in ((PACKAGE, hashlib.sha256(b"foo").digest() * 4096), (RELEASE, b"rel")):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(body)
    Origin.asked = []
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: Origin(*a, directory=str(root))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}", root
    server.shutdown()


@pytest.fixture
def cache(tmp_path, monkeypatch, origin):
    """The cache as a process of its own, serving the origin; (its URL, its folder)."""
    port, folder, log_path = free_port(), tmp_path / "cache", tmp_path / "apt-cache.log"
    monkeypatch.setattr(bench_scale, "APT_LOG", log_path)
    argv = [*services.apt_cache_argv("127.0.0.1", port, folder), "--allow", "127.0.0.1"]
    assert argv[:3] == [sys.executable, "-m", "lab.apt_cache"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.DEVNULL, cwd=REPO)
    try:
        services._wait_port(port, "127.0.0.1")
        yield f"http://127.0.0.1:{port}", folder
    finally:
        processes.terminate([proc.pid])
        proc.wait(timeout=5)


def _get(proxy: str, url: str, headers: dict | None = None) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=20) as a:
            return a.status, a.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _logged(text: str) -> None:
    deadline = time.monotonic() + 5
    while text not in bench_scale.APT_LOG.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert text in bench_scale.APT_LOG.read_text()


def test_a_package_is_fetched_once_however_many_hosts_ask(origin, cache):
    base, root = origin
    proxy, folder = cache
    expected = (root / PACKAGE).read_bytes()
    with ThreadPoolExecutor(8) as pool:  # eight hosts at once, then two more after them
        answers = list(pool.map(lambda _: _get(proxy, f"http://{base}/{PACKAGE}"), range(8)))
    answers += [_get(proxy, f"http://{base}/{PACKAGE}") for _ in range(2)]
    assert answers == [(200, expected)] * 10
    assert Origin.asked == [f"/{PACKAGE}"]
    assert (folder / base / PACKAGE).read_bytes() == expected
    assert not [p for p in folder.rglob(".partial-*")]
    _logged("MISS ")  # the cache logs a request after its answer is sent
    assert bench_scale.apt_fetched(0) == (1, len(expected))


def test_release_files_pass_through_every_time_with_apts_conditions(origin, cache):
    base, _ = origin
    proxy, folder = cache
    assert _get(proxy, f"http://{base}/{RELEASE}") == (200, b"rel")
    assert _get(proxy, f"http://{base}/{RELEASE}", {"If-Modified-Since": MODIFIED})[0] == 304
    assert Origin.asked == [f"/{RELEASE}"] * 2
    assert not (folder / base / RELEASE).exists()
    _logged("PASS 0 ")  # the 304, logged last
    assert bench_scale.apt_fetched(0) == (0, 0)  # passed through: nothing kept


def test_a_broken_download_leaves_nothing_and_is_tried_again(origin, cache):
    base, _ = origin
    proxy, folder = cache
    assert _get(proxy, f"http://{base}/{SHORT}")[0] == 502
    assert _get(proxy, f"http://{base}/{SHORT}")[0] == 502
    assert Origin.asked == [f"/{SHORT}"] * 2
    assert not [p for p in folder.rglob("*") if p.is_file()]


def test_a_missing_package_is_the_archives_404_and_not_cached(origin, cache):
    base, _ = origin
    proxy, folder = cache
    assert _get(proxy, f"http://{base}/debian/pool/main/n/no/no_1_all.deb")[0] == 404
    assert not [p for p in folder.rglob("*") if p.is_file()]


def test_other_hosts_are_refused_without_asking_them(origin, cache):
    proxy, _ = cache
    status, body = _get(proxy, "http://example.com/debian/pool/main/f/foo/foo_1_all.deb")
    assert status == 403 and b"registries only" in body
    assert Origin.asked == []
    _logged("FAIL 403 ")
