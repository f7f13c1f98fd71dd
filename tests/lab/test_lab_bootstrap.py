"""`make bootstrap` (issue 23) for real: calypso3 is reached as root in the lab, so it stands in
for a fresh host; the bootstrap makes a second deploy user with the lab's key and the sudo rule,
which then logs in and runs sudo without a password, and a second bootstrap changes nothing.
Everything it made is removed afterwards, and the base role's record and rules put back."""

from __future__ import annotations

import json
import subprocess

import pytest

from lab.converge import pyinfra
from lab.topology import REPO
from tests.lab import ssh
from tests.lab.test_lab_commands import make

pytestmark = pytest.mark.lab

USER = "obootstrap"
SAVED = "/root/oceanid-bootstrap-test.tar"


def as_user(command: str) -> subprocess.CompletedProcess[str]:
    config = str(REPO / ".lab/ssh/config")
    return subprocess.run(
        ["ssh", "-F", config, "-o", "BatchMode=yes", "-l", USER, "calypso3", command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_bootstrap_makes_a_deploy_user_that_logs_in_with_sudo(converged):
    key = (REPO / ".lab/ssh/id_ed25519.pub").read_text().strip()
    args = f"ARGS=--data admin_user={USER} --data 'admin_ssh_keys={json.dumps([key])}'"
    # the base role's record and sudo rules as the converge left them: the bootstrap, run for
    # another admin_user, sweeps the lab admin's rule the record lists; put back afterwards
    saved = ssh("calypso3", f"tar -cpPf {SAVED} /etc/sudoers.d /var/lib/oceanid")
    assert saved.returncode == 0, saved.stderr
    try:
        done = make("bootstrap", "HOST=calypso3", "YES=1", args)
        assert done.returncode == 0, done.stdout + done.stderr
        login = as_user("sudo -n id -u")
        assert (login.returncode, login.stdout.strip()) == (0, "0"), login.stderr
        mode = ssh("calypso3", f"stat -c %a /etc/sudoers.d/{USER}").stdout.strip()
        assert mode == "440"
        again = pyinfra(  # what `make bootstrap` runs, with --json: a second one changes nothing
            "deploys/bootstrap.py",
            "--limit=calypso3",
            "--data=ssh_user=root",
            "--data=_sudo=False",
            f"--data=admin_user={USER}",
            f"--data=admin_ssh_keys={json.dumps([key])}",
        )
        assert again.returncode == 0 and again.totals["error"] == 0, again.output
        assert again.changed == {}, f"a second bootstrap changed: {again.changed}"
    finally:
        back = ssh(
            "calypso3",
            f"userdel -r {USER} 2>/dev/null; rm -f /etc/sudoers.d/{USER} "
            f"/var/lib/oceanid/authorized-keys.{USER} && tar -xpPf {SAVED} && rm -f {SAVED}",
        )
        assert back.returncode == 0, back.stderr
