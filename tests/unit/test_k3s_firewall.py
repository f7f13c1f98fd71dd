"""The k3s nodes' host firewall (deploys/k3s/firewall.py): the rule set as data and as nft text,
what the roles declare, and the rules loaded by the real nft in a network namespace this test
creates (user and network namespaces: nothing of this machine's own ruleset is read or touched).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from deploys.k3s import agent, config, firewall, node, server
from oceanid.model import HostView
from oceanid.preflight import PreflightError, check
from tests.unit.test_k3s_roles import AGENTS, GPU, SERVERS, make_site  # noqa: F401 (fixture)

LAB = {  # the lab's addresses (inventories/group_data/all.py)
    "tethys": {"k3s": {"address": "10.77.0.11", "node_ip": "10.77.0.11"}},
    "styx": {"k3s": {"address": "10.77.0.12", "node_ip": "10.77.0.12"}},
    "calypso": {"k3s": {"address": "10.77.0.13", "node_ip": "10.77.0.13"}},
    "calypso2": {"k3s": {"node_ip": "10.77.0.14"}},  # k3s data, but in no k3s group
}
NODES = {"tethys": {SERVERS}, "styx": {AGENTS}, "calypso": {AGENTS, GPU}}


@pytest.fixture
def lab_site(make_site, data):  # noqa: F811 (the fixture imported above)
    def make(inventory=None, **changes):
        for name, entry in LAB.items():
            host = data["hosts"].setdefault(name, {})
            host["k3s"] = {**entry["k3s"], **host.get("k3s", {})}
        return make_site(inventory or NODES, **changes)

    return make


def _rules(site, host: str = "tethys") -> str:
    plan = site.hosts[host]
    role = server.declare(plan, site) if host == "tethys" else agent.declare(plan, site)
    return role.desired.file(firewall.RULES).content.decode()


def test_k3s_ports_are_dropped_for_everyone_but_nodes_loopback_and_pods() -> None:
    text = firewall.render(firewall.ruleset(["10.77.0.12", "10.77.0.11"]))
    chain = text.split("chain input {", 1)[1]
    lines = [line.strip() for line in chain.splitlines() if line.strip()]
    assert lines[1:6] == [
        "ct state established,related accept",
        'iif "lo" accept',
        'iifname "cni0" accept',
        "ip saddr @nodes_v4 accept",
        "ip6 saddr @nodes_v6 accept",
    ]
    assert "tcp dport { 2379-2380, 6443, 10250 } counter drop" in lines
    assert "udp dport { 8472, 51820-51821 } counter drop" in lines
    assert "elements = { 10.77.0.11, 10.77.0.12 }" in text
    assert "policy accept" in lines[0]  # any other port (SSH) is this chain's no business
    assert "22" not in chain and "flush" not in text


def test_the_file_replaces_only_its_own_table_in_one_transaction() -> None:
    text = firewall.render(firewall.ruleset(["2001:db8::2", "10.0.0.1"]))
    body = [line for line in text.splitlines() if not line.startswith("#")]
    assert body[:3] == [
        "table inet oceanid {}",
        "delete table inet oceanid",
        "table inet oceanid {",
    ]
    assert [line for line in body if line.startswith("table") or "delete" in line] == body[:3]
    assert "elements = { 2001:db8::2 }" in text and "elements = { 10.0.0.1 }" in text


def test_the_set_is_every_k3s_nodes_inventory_address_and_no_other_host(lab_site) -> None:
    site = lab_site()
    assert firewall.node_addresses(site) == ["10.77.0.11", "10.77.0.12", "10.77.0.13"]
    for host in ("tethys", "styx", "calypso"):  # the same table on servers and agents
        assert "elements = { 10.77.0.11, 10.77.0.12, 10.77.0.13 }" in _rules(site, host)
    assert "10.77.0.14" not in _rules(lab_site({**NODES, "calypso2": set()}))


def test_a_node_removed_from_the_inventory_is_gone_from_the_set(lab_site) -> None:
    site = lab_site({"tethys": {SERVERS}, "calypso": {AGENTS, GPU}})
    text = _rules(site)
    assert "elements = { 10.77.0.11, 10.77.0.13 }" in text and "10.77.0.12" not in text


def test_external_addresses_are_nodes_too_and_names_are_not_addresses(lab_site, data) -> None:
    data["hosts"]["styx"] = {"k3s": {"address": "styx.example.net", "node_ip": "10.77.0.12",
                                     "node_external_ip": "2001:db8::12"}}  # fmt: skip
    site = lab_site()
    assert firewall.node_addresses(site) == [
        "10.77.0.11",
        "10.77.0.12",
        "2001:db8::12",
        "10.77.0.13",
    ]
    assert "elements = { 2001:db8::12 }" in _rules(site)


def test_the_api_endpoints_port_is_dropped_only_with_the_balancer(lab_site) -> None:
    assert "tcp dport { 2379-2380, 6443, 7443, 10250 }" in _rules(lab_site(lb=True))
    assert "tcp dport { 2379-2380, 6443, 10250 }" in _rules(lab_site(lb=False))


def test_every_node_declares_nftables_the_checked_file_and_the_boot_unit(lab_site) -> None:
    site = lab_site()
    declared = server.declare(site.hosts["tethys"], site)
    joining = agent.declare(site.hosts["styx"], site)
    tethys, inputs, before_start = declared.desired, declared.inputs, declared.before_start
    styx, agent_inputs = joining.desired, joining.inputs
    for role, restarts in ((tethys, inputs), (styx, agent_inputs)):
        assert firewall.PACKAGE in role.packages and firewall.UNIT in role.units
        rules = role.file(firewall.RULES)
        assert rules.validate == "nft -c -f {path}"  # checked before it replaces the old one
        assert firewall.RULES not in restarts and firewall.UNIT_FILE not in restarts
        unit = role.file(firewall.UNIT_FILE).content.decode()
        assert "Before=network-pre.target shutdown.target k3s.service k3s-agent.service" in unit
        assert "WantedBy=sysinit.target" in unit and "ExecStop" not in unit
        assert f"ExecStart=/usr/sbin/nft -f {firewall.RULES}\n" in unit
    assert firewall.RULES in before_start  # written, and loaded, before k3s starts


def test_a_k3s_node_without_an_ip_address_is_refused_before_any_host(data, lab_secrets, tmp_path):
    data.update(secret_sources=["file"], manage_dns=False, enable_node_provisioning=True)
    data["hosts"]["styx"] = {"k3s": {"address": "styx.example.net"}}
    path = tmp_path / "secrets.yaml"
    path.write_text(json.dumps(lab_secrets))
    path.chmod(0o600)
    data["hosts"]["tethys"] = {"k3s": {"node_ip": "10.77.0.11", "address": "tethys.example.net"}}
    views = [HostView("tethys", frozenset({SERVERS}), data),
             HostView("styx", frozenset({AGENTS}), data)]  # fmt: skip
    with pytest.raises(PreflightError) as err:
        check(views, environ={"SECRETS_FILE": str(path)})
    assert err.value.problems == [
        "hosts.styx.k3s: no IP address; the nodes' firewalls admit k3s's ports only from the "
        "cluster's nodes, by address: set hosts.styx.k3s.node_ip (or address) to the IP address "
        "the other nodes see its traffic come from"
    ]
    data["enable_node_provisioning"] = False  # nothing of k3s, the firewall included, is deployed
    check(views, environ={"SECRETS_FILE": str(path)})


def test_servers_run_wireguard_and_agents_restart_when_it_changes(lab_site) -> None:
    site = lab_site()
    assert node.config_document(site.hosts["tethys"], site, "server")["flannel-backend"] == (
        "wireguard-native"
    )
    styx = node.config_text(site.hosts["styx"], site, "agent")
    assert "flannel-backend" not in node.config_document(site.hosts["styx"], site, "agent")
    other = lab_site(k3s_flannel_backend="vxlan")
    assert node.config_text(other.hosts["styx"], other, "agent") != styx
    assert config.agent_note("wireguard-native") in styx


# --- the real nft, in namespaces of this test's own -------------------------------------------


def _namespaces_work() -> str | None:
    """Why the namespace tests cannot run here, or None."""
    for tool in ("nft", "unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make lab-deps installs nftables and iproute2)"
    done = subprocess.run(["unshare", "-rn", "nft", "list", "ruleset"], capture_output=True,
                          text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        return f"no user and network namespaces here: {done.stderr.strip()}"
    return None


WHY_NOT = _namespaces_work()
needs_namespaces = pytest.mark.skipif(WHY_NOT is not None, reason=str(WHY_NOT))


@needs_namespaces
def test_nft_accepts_the_rendered_file(lab_site, tmp_path: Path) -> None:
    """`nft -c`, as the deploy runs it before the file replaces the old one."""
    path = tmp_path / "firewall.nft"
    path.write_text(_rules(lab_site()))
    done = subprocess.run(["unshare", "-rn", "nft", "-c", "-f", str(path)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    path.write_text(_rules(lab_site()).replace("counter drop", "counter dorp"))
    refused = subprocess.run(["unshare", "-rn", "nft", "-c", "-f", str(path)],
                             capture_output=True, text=True, check=False)  # fmt: skip
    assert refused.returncode != 0  # the check the deploy relies on does refuse a bad file


# One network namespace is "the node" (this script's, by unshare -rn), a second one "the
# others", joined by a veth pair: 10.99.0.1 is the node, 10.99.0.2 and 10.99.0.3 two sources.
SCENARIO = textwrap.dedent(
    r"""
    set -eu
    ip link set lo up
    unshare -n sleep 60 & others=$!
    mine=$(readlink /proc/self/ns/net)
    while [ "$(readlink /proc/$others/ns/net)" = "$mine" ]; do sleep 0.05; done
    ip link add fw0 type veth peer name fw1 netns "$others"
    ip addr add 10.99.0.1/24 dev fw0 && ip link set fw0 up
    nsenter -t "$others" -n sh -c 'ip link set lo up; ip addr add 10.99.0.2/24 dev fw1;
        ip addr add 10.99.0.3/24 dev fw1; ip link set fw1 up'
    # another table, as Docker's or k3s's iptables-nft rules: it must survive every load
    nft add table ip theirs
    nft add chain ip theirs input '{ type filter hook input priority 0; policy accept; }'
    "$PYTHON" "$LISTEN" 6443 7443 22 & listener=$!
    sleep 0.5
    probe() {  # source and port -> open or refused, from the other namespace (or this one)
        if [ "$1" = local ]; then "$PYTHON" "$CONNECT" 127.0.0.1 10.99.0.1 "$2"
        else nsenter -t "$others" -n "$PYTHON" "$CONNECT" "$1" 10.99.0.1 "$2"; fi
    }
    report() {
        for case in $CASES; do
            echo "$1 $case $(probe "${case%%:*}" "${case##*:}")"
        done
    }
    report none
    nft -c -f "$FIRST" && nft -f "$FIRST"
    report first
    nft -c -f "$SECOND" && nft -f "$SECOND"
    report second
    echo "tables $(nft list tables | tr '\n' ' ')"
    kill "$listener" "$others"
    """
)
# source:port; "local" is this namespace itself (loopback)
CASES = ("10.99.0.2:6443", "10.99.0.3:6443", "10.99.0.3:7443", "10.99.0.3:22", "local:6443")
LISTEN = """
import socket, sys, threading
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(16)
    while True:
        s.accept()[0].close()
for port in sys.argv[1:]:
    threading.Thread(target=serve, args=(int(port),), daemon=True).start()
threading.Event().wait()
"""
CONNECT = """
import socket, sys
s = socket.socket(); s.settimeout(0.7)
try:
    s.bind((sys.argv[1], 0)); s.connect((sys.argv[2], int(sys.argv[3]))); print("open")
except OSError:
    print("refused")
"""


@needs_namespaces
def test_loaded_rules_admit_nodes_refuse_others_and_follow_the_inventory(
    lab_site, tmp_path: Path
) -> None:
    """The rendered files, loaded by nft as the unit loads them: a node's address reaches 6443,
    another address does not (nor the endpoint's port), SSH and loopback are untouched; the
    second load (10.99.0.2 removed from the inventory, 10.99.0.3 added) swaps them, and the
    other table is still there."""
    first = firewall.render(firewall.ruleset(["10.99.0.2"], 7443))
    second = firewall.render(firewall.ruleset(["10.99.0.3"], 7443))
    files = {"FIRST": first, "SECOND": second, "LISTEN": LISTEN, "CONNECT": CONNECT}
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHON": sys.executable}
    env["CASES"] = " ".join(CASES)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
        env[name] = str(tmp_path / name)
    done = subprocess.run(["unshare", "-rn", "bash", "-c", SCENARIO], env=env,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    results: dict[str, list[str]] = {}
    tables: list[str] = []
    for line in done.stdout.splitlines():
        if line.startswith("tables "):
            tables = line.split(maxsplit=1)[1].split()
        else:
            stage, case, verdict = line.split()
            results.setdefault(stage, []).append(f"{case} {verdict}")
    open_, shut = "open", "refused"
    expected = {  # CASES in order: node 10.99.0.2, other 10.99.0.3 (API, endpoint, SSH), local
        "none": [open_, open_, open_, open_, open_],
        "first": [open_, shut, shut, open_, open_],
        "second": [shut, open_, open_, open_, open_],
    }
    assert results == {
        stage: [f"{case} {verdict}" for case, verdict in zip(CASES, verdicts, strict=True)]
        for stage, verdicts in expected.items()
    }
    assert " ".join(tables) == "table ip theirs table inet oceanid"
