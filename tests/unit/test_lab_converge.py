"""lab/converge.py's peak memory: pyinfra's own, not its parent's (the bench's)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lab.converge import PEAK_FILE, peak_argv

BIG = "b = bytearray(96 * 2**20); b[::4096] = b'x' * len(b[::4096])"


def _peak(tmp_path: Path, code: str) -> float:
    out = tmp_path / "peak"
    env = {**os.environ, PEAK_FILE: str(out)}
    done = subprocess.run(peak_argv([sys.executable, "-c", code]), env=env, timeout=60)
    assert done.returncode == 0
    return int(out.read_text().split()[0]) / 1024


def test_the_peak_is_the_commands_own(tmp_path):
    """Run from this test process (itself far larger than a bare Python), a bare child reads
    small and a child that touches 96 MiB reads at least that."""
    ballast = bytearray(256 * 2**20)  # the parent's size must not show in the child's peak
    ballast[::4096] = b"y" * len(ballast[::4096])
    small, large = _peak(tmp_path, "pass"), _peak(tmp_path, BIG)
    assert small < 64, small
    assert large >= 96, large


def test_the_commands_exit_status_is_kept(tmp_path):
    env = {**os.environ, PEAK_FILE: str(tmp_path / "peak")}
    done = subprocess.run(peak_argv([sys.executable, "-c", "raise SystemExit(3)"]), env=env)
    assert done.returncode == 3 and (tmp_path / "peak").read_text().split()[0].isdigit()


def test_the_commands_cpu_time_is_read_with_its_memory(tmp_path):
    """A child that spins for half a second of CPU reads at least that; a bare one far less."""
    env = {**os.environ, PEAK_FILE: str(tmp_path / "peak")}
    spin = "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass"
    cpu = {}
    for name, code in (("bare", "pass"), ("spin", spin)):
        done = subprocess.run(peak_argv([sys.executable, "-c", code]), env=env, timeout=60)
        assert done.returncode == 0
        cpu[name] = float((tmp_path / "peak").read_text().split()[1])
    assert cpu["spin"] >= 0.5 > cpu["bare"], cpu
