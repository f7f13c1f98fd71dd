"""Run the real pyinfra CLI against the lab and read its JSON totals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from lab.topology import REPO, SECRETS_FILE


@dataclass
class Run:
    returncode: int
    seconds: float
    totals: dict
    failed_hosts: list[str]
    changed: dict[str, list[str]]  # operation name -> hosts it changed
    output: str
    peak_mib: float = 0.0  # the pyinfra process's peak resident memory
    cpu_s: float = 0.0  # and the CPU time it used (user and system), read with it


def lab_env() -> dict[str, str]:
    return {
        **os.environ,
        "SECRETS_FILE": str(SECRETS_FILE),
        "PYINFRA_PROGRESS": "off",
    }


def verify_argv() -> list[str]:
    """`make verify` on the lab: each role's checks on its group's hosts, from the inventory."""
    return [
        str(REPO / ".venv/bin/pytest"),
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/hosts",
        "--inventory=inventories/lab.py",
    ]


def pyinfra(
    *args: str,
    json_output: bool = True,
    timeout: float = 1800,
    yes: bool = True,
    env: dict[str, str] | None = None,
    memory: bool = False,
    inventory: str = "inventories/lab.py",
) -> Run:
    """`pyinfra [-y] [--json] inventories/lab.py ARGS`; a dry run passes yes=False, since
    `-y` skips pyinfra's change detection and with it everything a dry run shows. `env` is
    added to the lab's environment (another SECRETS_FILE, say). `memory`: also read pyinfra's
    peak memory (`peak_mib`), through a small Python parent (see `peak_argv`); its start-up
    is then in `seconds`, so the bench measures memory in runs it does not time. `inventory`:
    another of the lab's (make bench-scale's, inventories/scale/lab.py)."""
    argv = [str(REPO / ".venv/bin/pyinfra")]
    if yes:
        argv.append("-y")
    if json_output:
        argv.append("--json")
    argv += [inventory, *args]
    environment = {**lab_env(), **(env or {})}
    peak_file = None
    if memory:
        fd, peak_file = tempfile.mkstemp(prefix="oceanid-peak-")
        os.close(fd)
        argv, environment = peak_argv(argv), {**environment, PEAK_FILE: peak_file}
    started = time.monotonic()
    done = subprocess.run(
        argv,
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    seconds = time.monotonic() - started
    peak_mib = cpu_s = 0.0
    if peak_file is not None:
        fields = Path(peak_file).read_text().split()
        Path(peak_file).unlink()
        if fields:
            peak_mib, cpu_s = int(fields[0]) / 1024, float(fields[1])
    totals, failed, changed = {}, [], {}
    if json_output and done.stdout.strip().startswith("{"):
        results = json.loads(done.stdout).get("results") or {}
        totals = results.get("totals", {})
        failed = results.get("failed_hosts", [])
        changed = {
            op["name"]: op["success"] for op in results.get("operations", []) if op["success"]
        }
    return Run(
        done.returncode,
        seconds,
        totals,
        failed,
        changed,
        (done.stdout or "") + (done.stderr or ""),
        peak_mib,
        cpu_s,
    )


PEAK_FILE = "OCEANID_PEAK_FILE"
# Runs the command as its child and writes that child's peak RSS (KiB) and CPU time (seconds,
# user and system, its own children's included) to $OCEANID_PEAK_FILE.
# A process forked from a large parent counts the parent's memory as its own peak (Linux keeps
# the high-water mark across exec), so pyinfra is started from this small Python, not the bench.
_PEAK = (
    "import os, resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[1:])\n"
    "usage = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "cpu = usage.ru_utime + usage.ru_stime\n"
    "open(os.environ['OCEANID_PEAK_FILE'], 'w').write(f'{usage.ru_maxrss} {cpu:.3f}')\n"
    "sys.exit(code)\n"
)


def peak_argv(argv: list[str]) -> list[str]:
    """`argv` run under `_PEAK`, by this machine's Python in isolated mode (small, quick)."""
    return [sys.executable, "-I", "-S", "-c", _PEAK, *argv]
