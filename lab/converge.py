"""Run the real pyinfra CLI against the lab and read its JSON totals."""

from __future__ import annotations

import json
import os
import subprocess
import time
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
    done = subprocess.run(
        argv,
        cwd=REPO,
        env={**lab_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
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
        done.returncode, seconds, totals, failed, changed, (done.stdout or "") + (done.stderr or "")
    )
