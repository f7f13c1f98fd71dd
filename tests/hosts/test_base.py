"""testinfra checks of the base every host gets (run against the lab or production).

`pytest tests/hosts --hosts=ssh://tethys,… --ssh-config=…`; these read the hosts
independently of pyinfra, over their own SSH connection.
"""

import pytest

ADMIN = "oceanid"
BASE_PACKAGES = ("ca-certificates", "curl", "gnupg", "jq", "sudo")


def test_admin_account(host):
    user = host.user(ADMIN)
    assert user.exists
    assert user.home == f"/home/{ADMIN}"
    assert user.shell == "/bin/bash"


def test_sudo_rule_is_valid_and_private(host):
    rule = host.file(f"/etc/sudoers.d/{ADMIN}")
    assert rule.is_file
    assert (rule.user, rule.group, rule.mode) == ("root", "root", 0o440)
    with host.sudo():
        assert host.run("visudo -cq").rc == 0
        listing = host.check_output(f"sudo -l -U {ADMIN}")
    assert "NOPASSWD: ALL" in listing


def test_no_staging_leftovers(host):
    with host.sudo():
        leftovers = host.check_output(
            "find /etc /home /root -name '*.oceanid-new' -o -path '*/.oceanid-staging/*' | head"
        )
    assert leftovers == ""


@pytest.mark.parametrize("package", BASE_PACKAGES)
def test_base_packages(host, package):
    assert host.package(package).is_installed


def test_sshd_running(host):
    assert host.service("ssh").is_running
