"""The k3s part of the site as pyinfra plans it: which operations run where, in which order,
and that a converged cluster plans no change.

pyinfra's CLI orders operations by the call stack's line numbers and then interleaves hosts by
depth; these tests queue the roles in a pyinfra State in CLI mode, as `pyinfra inventory.py
deploys/site.py` does, with the facts answered from values (fresh hosts, or converged ones built
from the roles' own manifests) and no host contacted.
"""

from __future__ import annotations

import hashlib
import json

import pyinfra
import pytest
import yaml
from pyinfra.api import (
    Config,
    FileUploadCommand,
    FunctionCommand,
    Inventory,
    State,
    StringCommand,
)
from pyinfra.api.state import StateStage
from pyinfra.context import ctx_host, ctx_state

from deploys import k3s
from deploys.k3s import agent, config, server
from facts.k3s import API_UNAVAILABLE_MARKER, SERVER_AGENT_TOKEN
from facts.managed import ManagedState, PathState, empty_state
from oceanid.model import HostView
from oceanid.preflight import check
from operations import _desired
from operations.k3s import INSTALL_PROBE, MANAGED_LABELS, MANAGED_TAINTS, NODES_PROBE
from tests.unit.conftest import with_node_ips

INVENTORY = {"tethys": {"k3s_servers"}, "styx": {"k3s_agents"}, "calypso": {"k3s_agents"}}
AGENT_SECRET = "k3s-agent-secret-generated-on-tethys"  # what the first server generated


@pytest.fixture(autouse=True)
def _cli_mode(monkeypatch):
    monkeypatch.setattr(pyinfra, "is_cli", True)
    _desired.STATE_CACHE.clear()
    yield
    _desired.STATE_CACHE.clear()


@pytest.fixture
def site(data, lab_secrets, tmp_path):
    def make(provisioning: bool = True, token: bool = True):
        data.update(secret_sources=["file"], manage_dns=False)
        data.update(enable_node_provisioning=provisioning, enable_control_plane_lb=provisioning)
        path = tmp_path / "secrets.yaml"
        secrets = (
            lab_secrets if token else {k: v for k, v in lab_secrets.items() if k != "k3s_token"}
        )
        path.write_text(yaml.safe_dump(secrets))
        path.chmod(0o600)
        with_node_ips(data, INVENTORY)
        views = [HostView(n, frozenset(g), data) for n, g in INVENTORY.items()]
        return check(views, environ={"SECRETS_FILE": str(path)})

    return make


def _fresh(host_name: str, site) -> dict:
    """A host without k3s: the role's fact, with what its probes print there."""
    probes = {
        INSTALL_PROBE: ["version -", "token -", "token-file -", "agent-token-file -"],
        NODES_PROBE: [API_UNAVAILABLE_MARKER],
    }
    return {ManagedState: {**empty_state(), "arch": "amd64", "probes": probes}}


def _converged(host_name: str, site) -> dict:
    """The facts of a node on which the roles already ran."""
    plan = site.hosts[host_name]
    role = (
        server.declare(plan, site).desired
        if "k3s_servers" in plan.roles
        else agent.declare(plan, site).desired
    )
    paths: dict = {d.path: PathState("directory", "0755", "root", "root") for d in role.directories}
    for f in role.files:
        paths[f.path] = PathState("file", f.mode.zfill(4), f.user, f.group, f.sha256)
    for b in role.binaries:
        paths[b.path] = PathState("file", "0755", "root", "root", b.sha256["amd64"])
    record = (json.dumps(role.declared(), indent=1, sort_keys=True) + "\n").encode()
    nodes = []
    for name, want in k3s.cluster.wanted_labels(site).items():
        taints = []
        for text in want["taints"]:
            key_value, _, effect = text.rpartition(":")
            key, _, value = key_value.partition("=")
            taints.append({"key": key, "value": value or None, "effect": effect})
        nodes.append(  # as `kubectl get nodes -o json` lists it
            {
                "metadata": {
                    "name": name,
                    "labels": {"kubernetes.io/hostname": name, **want["labels"]},
                    "annotations": {
                        MANAGED_LABELS: ",".join(sorted(want["labels"])),
                        MANAGED_TAINTS: ",".join(
                            sorted(f"{t['key']}:{t['effect']}" for t in taints)
                        ),
                    },
                },
                "spec": {"taints": [{k: v for k, v in t.items() if v} for t in taints]},
                "status": {
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "nodeInfo": {"kubeletVersion": "v1.33.4+k3s1"},
                },
            }
        )
    token = site.secrets.get("k3s_token")
    secret = token.split("::server:")[1] if token else ""
    token_sha256 = hashlib.sha256(secret.encode()).hexdigest() if token else "-"
    agent_sha256 = hashlib.sha256(AGENT_SECRET.encode()).hexdigest()
    install = [
        "version k3s version v1.33.4+k3s1 (148243c4)",
        "unit k3s.service active",
        f"token {token_sha256}",
    ]
    if "k3s_servers" in plan.roles:  # the server secret, and the agent secret beside it
        install += [f"token-file bare {token_sha256}", f"agent-token-file bare {agent_sha256}"]
    else:  # an agent: the agent token in full, copied from the first server
        install += [f"token-file node {agent_sha256}", "agent-token-file -"]
    return {
        ManagedState: {
            **empty_state(),
            "arch": "amd64",
            "paths": paths,
            "packages": {name: "1" for name in role.packages},
            "record": record,
            "units": {u: {"enabled": "enabled", "active": "active"} for u in role.units},
            "probes": {  # what K3sInstall's and K3sNodes' commands print there
                INSTALL_PROBE: install,
                NODES_PROBE: json.dumps({"items": nodes}, indent=2).splitlines(),
            },
        },
    }


_facts_read: dict[str, list[str]] = {}  # host -> the fact classes it was asked for, in order


def _counting(host_name: str, facts: dict):
    """The fake host's get_fact: answers from `facts`, recording each call by class."""
    _facts_read[host_name] = []

    def get_fact(cls, *args, **kwargs):
        _facts_read[host_name].append(cls.__name__)
        return facts[cls]

    return get_fact


def _plan(site, facts_for) -> tuple[State, list[tuple[str, list[str], dict[str, list]]]]:
    """Queue k3s.deploy for every host; return [(op name, hosts, host -> commands)] in order."""
    inventory = Inventory(
        (list(INVENTORY), {}),
        k3s_servers=([n for n, groups in INVENTORY.items() if "k3s_servers" in groups], {}),
        k3s_agents=([n for n, groups in INVENTORY.items() if "k3s_agents" in groups], {}),
    )
    _desired.STATE_CACHE.clear()  # each plan is a pyinfra run of its own
    state = State(inventory, Config())
    state.current_deploy_filename = __file__
    state.current_op_file_number = 0
    state.set_stage(StateStage.Prepare)
    for host in inventory:
        facts = facts_for(host.name, site)
        host.get_fact = _counting(host.name, facts)  # type: ignore[method-assign]
        state.activate_host(host)
        with ctx_state.use(state), ctx_host.use(host):
            plan = site.hosts[host.name]
            k3s.deploy(plan, site, k3s.declare(plan, site))  # the line deploys/site.py runs
    order = []
    for op_hash in state.get_op_order():
        names = sorted(state.get_op_meta(op_hash).names)
        commands = {}
        for host in inventory:
            if op_hash in state.ops[host]:
                with ctx_state.use(state), ctx_host.use(host):
                    host.current_op_hash = op_hash
                    commands[host.name] = list(state.ops[host][op_hash].command_generator())
        order.append((names[0], list(commands), commands))
    return state, order


def test_servers_then_the_wait_then_agents_then_labels(site) -> None:
    _, order = _plan(site(), _fresh)
    names = [name for name, _, _ in order]
    wait = names.index("k3s API answers before agents join")
    labels = names.index("k3s node labels and taints")
    server_start, agent_start = names.index("k3s"), names.index("k3s-agent")
    assert server_start < wait < agent_start < labels == len(names) - 1
    assert order[wait][1] == order[labels][1] == ["tethys", "styx", "calypso"]  # one step
    assert order[names.index("k3s cluster token unchanged")][1] == ["tethys"]
    started = order[server_start][2]["tethys"]
    assert len(started) == 3  # daemon-reload, enable, start
    waited = order[wait][2]
    assert waited["tethys"] == []  # the server's own health check covers it
    assert "https://tethys:7443/ping" in str(waited["styx"][0])


def test_a_converged_cluster_plans_no_change(site) -> None:
    _, order = _plan(site(), _converged)
    changes = {
        (name, host): commands
        for name, _, by_host in order
        for host, commands in by_host.items()
        if commands
    }
    assert changes == {}


@pytest.mark.parametrize("facts_for", [_converged, _fresh])
@pytest.mark.parametrize("provisioning", [True, False])
def test_each_host_reads_its_k3s_state_in_one_fact(site, facts_for, provisioning) -> None:
    """Issue 10: one SSH round trip per role, the k3s install and the cluster's nodes
    included (probes of the role's ManagedState), not a fact of their own each."""
    _plan(site(provisioning=provisioning), facts_for)
    assert _facts_read == {name: ["ManagedState"] for name in INVENTORY}


def test_provisioning_off_changes_nothing_and_reports_each_node(site) -> None:
    _, order = _plan(site(provisioning=False), _fresh)
    assert [(name, hosts) for name, hosts, _ in order] == [
        ("k3s on this node (provisioning off)", ["tethys", "styx", "calypso"]),
        # no k3s running on the first server: its cluster apps skipped, in one line
        ("cluster apps (provisioning off)", ["tethys"]),
    ]
    assert all(commands == [] for _, _, by_host in order for commands in by_host.values())


def test_the_token_is_in_no_operation_argument_or_command(site, lab_secrets) -> None:
    secret = lab_secrets["k3s_token"].split("::server:")[1]
    planned = site()
    state, order = _plan(planned, _fresh)
    for op_hash in state.get_op_order():
        meta = state.get_op_meta(op_hash)
        assert all(secret not in arg for arg in meta.args)
        assert secret not in repr(meta.global_arguments)
    for _, _, by_host in order:
        for commands in by_host.values():
            for command in commands:
                if isinstance(command, StringCommand):
                    assert secret not in command.get_raw_value()
    # the token file is an upload into the private staging folder, its content never shown
    uploads = [
        c
        for _, _, by_host in order
        for commands in by_host.values()
        for c in commands
        if isinstance(c, FileUploadCommand) and secret in c.src.getvalue().decode()
    ]
    assert len(uploads) == 1  # tethys only: the server token never reaches an agent


def test_agents_get_the_first_servers_agent_token_once(site) -> None:
    """A fresh cluster: tethys generates the agent secret, then (once its k3s answers) each
    agent is given tethys's server/agent-token in full and starts; converged, nothing."""
    planned = site(token=False)
    _, order = _plan(planned, _fresh)
    names = [name for name, _, _ in order]
    generated = order[names.index("k3s agent secret (generated on the first server)")][2]
    assert [host for host, commands in generated.items() if commands] == ["tethys"]
    assert "/dev/urandom" in generated["tethys"][0].get_raw_value()
    copies = order[names.index("k3s agent token (the first server's)")][2]
    assert sorted(copies) == ["calypso", "styx"]
    for commands in copies.values():
        assert isinstance(commands[0], FunctionCommand)
        assert commands[0].args == ("tethys", config.TOKEN_FILE, SERVER_AGENT_TOKEN)
    wait = names.index("k3s API answers before agents join")
    assert names.index("k3s") < wait < names.index("k3s agent token (the first server's)")
    assert names.index("k3s agent token (the first server's)") < names.index("k3s-agent")

    _, order = _plan(planned, _converged)
    changed = {name: by_host for name, _, by_host in order if any(by_host.values())}
    assert changed == {}


@pytest.mark.parametrize("held", ["server", "swept"])
def test_an_agent_holding_the_server_token_gets_the_agent_token_and_restarts(site, held):
    """An older deploy gave agents the server token (copied, or ESC k3s_token's from a file
    it recorded): it is replaced by the agent token and k3s-agent restarts to read it."""
    planned = site()

    def older(name, site):
        facts = _converged(name, site)
        if name == "tethys":
            return facts
        lines = facts[ManagedState]["probes"][INSTALL_PROBE]
        if held == "server":
            lines[-2] = f"token-file server {hashlib.sha256(b'x').hexdigest()}"
        else:  # ESC's token, in a file the agent role recorded
            facts[ManagedState]["record"] = json.dumps(
                {"files": [config.TOKEN_FILE], "directories": []}
            ).encode()
        return facts

    _, order = _plan(planned, older)
    by_name = {name: by_host for name, _, by_host in order}
    copies = by_name["k3s agent token (the first server's)"]
    assert sorted(host for host, commands in copies.items() if commands) == ["calypso", "styx"]
    for host in ("styx", "calypso"):
        restarted = [str(c.get_raw_value()) for c in by_name["k3s-agent"][host]]
        assert any("restart" in command for command in restarted), restarted
        assert by_name["k3s API answers before agents join"][host]  # it waits for the server
    assert not by_name["k3s"]["tethys"]  # the server has nothing to restart for


def test_a_second_server_copies_the_agent_secret_the_first_generated(site, monkeypatch):
    """Two servers, no ESC tokens: tethys generates the agent secret, nereid copies it, both
    before any k3s starts (operations run in the order of their lines, across hosts)."""
    two = {"tethys": {"k3s_servers"}, "nereid": {"k3s_servers"}, "styx": {"k3s_agents"}}
    monkeypatch.setitem(globals(), "INVENTORY", two)  # this module's inventory
    _, order = _plan(site(token=False), _fresh)
    names = [name for name, _, _ in order]
    generate = names.index("k3s agent secret (generated on the first server)")
    copy = names.index("k3s agent secret (the first server's)")
    assert generate < copy < names.index("k3s")  # both before any k3s starts
    assert [h for h, c in order[generate][2].items() if c] == ["tethys"]
    copied = order[copy][2]
    assert list(copied) == ["nereid"]
    assert copied["nereid"][0].args == ("tethys", config.AGENT_TOKEN_FILE, config.AGENT_TOKEN_FILE)
