"""lab/converge.py's runner: output of any size, the exit status, the timeout, the peak memory."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lab.converge import _run_measured

NOISY = (
    "import sys; sys.stdout.write('x' * 5_000_000); sys.stderr.write('y' * 300_000); sys.exit(3)"
)


def test_large_output_on_both_pipes_comes_back_whole():
    """More than a pipe holds, on both pipes, under this (gevent-patched) test process."""
    done, _ = _run_measured([sys.executable, "-c", NOISY], {}, 60)
    assert done.returncode == 3
    assert len(done.stdout) == 5_000_000 and len(done.stderr) == 300_000


def test_a_command_past_its_time_is_killed_and_said():
    with pytest.raises(subprocess.TimeoutExpired):
        _run_measured(["sleep", "30"], {}, 1)


def test_peak_memory_is_the_commands_own_without_gevent():
    code = (
        "from lab.converge import _run_measured\n"
        "big = \"b = bytearray(64 * 2**20); b[::4096] = b'x' * len(b[::4096])\"\n"
        "_, small = _run_measured(['python3', '-c', 'pass'], {}, 60)\n"
        "_, large = _run_measured(['python3', '-c', big], {}, 60)\n"
        "print(small, large)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    small, large = map(float, done.stdout.split())
    assert 0 < small < 40 and large > small + 40, done.stdout
