"""deploys/bootstrap.py (issue 23): the base role's account, keys and sudo rule, planned for a
host reached as root, with settings only; a dry run with the real pyinfra on `@local` (reads
this machine, changes nothing). The lab test tests/lab/test_lab_bootstrap.py runs it for real."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOa0dS3yF0bZbWxRf2cXn5b0V8sMqk2lKJm2nJ7rQ0sX op@laptop"


def site(tmp_path: Path, extra: str) -> Path:
    (tmp_path / "group_data").mkdir()
    shutil.copy(REPO / "group_data" / "all.py", tmp_path / "group_data" / "all.py")
    with (tmp_path / "group_data" / "all.py").open("a") as data:
        data.write(extra)
    (tmp_path / "inventory.py").write_text('hosts = ["@local"]\n')
    return tmp_path


def dry_run(where: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REPO / ".venv" / "bin" / "pyinfra"), "--dry", "--diff", "inventory.py"]
        + [str(REPO / "deploys" / "bootstrap.py")],
        cwd=where,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "PYINFRA_PROGRESS": "off"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def absent_user() -> str:
    name = "obootstrap"
    if subprocess.run(["id", name], capture_output=True).returncode == 0:
        pytest.skip(f"{name} exists on this machine")
    return name


def test_it_plans_the_account_keys_and_sudo_rule_with_no_secret(tmp_path, absent_user):
    where = site(tmp_path, f'admin_user = "{absent_user}"\nadmin_ssh_keys = ["{KEY}"]\n')
    done = dry_run(where)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert f"Operators' account {absent_user}" in out
    assert f"/etc/sudoers.d/{absent_user}" in out
    assert f"/home/{absent_user}/.ssh/authorized_keys" in out
    assert "preflight" not in out  # no secret was asked for: settings are enough


def test_without_a_key_it_refuses_before_anything(tmp_path, absent_user):
    done = dry_run(site(tmp_path, f'admin_user = "{absent_user}"\nadmin_ssh_keys = []\n'))
    assert done.returncode != 0
    assert "bootstrap: admin_ssh_keys is empty, so obootstrap could not log in" in (
        done.stdout + done.stderr
    )
