"""Start the lab's long-running processes detached, and end exactly those again.

Each process gets a pid file and a record of its command line; teardown signals a PID
only while /proc still shows that command line, so a recycled PID is never hit.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from lab.topology import LAB_DIR, LOG_DIR, REPO, RUN_DIR


def _record(name: str) -> Path:
    return RUN_DIR / f"{name}.json"


def cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def start(
    name: str, argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> int:
    """Start `argv` in its own session, logging to .lab/logs/<name>.log."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = (LOG_DIR / f"{name}.log").open("ab")
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    log.close()
    _record(name).write_text(json.dumps({"pid": proc.pid, "argv": argv}))
    return proc.pid


def running(name: str) -> int | None:
    """The PID of `name` if the process we started is still alive."""
    try:
        record = json.loads(_record(name).read_text())
    except (OSError, ValueError):
        return None
    pid = record["pid"]
    return pid if cmdline(pid) == record["argv"] else None


def lab_owned() -> list[int]:
    """Live processes of this lab, found without their records: any whose command line names
    this checkout's .lab folder, and the host supervisors (`-m lab.supervise`) running in it.

    A run killed between starting a process and writing its record leaves such processes;
    they are ours all the same, and nothing outside this checkout matches.
    """
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        argv = cmdline(pid)
        if not argv or not _not_zombie(pid):
            continue
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            cwd = ""
        text = " ".join(argv)
        if str(LAB_DIR) in text or ("lab.supervise" in argv and cwd == str(REPO)):
            found.append(pid)
    return found


def terminate(pids: list[int], timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL what is still there after `timeout`."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for pid in wait_gone(pids, timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_gone(pids, 2.0)


def names() -> list[str]:
    return sorted(p.stem for p in RUN_DIR.glob("*.json")) if RUN_DIR.is_dir() else []


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if Path(f"/proc/{p}").exists() and _not_zombie(p)]
    return alive


def _not_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def stop(name: str, *, timeout: float = 5.0) -> bool:
    """SIGTERM our process (and its session), SIGKILL after `timeout`. True if it was up."""
    pid = running(name)
    _record(name).unlink(missing_ok=True)
    if pid is None:
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    if wait_gone([pid], timeout):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        wait_gone([pid], 2.0)
    return True
