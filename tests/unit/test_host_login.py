"""How pyinfra reaches a host comes from its `hosts:` entry (`ssh_user`, `sudo`), with or
without an inventory file.

pyinfra reads `ssh_user` (connector data) and `_sudo` (a global argument) from host data;
group data is evaluated once per run, so group_data/all.py gives them for a run whose hosts
agree, and an inventory file gives each host its own (`oceanid.settings.inventory_host`).
These tests load inventories with pyinfra's own CLI code and run the real pyinfra CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import textwrap

import pytest
from pyinfra.api.arguments import pop_global_arguments
from pyinfra.connectors.ssh import SSHConnector
from pyinfra.context import ctx_config, ctx_state

from oceanid.preflight import load_inventory
from oceanid.settings import inventory_host, login_data
from tests.unit.conftest import REPO

PYINFRA = str(REPO / ".venv/bin/pyinfra")


def reached(inventory) -> dict[str, tuple[str | None, bool]]:
    """Per host: the SSH user its connector logs in as, and whether commands use sudo, once
    pyinfra has set up its state as the CLI does before connecting."""
    state = ctx_state.get()
    state.init(inventory, ctx_config.get())
    out = {}
    for host in inventory:
        assert isinstance(host.connector, SSHConnector)
        arguments, _ = pop_global_arguments(state, host, {})
        out[host.name] = (host.connector.data["ssh_user"], arguments["_sudo"])
    return out


def test_the_one_host_command_reaches_calypso_as_oceanid_with_sudo(monkeypatch):
    monkeypatch.chdir(REPO)
    assert reached(load_inventory("@ssh/calypso")) == {"@ssh/calypso": ("oceanid", True)}


def test_the_inventory_takes_each_hosts_login_from_its_entry(monkeypatch):
    monkeypatch.chdir(REPO)
    assert reached(load_inventory("inventory.py")) == {
        "tethys": (None, False),
        "styx": (None, False),
        "calypso": ("oceanid", True),
    }


def test_a_run_of_hosts_reached_differently_gets_no_run_wide_login():
    hosts = {"calypso": {"ssh_user": "oceanid", "sudo": True}}
    assert login_data(hosts, ["@ssh/calypso", "@ssh/tethys"]) == {}
    assert login_data(hosts, ["@ssh/calypso"]) == {"ssh_user": "oceanid", "_sudo": True}


def test_sudo_false_is_left_out_so_the_sudo_flag_still_works():
    assert login_data({"styx": {"sudo": False}}, ["styx"]) == {}


def test_a_later_group_data_files_hosts_replace_the_earlier(tmp_path):
    first, second = tmp_path / "a.py", tmp_path / "b.py"
    first.write_text('hosts = {"calypso": {"ssh_user": "oceanid", "sudo": True}}\n')
    second.write_text('hosts = {"calypso": {"sudo": True}}\n')
    host = inventory_host(first, second, ssh_config_file="/x")
    assert host("calypso") == ("calypso", {"ssh_config_file": "/x", "_sudo": True})
    assert host("tethys") == ("tethys", {"ssh_config_file": "/x"})


def site_with(tmp_path, hosts: str):
    """The production group data with another `hosts`, as an operator would edit it."""
    site = tmp_path / "site"
    (site / "group_data").mkdir(parents=True)
    text = (REPO / "group_data" / "all.py").read_text()
    start = text.index("\nhosts = {")
    end = text.index("\n}\n", start) + 3
    (site / "group_data" / "all.py").write_text(text[:start] + "\n" + hosts + text[end:])
    return site


def pyinfra(site, *args, path=None):
    env = {"PATH": path or os.environ["PATH"], "PYTHONPATH": str(REPO), "PYINFRA_PROGRESS": "off"}
    return subprocess.run(
        [PYINFRA, *args], cwd=site, env=env, capture_output=True, text=True, timeout=120
    )


def fake_sudo(tmp_path):
    """A `sudo` that records its arguments, then runs the command as it is."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "sudo"
    script.write_text(
        textwrap.dedent(f"""\
            #!/bin/sh
            echo "$@" >> {tmp_path}/sudo.log
            while [ "${{1#-}}" != "$1" ]; do shift; done
            exec "$@"
            """)
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return f"{bindir}:{os.environ['PATH']}"


@pytest.mark.parametrize("sudo", [True, False])
def test_a_real_pyinfra_run_uses_sudo_as_the_entry_says(tmp_path, sudo):
    """`pyinfra @local exec` with the entry's sudo and no --sudo: pyinfra wraps the command in
    sudo exactly when the host's entry asks for it."""
    site = site_with(tmp_path, f'hosts = {{"@local": {{"sudo": {sudo}}}}}')
    done = pyinfra(site, "-y", "@local", "exec", "--", "echo", "reached", path=fake_sudo(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "reached" in done.stdout + done.stderr
    log = tmp_path / "sudo.log"
    if sudo:
        assert "echo reached" in log.read_text()
    else:
        assert not log.exists()


def test_a_malformed_login_stops_pyinfra_before_it_connects(tmp_path):
    site = site_with(tmp_path, 'hosts = {"calypso": {"ssh_user": "Oceanid Admin"}}')
    done = pyinfra(site, "@ssh/calypso", "debug-inventory")
    assert done.returncode != 0
    assert "hosts.calypso.ssh_user: must be a Unix user name" in done.stderr
    assert "pattern" not in done.stderr  # words, not the regex
    assert "Traceback" not in done.stderr


def test_the_one_host_command_shows_the_login_in_pyinfras_inventory(tmp_path):
    site = tmp_path / "site"
    shutil.copytree(REPO / "group_data", site / "group_data")
    done = pyinfra(site, "@ssh/calypso", "debug-inventory")
    assert done.returncode == 0, done.stderr[-2000:]
    shown = done.stdout + done.stderr
    assert '"ssh_user": "oceanid"' in shown and '"_sudo": true' in shown


def test_the_labs_group_data_names_its_secrets_file_and_calypsos_login(tmp_path):
    """`pyinfra @ssh/calypso --group-data=inventories/group_data …` in a copy of the repository
    with what `make lab` leaves in .lab (pins and a key; the lab itself is not needed)."""
    site = tmp_path / "site"
    shutil.copytree(REPO / "group_data", site / "group_data")
    (site / "inventories/group_data").mkdir(parents=True)
    shutil.copy(REPO / "inventories/group_data/all.py", site / "inventories/group_data")
    (site / ".lab/ssh").mkdir(parents=True)
    pin = {"version": "1", "url": "http://mirror/{version}", "sha256": {"amd64": "a" * 64}}
    image = {"id": "sha256:" + "b" * 64, "url": "http://mirror/image.tar", "sha256": "c" * 64}
    pins = {"k3s": pin, "cloudflared": pin, "triton_image": image, "http_image": image}
    (site / ".lab/artifacts.json").write_text(json.dumps(pins))
    (site / ".lab/ssh/id_ed25519.pub").write_text("ssh-ed25519 AAAAC3Nza lab\n")
    done = pyinfra(site, "@ssh/calypso", "--group-data=inventories/group_data", "debug-inventory")
    assert done.returncode == 0, done.stderr[-2000:]
    shown = done.stdout + done.stderr
    assert f'"secrets_file": "{site / ".lab/secrets.yaml"}"' in shown
    assert '"ssh_user": "oceanid"' in shown and '"_sudo": true' in shown
