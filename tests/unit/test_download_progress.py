"""Long steps say how they go (issue 23): a download prints its size and time once done (on
stdout, which a plain run shows: progress.Shown), run here by the real curl against a loopback
server. The bytes so far as it goes: tests/unit/test_progress.py."""

from __future__ import annotations

import hashlib
import http.server
import shutil
import subprocess
import threading
from functools import partial

import pytest

from operations import _shell, managed


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_a_download_says_how_much_came_and_how_fast(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    payload = b"x" * 123_456
    (served / "tool").write_bytes(payload)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/tool"
        binary = managed.ManagedBinary(
            str(tmp_path / "tool"), url, "1", {"amd64": hashlib.sha256(payload).hexdigest()}
        )
        first = next(_shell.download_commands(binary, url, binary.sha256["amd64"]))
        done = subprocess.run(
            ["sh", "-c", first.get_raw_value()], capture_output=True, text=True, timeout=60
        )
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert line.startswith("downloaded 123456 bytes in "), line
    assert line.endswith(" bytes/s)")
    assert (tmp_path / "tool.oceanid-new").read_bytes() == payload
