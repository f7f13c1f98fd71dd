"""The lab inventory works on its own, as typed: its group data names the lab's secrets file,
so `pyinfra inventories/lab.py …`, `make lab-check` and `pyinfra @ssh/calypso …` with the
lab's data need no SECRETS_FILE; and calypso is reached as `oceanid` with sudo because its
`hosts:` entry says so, without `--sudo`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lab.converge import lab_env
from lab.topology import REPO
from tests.lab import lab_secret_lines

pytestmark = pytest.mark.lab

PYINFRA = str(REPO / ".venv/bin/pyinfra")


def without_secrets_file() -> dict[str, str]:
    env = {k: v for k, v in lab_env().items() if k != "SECRETS_FILE"}
    assert "SECRETS_FILE" not in env
    return env


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), cwd=REPO, env=without_secrets_file(), capture_output=True,
                          text=True, timeout=900, check=False)  # fmt: skip


def assert_no_secret(output: str) -> None:
    for key, line in lab_secret_lines():
        assert line not in output, f"{key} appears in the output"


def test_lab_check_without_secrets_file(converged):
    done = run(sys.executable, "-m", "oceanid.preflight", "inventories/lab.py")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("check: inventories/lab.py: ok: 5 hosts")


def test_lab_inventory_converges_without_secrets_file_and_changes_nothing(converged):
    done = run(PYINFRA, "-y", "--json", "inventories/lab.py", "deploys/site.py")
    assert done.returncode == 0, done.stderr[-4000:]
    totals = json.loads(done.stdout)["results"]["totals"]
    assert totals["success"] == 0 and totals["error"] == 0 and totals["no_change"] > 0, totals
    assert_no_secret(done.stdout + done.stderr)


def test_lab_inventory_dry_diff_without_secrets_file(converged):
    # no -y: it would skip the change detection that a dry run exists to show
    done = run(PYINFRA, "inventories/lab.py", "deploys/site.py", "--dry", "--diff")
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Traceback" not in done.stderr
    assert_no_secret(done.stdout + done.stderr)


def test_one_gpu_host_with_the_labs_data_without_secrets_file_or_sudo_flag(converged):
    done = run(PYINFRA, "-y", "--json", f"--data=ssh_config_file={REPO / '.lab/ssh/config'}",
               "--group-data=inventories/group_data", "@ssh/calypso", "deploys/gpu.py")  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    totals = json.loads(done.stdout)["results"]["totals"]
    assert totals["success"] == 0 and totals["error"] == 0 and totals["no_change"] >= 10, totals
