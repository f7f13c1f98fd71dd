"""The lab: boot real hosts, converge twice (the second must change nothing), verify with
testinfra, tear down and check nothing is left.

Needs root, systemd-nspawn and mmdebstrap (`make lab-deps`); CI installs them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lab import network, processes
from lab.converge import lab_env, pyinfra
from lab.topology import HOSTS, REPO, SSH_DIR

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab():
    up = subprocess.run(
        [sys.executable, "-m", "lab", "up", "--no-deploy"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    yield
    down = subprocess.run(
        [sys.executable, "-m", "lab", "down"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert down.returncode == 0, down.stderr


@pytest.fixture(scope="module")
def converged(lab):
    first = pyinfra("deploys/site.py")
    assert first.returncode == 0, first.output[-6000:]
    assert first.totals["error"] == 0 and not first.failed_hosts
    assert first.totals["success"] > 0, "the first converge changed nothing on fresh hosts"
    return first


def test_second_converge_changes_nothing(converged):
    second = pyinfra("deploys/site.py")
    assert second.returncode == 0, second.output[-6000:]
    assert second.totals["error"] == 0
    assert second.changed == {}, f"the second converge changed: {second.changed}"
    assert second.totals["success"] == 0


def test_dry_diff_run_shows_no_secret(converged):
    dry = pyinfra("deploys/site.py", "--dry", "--diff", "-vv", json_output=False)
    assert dry.returncode == 0, dry.output[-4000:]
    secrets = (REPO / ".lab" / "secrets.yaml").read_text()
    import yaml

    for key, value in yaml.safe_load(secrets).items():
        for line in str(value).strip().splitlines():
            assert line not in dry.output, f"{key} appears in --dry --diff -vv output"


def test_testinfra_checks_pass(converged):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/hosts",
            f"--ssh-config={SSH_DIR / 'config'}",
            "--hosts=" + ",".join(f"ssh://{h.name}" for h in HOSTS),
        ],
        cwd=REPO,
        env=lab_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-6000:]
    assert " passed" in done.stdout


def test_teardown_leaves_nothing(lab):
    """Runs last in this module: `lab down` removes every process, namespace and link."""
    down = subprocess.run(
        [sys.executable, "-m", "lab", "down"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert down.returncode == 0, down.stderr
    assert network.leftovers() == {"netns": [], "links": []}
    assert processes.names() == []
    assert not list(Path("/run/netns").glob("ocl-*")) if Path("/run/netns").exists() else True
    mounts = Path("/proc/mounts").read_text()
    assert ".lab/hosts" not in mounts and "/run/netns/ocl-" not in mounts
    for lab_host in HOSTS:
        assert not lab_host.rootfs.exists()
