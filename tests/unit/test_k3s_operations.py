"""operations/k3s.py and the upgrade/rollback helper (operations/services.py), on a fake host
whose facts are real fact values; the generated shell is run for real where it can be (with
fake systemctl, modprobe, curl on PATH), and kubectl's label/annotate lines by real kubectl."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from pyinfra.api import FunctionCommand
from pyinfra.connectors.util import CommandOutput, OutputLine

from deploys.k3s import server as k3s_server
from deploys.k3s import units
from facts.k3s import (
    AGENT_TOKEN_FILE,
    API_UNAVAILABLE_MARKER,
    SERVER_TOKEN,
    TOKEN_FILE,
    K3sInstall,
)
from facts.managed import ManagedState, script
from operations import _desired, managed, services
from operations import k3s as k3s_ops
from operations.managed import DesiredState, ManagedBinary, ManagedFile
from tests.unit.test_operations import (
    ANSI,
    assert_refused,
    file_state,
    managed_state,
    run_op,
    shell_syntax_errors,
)

SECRET = "3f9a1c0d5e7b2a4c6d8e0f1a2b3c4d5e"
ESC_TOKEN = f"K10{'ab' * 24}::server:{SECRET}"


def _install(**changes) -> dict:
    found = {
        "version": "v1.33.4+k3s1",
        "units": {"k3s.service": "active", "k3s-agent.service": "inactive"},
        "token_sha256": hashlib.sha256(SECRET.encode()).hexdigest(),
        "token_file": True,
        "token_file_form": "bare",
        "token_file_sha256": hashlib.sha256(SECRET.encode()).hexdigest(),
        "agent_token_file_sha256": None,
    }
    return found | changes


def _install_lines(**changes) -> list[str]:
    """What K3sInstall's command prints on a host with `_install(**changes)`."""
    found = _install(**changes)
    version = found["version"]
    lines = [f"version k3s version {version} (148243c4)" if version else "version -"]
    lines += [f"unit {unit} {active}" for unit, active in found["units"].items()]
    lines.append(f"token {found['token_sha256'] or '-'}")
    form, digest = found["token_file_form"], found["token_file_sha256"]
    lines.append(f"token-file {form} {digest}" if found["token_file"] else "token-file -")
    agent = found["agent_token_file_sha256"]
    lines.append(f"agent-token-file bare {agent}" if agent else "agent-token-file -")
    return lines


def _probed(install: list[str] | None = None, nodes: list[str] | None = None):
    """(a role's DesiredState probing k3s, the facts of a host whose probes print these lines)."""
    _desired.STATE_CACHE.clear()  # each call is a pyinfra run of its own
    role = DesiredState(name="k3s server tethys")
    k3s_ops.probe_install(role)
    k3s_ops.probe_nodes(role)
    probes = {k3s_ops.INSTALL_PROBE: install or [], k3s_ops.NODES_PROBE: nodes or []}
    return role, {ManagedState: {**managed_state(), "probes": probes}}


def _fake_tools(tmp_path: Path, **scripts: str) -> dict[str, str]:
    """An environment whose PATH finds these scripts first."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in scripts.items():
        tool = bin_dir / name
        tool.write_text(f"#!/bin/sh\n{body}\n")
        tool.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


# ---- cluster_token


def test_a_cluster_with_another_token_stops_the_run_saying_how_to_rotate(caplog) -> None:
    other = _install(token_sha256=hashlib.sha256(b"someone-elses").hexdigest())
    expected = k3s_ops.token_sha256(ESC_TOKEN)
    role, facts = _probed(install=_install_lines(token_sha256=other["token_sha256"]))
    run = run_op(k3s_ops.cluster_token, role, expected, facts=facts, name="tethys")
    message = assert_refused(run, caplog, "is not ESC k3s_token")
    assert "k3s token rotate" in message and "store <new> as k3s_token in ESC" in message
    assert SECRET not in caplog.text


@pytest.mark.parametrize("esc", [ESC_TOKEN, SECRET, f"{SECRET}\n"])
def test_the_same_token_in_either_form_goes_on(esc: str) -> None:
    expected = k3s_ops.token_sha256(esc)
    role, facts = _probed(install=_install_lines())
    run = run_op(k3s_ops.cluster_token, role, expected, facts=facts, name="tethys")
    assert run.commands == [] and run.noop == "the cluster's token is ESC k3s_token"
    assert [fact for fact, _ in run.facts] == [ManagedState]  # the role's one fact


@pytest.mark.parametrize("expected,found", [(None, "x" * 64), ("y" * 64, None)])
def test_nothing_to_compare_without_a_cluster_or_a_token(expected, found) -> None:
    role, facts = _probed(install=_install_lines(token_sha256=found))
    run = run_op(k3s_ops.cluster_token, role, expected, facts=facts, name="tethys")
    assert run.commands == [] and run.noop.startswith("no cluster token to compare")


def test_install_fact_hashes_the_token_secret_never_printing_it(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(f"{ESC_TOKEN}\n")
    command = K3sInstall().command().replace(SERVER_TOKEN, str(token))
    env = _fake_tools(
        tmp_path,
        k3s='echo "k3s version v1.33.4+k3s1 (148243c4)"; echo "go version go1.24.5"',
        systemctl='[ "$2" = k3s.service ] && { echo active; exit 0; }; echo inactive; exit 3',
    )
    output = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True)
    assert SECRET not in output.stdout
    found = K3sInstall().process(output.stdout.splitlines())
    assert found["version"] == "v1.33.4+k3s1"
    assert found["units"] == {"k3s.service": "active", "k3s-agent.service": "inactive"}
    assert found["token_sha256"] == hashlib.sha256(SECRET.encode()).hexdigest()


def test_the_role_fact_probes_k3s_in_its_one_run(tmp_path: Path) -> None:
    """The probes' commands, run for real in the role's `sh -s` script, read back as the
    K3sInstall and K3sNodes facts would (kubectl's JSON over many lines included)."""
    nodes = json.dumps({"items": [_node("calypso")]}, indent=2)
    (tmp_path / "nodes.json").write_text(nodes)
    env = _fake_tools(
        tmp_path,
        k3s=f'[ "$1" = kubectl ] && exec cat {tmp_path / "nodes.json"}\n'
        'echo "k3s version v1.33.4+k3s1 (148243c4)"',
        systemctl="echo active",
    )
    role, _ = _probed()
    text = script(probes=tuple(role.probes.items()))
    result = subprocess.run(["sh", "-s"], input=text, env=env, capture_output=True, text=True)
    state = ManagedState().process(result.stdout.splitlines())
    facts = {ManagedState: {**managed_state(), "probes": state["probes"]}}
    run = run_op(k3s_ops.node_labels, {"calypso": CALYPSO_WANTED}, desired=role, facts=facts)
    assert len(run.commands) == 3  # calypso was read: labelled now, not at execution
    _desired.STATE_CACHE.clear()
    run = run_op(k3s_ops.report, role, facts=facts, name="styx")
    assert run.noop.startswith("k3s: v1.33.4+k3s1; k3s-agent.service active, k3s.service active")


def test_install_fact_without_k3s() -> None:
    lines = ["version -", "unit k3s.service inactive", "unit k3s-agent.service inactive"]
    found = K3sInstall().process([*lines, "token -", "token-file -", "agent-token-file -"])
    assert found == {
        "version": None,
        "units": {"k3s.service": "inactive", "k3s-agent.service": "inactive"},
        "token_sha256": None,
        "token_file": False,
        "token_file_form": None,
        "token_file_sha256": None,
        "agent_token_file_sha256": None,
        "sqlite_datastore": False,
        "etcd_datastore": False,
    }


AGENT_SECRET = "9c1e5b7d3a2f4e6c8b0d1f3a5c7e9b2d"
AGENT_TOKEN = f"K10{'cd' * 32}::node:{AGENT_SECRET}"


@pytest.mark.parametrize(
    "content,form,secret",
    [
        (AGENT_TOKEN, "node", AGENT_SECRET),
        (f"K10{'cd' * 32}::server:{SECRET}", "server", SECRET),
        (SECRET, "bare", SECRET),
    ],
)
def test_install_fact_tells_which_token_a_node_holds(tmp_path, content, form, secret) -> None:
    """An agent holding the server token (an older deploy's) is told from one holding the
    agent token, by the form and the SHA-256 of the secret; neither is printed."""
    token, agent = tmp_path / "token", tmp_path / "agent-token"
    token.write_text(f"{content}\n")
    agent.write_text(f"{AGENT_SECRET}\n")
    command = K3sInstall().command().replace(TOKEN_FILE, str(token))
    command = command.replace(AGENT_TOKEN_FILE, str(agent))
    env = _fake_tools(tmp_path, k3s="exit 1", systemctl="echo inactive")
    output = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True)
    assert secret not in output.stdout and AGENT_SECRET not in output.stdout
    found = K3sInstall().process(output.stdout.splitlines())
    assert found["token_file"] is True and found["token_file_form"] == form
    assert found["token_file_sha256"] == hashlib.sha256(secret.encode()).hexdigest()
    assert found["agent_token_file_sha256"] == hashlib.sha256(AGENT_SECRET.encode()).hexdigest()
    assert k3s_ops.token_sha256(content) == found["token_file_sha256"]


# ---- report (provisioning off)


def test_provisioning_off_reports_one_line_and_changes_nothing(caplog) -> None:
    with caplog.at_level(logging.INFO, logger="pyinfra"):
        role, facts = _probed(install=_install_lines(version=None))
        run = run_op(k3s_ops.report, role, facts=facts, name="styx")
    assert run.commands == []
    line = (
        "k3s: not installed; k3s-agent.service inactive, k3s.service active "
        "(enable_node_provisioning is off: nothing changed)"
    )
    assert run.noop == line
    assert [r.getMessage() for r in caplog.records] == [line]  # once, whatever -v says


# ---- kernel


def _kernel_desired(changed: bool) -> DesiredState:
    files = [
        ManagedFile(units.MODULES_FILE, units.modules_load().encode()),
        ManagedFile(units.SYSCTL_FILE, units.sysctl().encode()),
    ]
    paths = {f.path: file_state(f) for f in files}
    if changed:
        paths[units.SYSCTL_FILE] = None
    desired = DesiredState(name="k3s agent styx", files=files)
    _desired.STATE_CACHE.clear()
    return desired, managed_state(paths=paths)


def _kernel(changed: bool):
    desired, state = _kernel_desired(changed)
    args = (desired, units.MODULES_FILE, units.SYSCTL_FILE, list(units.MODULES))
    return run_op(k3s_ops.kernel, *args, facts={ManagedState: state})


def test_kernel_settings_unchanged_are_not_applied_again() -> None:
    run = _kernel(changed=False)
    assert run.commands == []
    assert run.noop == f"{units.MODULES_FILE} and {units.SYSCTL_FILE} are in place and applied"


@pytest.mark.parametrize("container", [True, False])
def test_changed_kernel_settings_are_applied_or_noted_in_a_container(tmp_path, container) -> None:
    run = _kernel(changed=True)
    assert shell_syntax_errors(run.commands) == []
    log = tmp_path / "calls"
    env = _fake_tools(
        tmp_path,
        **{
            "systemd-detect-virt": f"exit {0 if container else 1}",
            "modprobe": f'echo "modprobe $*" >> {log}',
            "sysctl": f'echo "sysctl $*" >> {log}',
        },
    )
    result = subprocess.run(["sh", "-c", run.strings[0]], env=env, capture_output=True, text=True)
    assert result.returncode == 0
    if container:
        assert "not applied here" in result.stdout and not log.exists()
    else:
        assert log.read_text().splitlines() == [
            "modprobe -a br_netfilter overlay",
            f"sysctl -q -p {units.SYSCTL_FILE}",
        ]


# ---- wait_for_server


@pytest.mark.parametrize("answers", [True, False])
def test_an_agent_waits_for_the_servers_ping_and_gives_up_in_one_line(tmp_path, answers) -> None:
    run = run_op(k3s_ops.wait_for_server, "https://tethys:7443", wait=2, facts={}, name="styx")
    calls = tmp_path / "urls"
    env = _fake_tools(tmp_path, curl=f'echo "$@" >> {calls}; exit {0 if answers else 7}')
    result = subprocess.run(["sh", "-c", run.strings[0]], env=env, capture_output=True, text=True)
    assert "-ksf --max-time 5 https://tethys:7443/ping" in calls.read_text()
    if answers:
        assert result.returncode == 0
    else:
        assert result.returncode == 1
        message = result.stderr.strip()
        assert message.startswith(
            "the k3s API at https://tethys:7443/ping did not answer within 2s, so this node "
            "was not joined. Likeliest causes: k3s on the server is not up"
        )
        assert "firewall" in message and "hosts.<server>.k3s.address" in message


# ---- join_token


def test_the_generated_token_is_copied_only_to_a_node_without_one() -> None:
    run = run_op(k3s_ops.join_token, "/etc/rancher/k3s/token", "tethys", present=True, facts={})
    assert run.commands == [] and run.noop == (
        f"/etc/rancher/k3s/token holds the token copied from tethys's {SERVER_TOKEN}"
    )
    run = run_op(k3s_ops.join_token, "/etc/rancher/k3s/token", "tethys", present=False, facts={})
    assert len(run.raw) == 1 and isinstance(run.raw[0], FunctionCommand)
    assert run.raw[0].function is k3s_ops._copy_token


# ---- node_labels


def _node(name: str, labels=None, taints=(), annotations=None) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, **(labels or {})},
            "annotations": dict(annotations or {}),
        },
        "spec": {"taints": [dict(t) for t in taints]},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


def _nodes_fact(*raw: dict) -> list[str]:
    """What K3sNodes' command prints for these nodes (`kubectl get nodes -o json`)."""
    return json.dumps({"items": list(raw)}, indent=4).splitlines()


def _labels(wanted, nodes: list[str] | None, name: str = "calypso"):
    """node_labels on the first server, whose role's fact read `nodes` (the probe's lines)."""
    role, facts = _probed(nodes=nodes)
    return run_op(k3s_ops.node_labels, wanted, desired=role, facts=facts, name=name)


CALYPSO_WANTED = {
    "labels": {"oceanid.cluster/tunnel-enabled": "true"},
    "taints": ["workload-type=gpu-compute:NoSchedule"],
}


def test_a_registered_node_gets_its_labels_and_taints_in_three_commands() -> None:
    run = _labels({"calypso": CALYPSO_WANTED}, _nodes_fact(_node("calypso")), name="tethys")
    assert run.commands == [
        "k3s kubectl label node calypso --overwrite oceanid.cluster/tunnel-enabled=true",
        "k3s kubectl taint node calypso --overwrite workload-type=gpu-compute:NoSchedule",
        "k3s kubectl annotate node calypso --overwrite "
        "oceanid.cluster/managed-labels=oceanid.cluster/tunnel-enabled "
        "oceanid.cluster/managed-taints=workload-type:NoSchedule",
    ]
    assert [fact for fact, _ in run.facts] == [ManagedState]  # get nodes, in the role's fact


def _apply_locally(node: dict, commands: list[str], tmp_path: Path) -> dict:
    """Apply label/annotate lines with real kubectl (--local), taint lines by their meaning."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:  # the real v1.33.9 the lab uses, out of its PyPI wheel
        from lab.kubectl import kubectl as lab_kubectl

        kubectl = str(lab_kubectl())
    node = copy.deepcopy(node)
    for line in commands:
        words = shlex.split(line)
        assert words[:2] == ["k3s", "kubectl"]
        verb, args = words[2], words[6:]
        if verb == "taint":
            for arg in args:
                spec, removed = (arg[:-1], True) if arg.endswith("-") else (arg, False)
                key_value, _, effect = spec.rpartition(":")
                key, _, value = key_value.partition("=")
                taints = node["spec"]["taints"]
                taints[:] = [t for t in taints if (t["key"], t["effect"]) != (key, effect)]
                if not removed:
                    taints.append(
                        {"key": key, "value": value, "effect": effect}
                        if value
                        else {"key": key, "effect": effect}
                    )
            continue
        source = tmp_path / "node.json"
        source.write_text(json.dumps(node))
        result = subprocess.run(
            [kubectl, verb, "--local", "-f", str(source), "--overwrite", *args, "-o", "json"],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
        node = json.loads(result.stdout)
    return node


def test_reconciled_nodes_need_nothing_on_the_next_run(tmp_path) -> None:
    nodes = [_node("calypso"), _node("styx", labels={"team": "ops"})]
    wanted = {"calypso": CALYPSO_WANTED, "styx": {"labels": {}, "taints": []}}
    run = _labels(wanted, _nodes_fact(*nodes))
    assert all(" styx " not in line for line in run.strings[:2])  # only its record
    applied = [_apply_locally(nodes[0], run.strings[:3], tmp_path), nodes[1]]
    applied[1] = _apply_locally(nodes[1], run.strings[3:], tmp_path)
    again = _labels(wanted, _nodes_fact(*applied))
    assert again.commands == []
    assert again.noop == "2 node(s) carry the labels and taints their data gives"
    assert applied[1]["metadata"]["labels"]["team"] == "ops"  # never ours, left alone


def test_what_the_deploy_set_and_data_dropped_is_removed_others_stay(tmp_path) -> None:
    before = _node(
        "calypso",
        labels={"oceanid.cluster/tunnel-enabled": "true", "node-role.kubernetes.io/gpu": "true"},
        taints=[
            {"key": "workload-type", "value": "gpu-compute", "effect": "NoSchedule"},
            {"key": "someone-elses", "effect": "NoExecute"},
        ],
        annotations={
            k3s_ops.MANAGED_LABELS: "node-role.kubernetes.io/gpu,oceanid.cluster/tunnel-enabled",
            k3s_ops.MANAGED_TAINTS: "workload-type:NoSchedule",
        },
    )
    wanted = {"calypso": {"labels": {"oceanid.cluster/tunnel-enabled": "true"}, "taints": []}}
    run = _labels(wanted, _nodes_fact(before))
    assert run.strings[:2] == [
        "k3s kubectl label node calypso --overwrite node-role.kubernetes.io/gpu-",
        "k3s kubectl taint node calypso --overwrite workload-type:NoSchedule-",
    ]
    after = _apply_locally(before, run.strings, tmp_path)
    assert "node-role.kubernetes.io/gpu" not in after["metadata"]["labels"]
    assert after["spec"]["taints"] == [{"key": "someone-elses", "effect": "NoExecute"}]
    again = _labels(wanted, _nodes_fact(after))
    assert again.commands == []


def test_a_changed_taint_value_is_overwritten() -> None:
    node = _node(
        "calypso", taints=[{"key": "workload-type", "value": "cpu", "effect": "NoSchedule"}]
    )
    run = _labels({"calypso": CALYPSO_WANTED}, _nodes_fact(node))
    assert "k3s kubectl taint node calypso --overwrite workload-type=gpu-compute:NoSchedule" in (
        run.strings
    )


@pytest.mark.parametrize("nodes", ["no API", "not kubectl's", "styx only"])
def test_nodes_not_registered_while_planning_are_reconciled_at_execution(caplog, nodes) -> None:
    output = {
        "no API": [API_UNAVAILABLE_MARKER],
        "not kubectl's": ["The connection to the server was refused"],
        "styx only": _nodes_fact(_node("styx")),
    }[nodes]
    wanted = {"styx": {"labels": {}, "taints": []}, "calypso": CALYPSO_WANTED}
    with caplog.at_level(logging.INFO, logger="pyinfra"):
        run = _labels(wanted, output, name="tethys")
    assert len(run.raw) == 1 and run.raw[0].function is k3s_ops._reconcile_at_execution
    assert run.raw[0].args == (wanted, k3s_ops.NODES_WAIT)
    assert "calypso not registered yet" in ANSI.sub("", caplog.text)


# ---- upgrades and rollback (services.binary_service's two operations)

K3S = ManagedBinary(
    units.BINARY, "http://mirror/{version}/k3s", "v1.33.5+k3s1", {"amd64": "a" * 64}
)
UNIT = "k3s.service"
UNIT_FILE = ManagedFile(f"/etc/systemd/system/{UNIT}", b"[Service]\nExecStart=k3s server\n")


def _upgrade(installed_sha: str | None, active: str = "active"):
    desired = DesiredState(
        name="k3s server tethys", binaries=[K3S], files=[UNIT_FILE], units=[UNIT]
    )
    binary_state = (
        None
        if installed_sha is None
        else file_state(ManagedFile(K3S.path, b"", mode="0755"), sha256=installed_sha)
    )
    state = managed_state(
        paths={K3S.path: binary_state, UNIT_FILE.path: file_state(UNIT_FILE)},
        units={UNIT: {"enabled": "enabled", "active": active}},
    )
    _desired.STATE_CACHE.clear()
    facts = {ManagedState: state}
    binaries = run_op(managed.binaries, desired, keep_previous=True, facts=facts)
    unit = run_op(
        services.unit,
        desired,
        UNIT,
        UNIT_FILE.path,
        [K3S.path],
        health=k3s_server.HEALTH,
        rollback=[K3S.path],
        facts=facts,
    )
    return binaries, unit


def test_the_same_version_replaces_and_restarts_nothing() -> None:
    binaries, unit = _upgrade(installed_sha="a" * 64)
    assert binaries.commands == [] and unit.commands == []


def test_a_version_bump_keeps_the_previous_binary_and_restarts_once() -> None:
    binaries, unit = _upgrade(installed_sha="b" * 64)
    assert binaries.strings[-1] == (
        f"chmod 0755 {K3S.path}.oceanid-new && {{ [ ! -f {K3S.path} ] || ln -f {K3S.path} "
        f"{K3S.path}.previous ; }} && mv -f {K3S.path}.oceanid-new {K3S.path}"
    )
    assert len(unit.strings) == 1 and unit.strings[0].startswith("timeout 150 systemctl restart")
    assert f"mv -f {K3S.path}.previous {K3S.path}" in unit.strings[0]
    assert shell_syntax_errors(binaries.commands + unit.commands) == []


def test_a_first_install_has_nothing_to_roll_back_to() -> None:
    _, unit = _upgrade(installed_sha=None, active="inactive")
    assert unit.strings[0].startswith("timeout 150 systemctl restart k3s.service")
    assert ".previous" not in unit.strings[0]


@pytest.mark.parametrize("healthy", [True, False])
def test_an_unhealthy_upgrade_is_rolled_back_and_fails_the_run(tmp_path, monkeypatch, healthy):
    """The real commands: download in place, verify, rename keeping .previous, restart, check."""
    monkeypatch.setattr(services, "HEALTH_WAIT", 2)
    new, old = b"#!/bin/sh\necho new\n", b"#!/bin/sh\necho old\n"
    target = tmp_path / "k3s"
    target.write_bytes(old)
    binary = ManagedBinary(
        str(target), "http://m/{version}", "v2", {"amd64": hashlib.sha256(new).hexdigest()}
    )
    desired = DesiredState(name="k3s server tethys", binaries=[binary], units=[UNIT])
    state = managed_state(
        paths={binary.path: file_state(ManagedFile(binary.path, old, mode="0755"))},
        units={UNIT: {"enabled": "enabled", "active": "active"}},
    )
    facts = {ManagedState: state}
    binaries = run_op(managed.binaries, desired, keep_previous=True, facts=facts)
    health = f"grep -q {'new' if healthy else 'never'} {shlex.quote(str(target))}"
    unit = run_op(
        services.unit,
        desired,
        UNIT,
        None,
        [binary.path],
        health=health,
        rollback=[binary.path],
        facts=facts,
    )
    restarts = tmp_path / "restarts"
    env = _fake_tools(
        tmp_path,
        systemctl=f'[ "$1" = restart ] && echo "$2" >> {restarts}; exit 0',
        journalctl="echo 'k3s: apiserver not ready'",
        sleep="exit 0",
    )
    (tmp_path / "k3s.oceanid-new").write_bytes(new)  # what curl would have fetched
    for command in binaries.strings[1:] + unit.strings:
        result = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True)
        if result.returncode:
            break
    if healthy:
        assert result.returncode == 0
        assert target.read_bytes() == new and (tmp_path / "k3s.previous").read_bytes() == old
        assert restarts.read_text().splitlines() == [UNIT]
    else:
        assert result.returncode == 1
        assert target.read_bytes() == old and not (tmp_path / "k3s.previous").exists()
        assert restarts.read_text().splitlines() == [UNIT, UNIT]  # the upgrade, the rollback
        assert "k3s: apiserver not ready" in result.stderr
        assert f"{UNIT} was not healthy on its new binary: the previous binary" in result.stderr


# ---- what runs at execution: the token copy and a fresh cluster's labels


class ShellHost:
    """A host whose commands run here, by sh, as pyinfra's connectors would run them."""

    def __init__(self, name: str, env: dict[str, str]):
        self.name, self.env, self.commands, self.messages = name, env, [], []
        self.print_prefix = f"[{name}] "  # as pyinfra's Host prefixes its log lines

    def run_shell_command(self, command, print_output=False, print_input=False, _stdin=None):
        text = command.get_raw_value()
        self.commands.append((text, print_output))
        result = subprocess.run(
            ["sh", "-c", text], input=_stdin, env=self.env, capture_output=True, text=True
        )
        lines = [OutputLine("stdout", line) for line in result.stdout.splitlines()]
        lines += [OutputLine("stderr", line) for line in result.stderr.splitlines()]
        return result.returncode == 0, CommandOutput(lines)

    def log_styled(self, message: str, **_style) -> None:
        self.messages.append(message)


def _execution_state(*hosts: ShellHost) -> SimpleNamespace:
    return SimpleNamespace(inventory=list(hosts), active_hosts=set(hosts))


def test_the_generated_token_is_copied_0600_through_stdin(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(k3s_ops, "_connector_arguments", lambda state, target: {})
    server_token = tmp_path / "server-token"
    server_token.write_text(f"{ESC_TOKEN}\n")
    tethys, styx = ShellHost("tethys", dict(os.environ)), ShellHost("styx", dict(os.environ))
    path = tmp_path / "etc" / "token"
    state = _execution_state(tethys, styx)
    assert k3s_ops._copy_token(state, styx, "tethys", str(path), str(server_token))
    assert path.read_text() == f"{ESC_TOKEN}\n"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    for text, printed in tethys.commands + styx.commands:
        assert SECRET not in text and printed is False


def test_an_agent_is_given_the_agent_token_in_full_once_k3s_wrote_it(tmp_path, monkeypatch):
    """k3s's server/agent-token is a symlink to the server token until k3s started with
    agent-token-file: the agent waits for the node form and never gets the server token."""
    monkeypatch.setattr(k3s_ops, "_connector_arguments", lambda state, target: {})
    written = tmp_path / "agent-token"  # as before k3s restarted: the server token
    written.write_text(f"K10{'cd' * 32}::server:{SECRET}\n")
    monkeypatch.setattr(k3s_ops, "SERVER_AGENT_TOKEN", str(written))
    waits = []

    def k3s_restarts(seconds: float) -> None:  # k3s writes the agent token meanwhile
        waits.append(seconds)
        written.write_text(f"{AGENT_TOKEN}\n")

    monkeypatch.setattr(k3s_ops.time, "sleep", k3s_restarts)
    tethys, styx = ShellHost("tethys", dict(os.environ)), ShellHost("styx", dict(os.environ))
    path = tmp_path / "etc" / "token"
    state = _execution_state(tethys, styx)
    assert k3s_ops._copy_token(state, styx, "tethys", str(path), str(written))
    assert len(waits) == 1
    assert path.read_text() == f"{AGENT_TOKEN}\n"  # the agent token, CA hash and all
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    for text, printed in tethys.commands + styx.commands:
        assert AGENT_SECRET not in text and SECRET not in text and printed is False


def test_an_agent_is_never_given_the_server_token(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(k3s_ops, "_connector_arguments", lambda state, target: {})
    monkeypatch.setattr(k3s_ops, "AGENT_TOKEN_WAIT", 0)
    written = tmp_path / "agent-token"
    written.write_text(f"K10{'cd' * 32}::server:{SECRET}\n")  # no agent-token-file there
    monkeypatch.setattr(k3s_ops, "SERVER_AGENT_TOKEN", str(written))
    tethys, styx = ShellHost("tethys", dict(os.environ)), ShellHost("styx", dict(os.environ))
    path = tmp_path / "token"
    assert not k3s_ops._copy_token(
        _execution_state(tethys, styx), styx, "tethys", str(path), str(written)
    )
    assert not path.exists()
    assert styx.messages == [
        f"{written} on tethys holds no agent token (K10<CA hash>::node:<secret>) after 0s; is "
        "agent-token-file in its config.yaml and k3s running there? this node was given no token"
    ]


def test_the_agent_secret_is_made_on_the_first_server_once(tmp_path) -> None:
    path = tmp_path / "agent-token"
    run = run_op(k3s_ops.agent_secret, str(path), present=True, facts={})
    assert run.commands == [] and run.noop == f"{path} holds the cluster's agent secret"
    run = run_op(k3s_ops.agent_secret, str(path), present=False, facts={})
    assert len(run.strings) == 1
    done = subprocess.run(["sh", "-c", run.strings[0]], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""
    secret = path.read_text()
    assert re.fullmatch(r"[0-9a-f]{64}\n", secret)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    subprocess.run(["sh", "-c", run.strings[0]], check=True)  # a second run keeps it
    assert path.read_text() == secret


def test_without_the_server_no_token_is_written(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(k3s_ops, "_connector_arguments", lambda state, target: {})
    tethys, styx = ShellHost("tethys", dict(os.environ)), ShellHost("styx", dict(os.environ))
    state = _execution_state(tethys, styx)
    state.active_hosts.discard(tethys)  # it failed earlier in the run
    assert not k3s_ops._copy_token(state, styx, "tethys", str(tmp_path / "token"))
    assert styx.messages == ["k3s server tethys is not connected: no token to join with"]
    assert not (tmp_path / "token").exists()


def test_a_node_that_never_registers_is_waited_for_aloud_then_explained(
    tmp_path, monkeypatch, caplog
) -> None:
    """Issue 23: the wait says what it waits for at least every 10 s, and its end names the
    node, what was waited for, the likeliest causes and what to run."""
    monkeypatch.setattr(k3s_ops, "_connector_arguments", lambda state, target: {})
    clock = iter(range(0, 1000, 5))  # each look at the clock 5 s later
    monkeypatch.setattr(k3s_ops.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(k3s_ops.time, "sleep", lambda seconds: None)
    registered = tmp_path / "nodes.json"
    registered.write_text(json.dumps({"items": [_node("styx")]}))
    tethys = ShellHost("tethys", _fake_tools(tmp_path, k3s=f"cat {registered}"))
    wanted = {"styx": {"labels": {}, "taints": []}, "calypso": CALYPSO_WANTED}
    caplog.set_level(logging.INFO)
    assert not k3s_ops._reconcile_at_execution(_execution_state(tethys), tethys, wanted, 60)
    waits = [r.getMessage() for r in caplog.records if "waiting for k3s nodes" in r.getMessage()]
    assert waits[0] == (
        "[tethys] waiting for k3s nodes to register with the server: calypso (10s of 60s)"
    )
    assert len(waits) >= 60 // 10 - 1
    (message,) = tethys.messages
    assert message.startswith("k3s nodes not registered within 60s: calypso; waited for each")
    for cause in ("firewall", "hosts.<server>.k3s.address", "token", "clocks"):
        assert cause in message
    assert "`ssh calypso journalctl -u k3s-agent -n 50`" in message


def test_a_fresh_clusters_nodes_are_labelled_once_they_registered(tmp_path, monkeypatch) -> None:
    """Execution: `get nodes` until calypso is there, then kubectl for what differs."""
    monkeypatch.setattr(k3s_ops, "_connector_arguments", lambda state, target: {})
    monkeypatch.setattr(k3s_ops.time, "sleep", lambda seconds: None)
    registered = tmp_path / "nodes.json"
    later = json.dumps({"items": [_node("styx"), _node("calypso")]})
    calls = tmp_path / "calls"
    env = _fake_tools(  # the first `get nodes` finds styx only; calypso registers meanwhile
        tmp_path,
        k3s=(
            f'if [ "$2" = get ]; then cat {registered}; '
            f"echo '{later}' > {registered}; else echo \"$*\" >> {calls}; fi"
        ),
    )
    registered.write_text(json.dumps({"items": [_node("styx")]}))
    tethys = ShellHost("tethys", env)
    wanted = {"styx": {"labels": {}, "taints": []}, "calypso": CALYPSO_WANTED}
    assert k3s_ops._reconcile_at_execution(_execution_state(tethys), tethys, wanted, 60)
    lines = calls.read_text().splitlines()
    assert lines[:2] == [  # styx: nothing wanted, nothing recorded, nothing to do
        "kubectl label node calypso --overwrite oceanid.cluster/tunnel-enabled=true",
        "kubectl taint node calypso --overwrite workload-type=gpu-compute:NoSchedule",
    ]
    assert len(lines) == 3 and lines[2].startswith("kubectl annotate node calypso")
