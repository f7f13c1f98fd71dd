"""oceanid.sshtarget: the OpenSSH arguments that reach a host as pyinfra reaches it, from the
real inventories; what OpenSSH makes of them is read back with `ssh -G` (OpenSSH's own
resolution of its config, which contacts no host)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lab import keys
from oceanid import sshtarget

REPO = Path(__file__).resolve().parents[2]


def resolved(args: list[str]) -> dict[str, str]:
    """What OpenSSH would connect to with these arguments (`ssh -G`: no connection)."""
    done = subprocess.run(["ssh", "-G", *args], capture_output=True, text=True, check=True)
    config: dict[str, str] = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition(" ")
        config.setdefault(key, value)
    return config


def test_production_reaches_tethys_by_the_operators_alias() -> None:
    assert sshtarget.target("inventory.py", "tethys") == ["tethys"]
    assert sshtarget.target("inventory.py") == ["tethys"]  # the first k3s server
    assert sshtarget.target("inventory.py", "calypso") == ["oceanid@calypso"]  # hosts: entry


def test_lab_reaches_tethys_through_the_labs_ssh_config(tmp_path, monkeypatch) -> None:
    """inventories/lab.py as it is, loaded where it loads (a namespace of the test's own with
    the bridge it checks for), with an SSH config the lab's own code writes (lab/keys.py)."""
    monkeypatch.setattr(keys, "SSH_DIR", tmp_path)
    keys.ensure()
    # the lab's group data reads its artifacts' pins (.lab/artifacts.json) and the operators'
    # key (.lab/ssh/id_ed25519.pub), which only `make lab` writes: a placeholder of that shape
    # and this test's key on a tmpfs over .lab, in the namespace only (a fresh clone has
    # neither, and a real lab's stay untouched)
    pin = {"version": "v0", "url": "http://10.77.0.1:8080/{version}", "sha256": {"amd64": "0" * 64}}
    image = {"id": "sha256:" + "0" * 64, "url": "http://10.77.0.1:8080/i.tar", "sha256": "0" * 64}
    pins = {"k3s": pin, "cloudflared": pin, "triton_image": image, "http_image": image}
    (tmp_path / "artifacts.json").write_text(json.dumps(pins))
    lab = REPO / ".lab"
    lab.mkdir(exist_ok=True)
    code = "from oceanid.sshtarget import main; raise SystemExit(main())"
    shell = (
        "ip link add ocl-br0 type bridge && mount -t sysfs sysfs /sys && "
        f"mount -t tmpfs oceanid-test {lab} && cp {tmp_path / 'artifacts.json'} {lab}/ && "
        f"mkdir {lab}/ssh && cp {tmp_path / 'id_ed25519.pub'} {lab}/ssh/ && "
        f'exec {sys.executable} -c "{code}" inventories/lab.py tethys'
    )
    done = subprocess.run(
        ["unshare", "-rnm", "sh", "-c", shell],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"OCEANID_LAB_SSH_CONFIG": str(tmp_path / "config"), "PATH": "/usr/sbin:/usr/bin"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    args = done.stdout.split()
    assert args == ["-F", str(tmp_path / "config"), "tethys"]
    ssh = resolved(args)
    assert (ssh["hostname"], ssh["user"], ssh["port"]) == ("10.77.0.11", "root", "22")
    assert ssh["identityfile"] == str(tmp_path / "id_ed25519")
    assert ssh["userknownhostsfile"] == str(tmp_path / "known_hosts")


def test_every_connection_key_pyinfra_reads_becomes_its_openssh_option() -> None:
    data = {
        "ssh_hostname": "10.0.0.5",
        "ssh_user": "admin",
        "ssh_port": 2222,
        "ssh_key": "/keys/id ed25519",
        "ssh_config_file": "/etc/oceanid/ssh config",
        "ssh_known_hosts_file": "/etc/oceanid/known_hosts",
        "ssh_strict_host_key_checking": "yes",
    }
    args = sshtarget.ssh_args("tethys", data)
    assert args == [
        "-F", "/etc/oceanid/ssh config",
        "-o", "UserKnownHostsFile=/etc/oceanid/known_hosts",
        "-o", "StrictHostKeyChecking=yes",
        "-p", "2222",
        "-i", "/keys/id ed25519",
        "admin@10.0.0.5",
    ]  # fmt: skip
    ssh = resolved(args[2:])  # (the config file does not exist here)
    assert (ssh["hostname"], ssh["user"], ssh["port"]) == ("10.0.0.5", "admin", "2222")
    assert sshtarget.ssh_args("@ssh/tethys", {}) == ["tethys"]


def test_a_password_is_refused_not_passed() -> None:
    with pytest.raises(sshtarget.TargetError, match="ssh_password/ssh_key_password"):
        sshtarget.ssh_args("tethys", {"ssh_password": "hunter2"})


def test_a_host_not_in_the_inventory_is_one_line_naming_its_hosts(capsys) -> None:
    assert sshtarget.main(["inventory.py", "thetys"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "ssh target: no host 'thetys' in inventory.py (its hosts: tethys, styx, calypso); "
        "set HOST to one of them\n"
    )
