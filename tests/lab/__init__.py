"""Lab tests: real hosts under systemd-nspawn (root only)."""

from __future__ import annotations

import subprocess
import sys

from lab.topology import REPO


def lab_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`python -m lab …` as an operator runs it, output captured."""
    return subprocess.run([sys.executable, "-m", "lab", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, check=False)  # fmt: skip
