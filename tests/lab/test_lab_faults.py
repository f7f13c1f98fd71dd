"""Faults a deploy must survive (issue 8, item 4): a host that is down, and a converge killed
in the middle of replacing a binary or building Triton's environment.

Each test breaks the converged lab on purpose and leaves it converged again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from deploys.gpu_host import triton
from lab import hosts, processes
from lab.converge import lab_env, pyinfra
from lab.topology import MIRROR_DIR, REPO, host
from tests.lab import ssh

pytestmark = pytest.mark.lab

SUDOERS = "/etc/sudoers.d/oceanid"  # a file the base role manages on every host


def wait_for(predicate, what: str, timeout: float = 120.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def converge_popen(*args: str) -> subprocess.Popen:
    """The real pyinfra CLI in the background, so a test can kill it mid-run."""
    argv = [str(REPO / ".venv/bin/pyinfra"), "-y", "inventories/lab.py", *args]
    return subprocess.Popen(
        argv, cwd=REPO, env=lab_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def sha256(name: str, path: str) -> str:
    return ssh(name, f"sudo sha256sum {path}").stdout.split(" ")[0]


def test_one_host_down_does_not_stop_the_others(converged):
    """styx is powered off: the site converge fixes every other host, names styx and exits
    non-zero; once styx is back, the next converge fixes it too, and then nothing changes."""
    styx = host("styx")
    for name in ("tethys", "styx"):  # drift on a host that is up, and on the one that goes down
        assert ssh(name, f"sudo rm -f {SUDOERS}").returncode == 0
    ssh("styx", "systemctl poweroff")
    wait_for(lambda: processes.running(hosts.record_name(styx)) is None, "styx to power off")
    try:
        run = pyinfra("deploys/site.py")
        assert run.returncode != 0, "a converge with a host down exited 0"
        assert run.failed_hosts == ["styx"], run.failed_hosts
        assert "styx" in run.output
        assert "Traceback" not in run.output
        assert ssh("tethys", f"sudo test -f {SUDOERS}").returncode == 0, "tethys was not fixed"
        assert ssh("calypso", "systemctl is-active tritonserver").stdout.strip() == "active"
    finally:
        hosts.boot(styx)
        hosts.wait_ready(styx, timeout=120)
    healed = pyinfra("deploys/site.py")
    assert healed.returncode == 0, healed.output[-4000:]
    assert any("styx" in names for names in healed.changed.values()), healed.changed
    assert ssh("styx", f"sudo test -f {SUDOERS}").returncode == 0
    again = pyinfra("deploys/site.py")
    assert again.returncode == 0 and again.changed == {}, again.changed


def served_cloudflared() -> Path:
    return next(MIRROR_DIR.rglob("cloudflared-linux-amd64"))


def test_killed_while_replacing_a_binary(converged):
    """SIGKILL to pyinfra while calypso downloads a new cloudflared: the installed binary is
    the old one, whole, and still runs; the next converge replaces it and then nothing
    changes. The mirror serves a FIFO, so the download is held open until the test lets go."""
    binary = "/usr/local/bin/cloudflared"
    served = served_cloudflared()
    original = served.read_bytes()
    ssh("calypso", f"echo '# local' | sudo tee -a {binary} >/dev/null")
    drifted = sha256("calypso", binary)
    served.unlink()
    os.mkfifo(served)
    run = converge_popen("deploys/gpu.py", "--limit", "calypso")
    try:
        wait_for(
            lambda: ssh("calypso", "pgrep -f 'cloudflared[.]oceanid-new'").returncode == 0,
            "calypso to start downloading cloudflared",
        )
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
        _release_reader(served)  # the mirror's thread blocked in open() gets an empty file
        served.unlink()
        served.write_bytes(original)
        served.chmod(0o755)
    assert sha256("calypso", binary) == drifted, "a killed converge changed the binary"
    assert "cloudflared" in ssh("calypso", f"{binary} --version").stdout
    assert ssh("calypso", "systemctl is-active cloudflared-node").stdout.strip() == "active"
    finished = pyinfra("deploys/gpu.py", "--limit", "calypso")
    assert finished.returncode == 0, finished.output[-4000:]
    assert sha256("calypso", binary) != drifted
    again = pyinfra("deploys/site.py")
    assert again.returncode == 0 and again.changed == {}, again.changed


def _release_reader(fifo: Path) -> None:
    """Open and close the FIFO's write end, so a reader waiting in open() reads EOF."""
    with contextlib.suppress(OSError):  # ENXIO: nobody has it open for reading
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def triton_ready(name: str) -> bool:
    code = ssh(name, "curl -s -o /dev/null -w '%{http_code}' localhost:8000/v2/health/ready")
    return code.stdout == "200"


def test_killed_while_building_tritons_environment(converged):
    """SIGKILL to pyinfra while pip builds calypso's Triton environment: Triton keeps serving
    from the environment it runs on, which is still whole (a restart comes back ready), and
    the next converge finishes the build; then nothing changes."""
    assert ssh("calypso", f"sudo rm -f {triton.STAMP}").returncode == 0  # forces a rebuild
    run = converge_popen("deploys/gpu.py", "--limit", "calypso")
    try:
        wait_for(
            lambda: ssh("calypso", "pgrep -f 'pip install'").returncode == 0,
            "calypso to start building Triton's environment",
            timeout=300,
        )
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
    time.sleep(3)  # the remote shell ends with its SSH session
    assert ssh("calypso", "systemctl is-active tritonserver").stdout.strip() == "active"
    assert triton_ready("calypso"), "Triton stopped answering after a killed environment build"
    # what Triton runs on must still be whole: a restart (a reboot, a crash) comes back ready
    assert ssh("calypso", "sudo systemctl restart tritonserver").returncode == 0
    wait_for(lambda: triton_ready("calypso"), "Triton to restart on the environment in use", 90)
    finished = pyinfra("deploys/gpu.py", "--limit", "calypso")
    assert finished.returncode == 0, finished.output[-4000:]
    wait_for(lambda: triton_ready("calypso"), "Triton to be ready on the new environment", 120)
    again = pyinfra("deploys/site.py")
    assert again.returncode == 0 and again.changed == {}, again.changed
