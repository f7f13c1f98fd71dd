"""The k3s nodes' host firewall in the lab (issue 19, item 4): k3s's ports on tethys answer the
cluster's nodes (styx, calypso) and not calypso2 (10.77.0.14, a GPU host and no node), SSH
answers everyone; the table survives a reboot and is loaded before k3s starts; a reload leaves
other tables alone; the servers run flannel's wireguard-native backend.

Connections are opened from the lab hosts themselves (bash's /dev/tcp under `timeout`): a port
the firewall drops times out, one that answers connects. styx's success on each port first
proves something listens there, so calypso2's failure is the firewall's.
"""

from __future__ import annotations

import time

import pytest
import yaml

from lab.converge import pyinfra
from tests.lab import ssh
from tests.lab.test_lab_k3s import UNITS, wait_ready

pytestmark = pytest.mark.lab

TETHYS = "10.77.0.11"
API, ENDPOINT = 6443, 7443  # k3s's API, and HAProxy's (the lab's k3s_lb_port)


def can_open(source: str, port: int, target: str = TETHYS) -> bool:
    check = f"timeout 3 bash -c '</dev/tcp/{target}/{port}' 2>/dev/null && echo open || echo shut"
    done = ssh(source, check)
    assert done.stdout.strip() in ("open", "shut"), done.stderr
    return done.stdout.strip() == "open"


def wait_open(source: str, port: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not can_open(source, port):
        assert time.monotonic() < deadline, f"{source} cannot open tethys:{port}"
        time.sleep(2)


def test_k3s_ports_answer_the_nodes_only(converged):
    for port in (API, ENDPOINT):
        assert can_open("styx", port), port  # something listens, and a node reaches it
        assert can_open("calypso", port), port
        assert not can_open("calypso2", port), port  # no node: dropped
    assert can_open("calypso2", 22)  # SSH is never touched
    table = ssh("tethys", "sudo nft list table inet oceanid")
    assert table.returncode == 0, table.stderr
    assert "10.77.0.12" in table.stdout and "10.77.0.13" in table.stdout
    assert "10.77.0.14" not in table.stdout
    for name in UNITS:
        unit = "oceanid-firewall.service"
        state = ssh(name, f"systemctl is-enabled {unit}; systemctl is-active {unit}").stdout
        assert state.split() == ["enabled", "active"], (name, state)


def test_a_reload_replaces_only_its_own_table(converged):
    """Another table (Docker's, k3s's iptables-nft rules) is still there after a reload."""
    added = ssh("tethys", "sudo nft add table ip lab_other && sudo nft list tables")
    assert added.returncode == 0 and "table ip lab_other" in added.stdout, added.stderr
    try:
        reload = ssh("tethys", "sudo systemctl restart oceanid-firewall && sudo nft list tables")
        assert reload.returncode == 0, reload.stderr
        tables = reload.stdout.splitlines()
        assert "table ip lab_other" in tables and tables.count("table inet oceanid") == 1
        assert not can_open("calypso2", API)
    finally:
        ssh("tethys", "sudo nft delete table ip lab_other")


def test_servers_run_wireguard_and_agents_name_it(converged):
    server = yaml.safe_load(ssh("tethys", "sudo cat /etc/rancher/k3s/config.yaml").stdout)
    assert server["flannel-backend"] == "wireguard-native"
    agent = ssh("styx", "sudo cat /etc/rancher/k3s/config.yaml").stdout
    assert "flannel-backend" not in yaml.safe_load(agent)  # a server key: agents take it
    assert "# flannel-backend (set on the servers, read from them at start): wireguard-native" in (
        agent
    )


def test_after_a_reboot_the_table_is_back_before_k3s_and_a_converge_changes_nothing(converged):
    reboot = pyinfra("--limit", "tethys", "server.reboot")
    assert reboot.returncode == 0, reboot.output[-4000:]
    show = "systemctl show --value -p ActiveEnterTimestampMonotonic oceanid-firewall.service; "
    show += "systemctl show --value -p ExecMainStartTimestampMonotonic k3s.service"
    firewall_at, k3s_at = (int(v) for v in ssh("tethys", show).stdout.split())
    assert 0 < firewall_at < k3s_at, (firewall_at, k3s_at)  # loaded before k3s started
    wait_open("styx", API)
    assert not can_open("calypso2", API)
    assert not can_open("calypso2", ENDPOINT)
    wait_ready(UNITS)
    again = pyinfra("deploys/site.py")
    assert again.returncode == 0, again.output[-4000:]
    assert again.changed == {}, again.changed
