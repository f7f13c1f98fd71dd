"""The k3s roles as data: one DesiredState per role, built from a site that went through preflight.

Each site here is what `pyinfra inventory.py deploys/site.py` would validate: the group data as
shipped (or as the lab's overrides make it), the inventory's groups, and fake secrets in a file.
"""

from __future__ import annotations

import re

import pytest
import yaml

from deploys.k3s import agent, cluster, config, endpoint, server, units
from oceanid.model import HostView, Site
from oceanid.preflight import PreflightError, check
from oceanid.settings import from_data
from tests.unit.conftest import with_node_ips

SERVERS, AGENTS, GPU = "k3s_servers", "k3s_agents", "gpu_hosts"
INVENTORY = {"tethys": {SERVERS}, "styx": {AGENTS}, "calypso": {AGENTS, GPU}}


@pytest.fixture
def make_site(data, lab_secrets, tmp_path):
    """A validated Site for an inventory {name: groups}, with provisioning on."""

    def make(
        inventory=None, *, lb: bool = True, token: bool = True, agent_token=None, **changes
    ) -> Site:
        data.update(secret_sources=["file"], enable_node_provisioning=True)
        data.update(enable_control_plane_lb=lb, **changes)
        secrets = dict(lab_secrets)
        if not token:
            secrets.pop("k3s_token")
        if agent_token is not None:
            secrets["k3sAgentToken"] = agent_token
        path = tmp_path / "secrets.yaml"
        path.write_text(yaml.safe_dump(secrets))
        path.chmod(0o600)
        with_node_ips(data, inventory or INVENTORY)
        views = [
            HostView(name, frozenset(groups), data)
            for name, groups in (inventory or INVENTORY).items()
        ]
        return check(views, environ={"SECRETS_FILE": str(path)})

    return make


def _document(role_manifest) -> dict:
    return yaml.safe_load(role_manifest.file(config.CONFIG).content)


def test_first_server_starts_the_cluster_and_agents_join_through_the_endpoint(make_site) -> None:
    site = make_site()
    tethys = server.declare(site.hosts["tethys"], site).desired
    styx = agent.declare(site.hosts["styx"], site).desired
    first, joining = _document(tethys), _document(styx)
    assert first["cluster-init"] is True and "server" not in first
    assert joining["server"] == "https://tethys:7443"  # HAProxy on the first server
    assert first["token-file"] == joining["token-file"] == config.TOKEN_FILE
    assert "token" not in first and "token" not in joining
    assert first["agent-token-file"] == config.AGENT_TOKEN_FILE  # what agents join with
    assert "agent-token-file" not in joining and "agent-token" not in first


def test_without_the_balancer_agents_use_the_first_servers_api(make_site) -> None:
    site = make_site(lb=False)
    styx = agent.declare(site.hosts["styx"], site).desired
    assert _document(styx)["server"] == "https://tethys:6443"
    tethys = server.declare(site.hosts["tethys"], site).desired
    assert endpoint.CONFIG not in [f.path for f in tethys.files]
    assert "haproxy" not in tethys.packages


def test_the_token_file_holds_the_secret_only_0600_and_restarts_k3s(make_site, lab_secrets):
    site = make_site()
    declared = server.declare(site.hosts["tethys"], site)
    role, inputs = declared.desired, declared.inputs
    token = role.file(config.TOKEN_FILE)
    secret = lab_secrets["k3s_token"].split("::server:")[1]
    assert token.content == f"{secret}\n".encode()
    assert (token.mode, token.user, token.secret) == ("0600", "root", True)
    assert config.TOKEN_FILE in inputs
    for other in role.files:  # the token is in no other file, the unit above all
        if other is not token:
            assert secret.encode() not in other.content


def test_the_server_token_never_reaches_an_agent(make_site, lab_secrets) -> None:
    """Design.md §7: agents hold the agent token only; theirs is copied from the first
    server's k3s-written agent token while the run executes (node.agent_tokens)."""
    site = make_site(agent_token="k3s-agent-secret-0123456789abcdef")
    secret = lab_secrets["k3s_token"].split("::server:")[1]
    for name in ("styx", "calypso"):
        declared = agent.declare(site.hosts[name], site)
        role, inputs = declared.desired, declared.inputs
        assert config.TOKEN_FILE not in [f.path for f in role.files] + inputs
        assert config.AGENT_TOKEN_FILE not in [f.path for f in role.files]
        for managed in role.files:
            assert secret.encode() not in managed.content
            assert b"k3s-agent-secret" not in managed.content
        assert _document(role)["token-file"] == config.TOKEN_FILE


@pytest.mark.parametrize(
    "esc",
    [
        "k3s-agent-secret-0123456789abcdef",
        f"K10{'ab' * 32}::node:k3s-agent-secret-0123456789abcdef",
    ],
)
def test_esc_agent_token_is_every_servers_agent_token_file(make_site, esc) -> None:
    site = make_site({"tethys": {SERVERS}, "nereid": {SERVERS}, "styx": {AGENTS}}, agent_token=esc)
    for name in ("tethys", "nereid"):
        declared = server.declare(site.hosts[name], site)
        role, inputs = declared.desired, declared.inputs
        written = role.file(config.AGENT_TOKEN_FILE)
        assert written.content == b"k3s-agent-secret-0123456789abcdef\n"  # the secret alone
        assert (written.mode, written.user, written.secret) == ("0600", "root", True)
        assert config.AGENT_TOKEN_FILE in inputs  # a new agent secret restarts k3s
        assert _document(role)["agent-token-file"] == config.AGENT_TOKEN_FILE


def test_without_esc_agent_token_no_server_declares_one(make_site) -> None:
    site = make_site()  # the first server generates it, the others copy it (execution)
    declared = server.declare(site.hosts["tethys"], site)
    role, inputs = declared.desired, declared.inputs
    assert config.AGENT_TOKEN_FILE not in [f.path for f in role.files] + inputs
    assert _document(role)["agent-token-file"] == config.AGENT_TOKEN_FILE


@pytest.mark.parametrize(
    "value,problem",
    [
        ("same", "k3sAgentToken: is the server token"),
        (f"K10{'ab' * 32}::server:k3s-agent-secret-0123456789abcdef", "is the server token"),
        ("short", "must be at least 16 characters without spaces"),
        ("with a space in the middle", "must be at least 16 characters without spaces"),
    ],
)
def test_preflight_refuses_an_agent_token_agents_must_not_hold(
    make_site, lab_secrets, value, problem
) -> None:
    if value == "same":
        value = lab_secrets["k3s_token"].split("::server:")[1]  # the server's secret, bare
    with pytest.raises(PreflightError) as raised:
        make_site(agent_token=value)
    assert any(problem in line for line in raised.value.problems)
    assert all(value not in line for line in raised.value.problems)  # never echoed


def test_without_k3s_token_the_first_server_generates_it_and_no_node_has_a_file(make_site):
    site = make_site(token=False)
    declared = server.declare(site.hosts["tethys"], site)
    tethys, inputs = declared.desired, declared.inputs
    styx = agent.declare(site.hosts["styx"], site).desired
    assert "token-file" not in _document(tethys)  # k3s generates the cluster's token
    assert _document(styx)["token-file"] == config.TOKEN_FILE  # copied from the server
    for role in (tethys, styx):
        assert config.TOKEN_FILE not in [f.path for f in role.files]
    assert config.TOKEN_FILE not in inputs


def test_a_second_server_is_one_inventory_line(make_site) -> None:
    site = make_site({"tethys": {SERVERS}, "nereid": {SERVERS}, "styx": {AGENTS}})
    assert [p.name for p in cluster.servers(site)] == ["tethys", "nereid"]
    assert site.first_server is site.hosts["tethys"]  # the inventory's first: it starts it
    assert not site.is_first_server(site.hosts["nereid"])
    nereid = server.declare(site.hosts["nereid"], site).desired
    document = _document(nereid)
    assert document["server"] == "https://tethys:7443" and "cluster-init" not in document
    assert document["token-file"] == config.TOKEN_FILE
    haproxy = nereid.file(endpoint.CONFIG).content.decode()
    assert re.findall(r"^    server (\S+) (\S+)$", haproxy, re.MULTILINE) == [
        ("tethys", "tethys:6443"),
        ("nereid", "nereid:6443"),
    ]
    assert "bind :7443" in haproxy


def test_haproxy_is_checked_before_it_replaces_its_config_and_is_plain_tcp(make_site) -> None:
    site = make_site()
    tethys = server.declare(site.hosts["tethys"], site).desired
    cfg = tethys.file(endpoint.CONFIG)
    assert cfg.validate == "haproxy -c -q -f {path}"
    assert "haproxy" in tethys.packages and endpoint.UNIT in tethys.units
    sections = endpoint.config(7443, [("tethys", "10.77.0.11")])
    assert "mode tcp" in sections["defaults"] and "mode tcp" in sections["backend k3s-servers"]
    text = endpoint.render(sections)
    assert "\nbackend k3s-servers\n    mode tcp\n" in text
    assert "    server tethys 10.77.0.11:6443\n" in text


def test_node_data_reaches_config_except_labels_the_kubelet_refuses(make_site, data) -> None:
    data["hosts"]["styx"] = {
        "k3s": {
            "address": "10.77.0.12",
            "node_ip": "10.77.0.12",
            "flannel_iface": "host0",
            "labels": {"node-role.kubernetes.io/worker": "true", "oceanid.cluster/x": "y"},
        }
    }
    site = make_site()
    role = agent.declare(site.hosts["styx"], site).desired
    document = _document(role)
    assert document["node-ip"] == "10.77.0.12" and document["flannel-iface"] == "host0"
    assert "node-label" not in document  # in the drop-in beside it, read by k3s after it
    labels = yaml.safe_load(role.file(config.LABELS_FILE).content)
    assert labels == {"node-label": ["oceanid.cluster/x=y"]}
    # the refused one is set through the API instead
    assert cluster.wanted_labels(site)["styx"]["labels"] == {
        "node-role.kubernetes.io/worker": "true",
        "oceanid.cluster/x": "y",
    }


def test_a_label_or_taint_edit_restarts_no_k3s(make_site, data) -> None:
    """The API step sets labels and taints on the running node (operations.k3s.node_labels),
    so their edit changes only the drop-in, which is no restart input; k3s reads it when it
    next starts (node-label patched onto the node, pkg/agent/run.go; node-taint at a
    registration)."""
    site = make_site()
    declared = agent.declare(site.hosts["calypso"], site)
    before, inputs = declared.desired, declared.inputs
    assert yaml.safe_load(before.file(config.LABELS_FILE).content) == {
        "node-label": ["oceanid.cluster/tunnel-enabled=true"],
        "node-taint": ["workload-type=gpu-compute:NoSchedule"],
    }
    assert config.LABELS_FILE not in inputs and config.CONFIG in inputs
    data["hosts"]["calypso"]["k3s"]["labels"]["oceanid.cluster/x"] = "y"
    data["hosts"]["calypso"]["k3s"]["taints"].append("dedicated:NoExecute")
    site = make_site()
    after = agent.declare(site.hosts["calypso"], site).desired
    changed = {f.path for f in after.files if f.content != before.file(f.path).content}
    assert changed == {config.LABELS_FILE}


def test_calypso_is_labelled_and_tainted_from_its_host_data(make_site) -> None:
    wanted = cluster.wanted_labels(make_site())
    assert list(wanted) == ["tethys", "styx", "calypso"]  # servers first
    assert wanted["calypso"] == {
        "labels": {"oceanid.cluster/tunnel-enabled": "true"},
        "taints": ["workload-type=gpu-compute:NoSchedule"],
    }


def test_the_pinned_k3s_ships_the_nvidia_runtime_class_so_the_deploy_writes_none(make_site):
    """k3s writes its own manifests/runtimes.yaml (with `nvidia`) into the folder; a second file
    of ours would make two Addons claim the one object."""
    site = make_site()  # group_data as shipped: calypso require_gpu True, k3s v1.33.4+k3s1
    assert cluster.gpu_agents(site)
    tethys = server.declare(site.hosts["tethys"], site).desired
    assert server.RUNTIME_CLASS_FILE not in [f.path for f in tethys.files]
    assert not [f for f in tethys.files if b"kind: RuntimeClass" in f.content]


@pytest.mark.parametrize(
    "version, ships",
    [
        ("v1.33.4+k3s1", True),
        ("v1.29.0+k3s1", True),
        ("v1.30.2-rc1+k3s1", True),
        ("v1.28.4+k3s2", False),  # v1.29.0+k3s1's notes: runtime classes new since this one
        ("v1.27.16+k3s1", False),
        ("not-a-version", False),
    ],
)
def test_which_k3s_versions_ship_the_runtime_class(version, ships):
    assert cluster.ships_runtime_class(version) is ships


def test_a_k3s_without_its_own_runtime_class_gets_the_deploys(make_site, data):
    data["k3s"] = {**data["k3s"], "version": "v1.28.4+k3s2"}
    site = make_site()
    declared = server.declare(site.hosts["tethys"], site)
    tethys, before_start = declared.desired, declared.before_start
    runtime_class = tethys.file(server.RUNTIME_CLASS_FILE)
    assert runtime_class.path not in before_start  # its folder exists once k3s ran
    assert yaml.safe_load(runtime_class.content) == {
        "apiVersion": "node.k8s.io/v1",
        "kind": "RuntimeClass",
        "metadata": {"name": "nvidia"},
        "handler": "nvidia",
    }


def test_without_a_required_gpu_there_is_no_runtime_class(make_site, data) -> None:
    data["hosts"]["calypso"]["gpu"]["require_gpu"] = False
    data["k3s"] = {**data["k3s"], "version": "v1.28.4+k3s2"}
    site = make_site()
    tethys = server.declare(site.hosts["tethys"], site).desired
    assert server.RUNTIME_CLASS_FILE not in [f.path for f in tethys.files]


def test_units_binary_and_kernel_files_are_the_roles(make_site) -> None:
    site = make_site()
    declared = server.declare(site.hosts["tethys"], site)
    tethys, inputs = declared.desired, declared.inputs
    styx = agent.declare(site.hosts["styx"], site).desired
    assert [b.path for b in tethys.binaries] == [units.BINARY]
    assert tethys.binaries[0].version == site.hosts["tethys"].settings.k3s.version
    assert (
        "ExecStart=/usr/local/bin/k3s server"
        in tethys.file("/etc/systemd/system/k3s.service").content.decode()
    )
    assert (
        "ExecStart=/usr/local/bin/k3s agent"
        in styx.file("/etc/systemd/system/k3s-agent.service").content.decode()
    )
    assert units.MODULES_FILE in [f.path for f in styx.files]
    assert units.BINARY in inputs and config.CONFIG in inputs


@pytest.mark.parametrize("port", [6443, 6444, 10250, 2379])
def test_the_balancer_never_takes_a_port_k3s_binds(data, port) -> None:
    data["k3s_lb_port"] = port
    with pytest.raises(ValueError, match="k3s_lb_port: k3s itself binds this port"):
        from_data(data)


def test_a_label_kubernetes_refuses_is_refused_in_settings(data) -> None:
    data["hosts"]["calypso"]["k3s"]["labels"] = {"bad key!": "x"}
    data["hosts"]["calypso"]["k3s"]["taints"] = ["gpu:Sometimes"]
    with pytest.raises(ValueError) as error:
        from_data(data)
    assert "hosts.calypso.k3s.labels: node label key 'bad key!'" in str(error.value)
    assert "hosts.calypso.k3s.taints: node taint 'gpu:Sometimes'" in str(error.value)


def test_every_nodes_config_is_one_the_k3s_standin_accepts_for_its_role(make_site, tmp_path):
    """The stand-in refuses keys the role's k3s command does not have, as k3s does."""
    from tests.unit.test_k3s_config import _standin

    standin = _standin()
    site = make_site({"tethys": {SERVERS}, "nereid": {SERVERS}, "styx": {AGENTS}})
    for name, role, built in (
        ("tethys", "server", server.declare(site.hosts["tethys"], site).desired),
        ("nereid", "server", server.declare(site.hosts["nereid"], site).desired),
        ("styx", "agent", agent.declare(site.hosts["styx"], site).desired),
    ):
        path = tmp_path / f"{name}.yaml"
        path.write_bytes(built.file(config.CONFIG).content)
        options = standin.Options(role, ["--config", str(path)])
        standin.node_labels(options)
        standin.node_taints(options)
        assert options.get("node-name") == name
