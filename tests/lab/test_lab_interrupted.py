"""An interrupted `make lab` leaves hosts, namespaces and links behind; `lab down` (and the
next `lab up`, which starts with the same cleanup) must remove all of it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab import network
from lab.topology import BRIDGE, LAB_DIR, REPO, RUN_DIR
from tests.lab import lab_cli

pytestmark = pytest.mark.lab


def lab_processes() -> list[str]:
    """Command lines of this checkout's lab processes (read from /proc, never signalled)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            text = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if str(LAB_DIR) in text or ("lab.supervise" in text and cwd == str(REPO)):
            found.append(text.strip())
    return found


def test_killed_lab_up_is_cleaned_by_lab_down():
    up = subprocess.Popen(
        [sys.executable, "-m", "lab", "up", "--no-deploy"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not list(RUN_DIR.glob("host-*.json")):
            assert up.poll() is None, "lab up ended before it booted a host"
            time.sleep(0.2)
        assert list(RUN_DIR.glob("host-*.json")), "no host was booted in time"
        up.send_signal(signal.SIGKILL)
        up.wait(timeout=10)
        assert Path(f"/sys/class/net/{BRIDGE}").exists()
        assert lab_processes(), "the interrupted run left nothing to clean (test is vacuous)"
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    # A run can die between starting a process and writing its record: drop one record so
    # `lab down` must find that host by its root filesystem, not by the record.
    next(RUN_DIR.glob("host-*.json")).unlink()
    down = lab_cli("down")
    assert down.returncode == 0, down.stderr
    assert "host " in down.stdout  # it found and stopped what the killed run left
    time.sleep(0.5)
    assert lab_processes() == []
    assert network.leftovers() == {"netns": [], "links": []}
    assert "/run/netns/ocl-" not in Path("/proc/mounts").read_text()
