"""Run the real pyinfra CLI against the lab and read its JSON totals."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

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
) -> Run:
    """`pyinfra [-y] [--json] inventories/lab.py ARGS`; a dry run passes yes=False, since
    `-y` skips pyinfra's change detection and with it everything a dry run shows. `env` is
    added to the lab's environment (another SECRETS_FILE, say)."""
    argv = [str(REPO / ".venv/bin/pyinfra")]
    if yes:
        argv.append("-y")
    if json_output:
        argv.append("--json")
    argv += ["inventories/lab.py", *args]
    started = time.monotonic()
    done, peak_mib = _run_measured(argv, {**lab_env(), **(env or {})}, timeout)
    seconds = time.monotonic() - started
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
    )


def _run_measured(
    argv: list[str], env: dict[str, str], timeout: float
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run `argv` like `subprocess.run`, and return its peak memory too (MiB), which
    `os.wait4` reports for that one process (pyinfra makes its SSH connections in-process);
    0 under gevent, which reaps the process before it can be asked."""
    proc = subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    fired = threading.Event()
    killer = threading.Timer(timeout, lambda: (fired.set(), proc.kill()))
    killer.start()
    peak_mib = 0.0
    with ThreadPoolExecutor(2) as pool:
        out = pool.submit(proc.stdout.read)
        err = pool.submit(proc.stderr.read)
        while True:  # polled: a blocking wait would stall a gevent-patched caller's readers
            try:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            except ChildProcessError:  # gevent reaps its children itself: no usage then
                proc.wait()
                break
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                peak_mib = usage.ru_maxrss / 1024
                break
            time.sleep(0.002)
        stdout, stderr = out.result(), err.result()
    killer.cancel()
    proc.stdout.close()
    proc.stderr.close()
    if fired.is_set():
        raise subprocess.TimeoutExpired(argv, timeout, stdout, stderr)
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr), peak_mib
