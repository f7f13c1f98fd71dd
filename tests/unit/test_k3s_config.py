"""config.yaml for k3s servers and agents, as data, and the text k3s reads."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path

import pytest
import yaml

from deploys.k3s import config as k3s_config

STANDIN = Path(__file__).resolve().parents[1] / "standins" / "k3s"
ENDPOINT = "https://10.0.0.1:6443"


def _server(**kwargs: object) -> dict:
    args: dict = {"node_name": "tethys", "address": "203.0.113.20", "endpoint": ENDPOINT}
    return k3s_config.config("server", **(args | kwargs))


def _agent(**kwargs: object) -> dict:
    args: dict = {"node_name": "styx", "address": "203.0.113.21", "endpoint": ENDPOINT}
    return k3s_config.config("agent", **(args | kwargs))


def test_server_disables_traefik_and_servicelb_and_names_every_api_address() -> None:
    document = _server()
    assert document["disable"] == ["traefik", "servicelb"]
    assert document["tls-san"] == ["tethys", "203.0.113.20", "10.0.0.1", "127.0.0.1"]
    assert document["token-file"] == "/etc/rancher/k3s/token"
    assert "token" not in document and "server" not in document


def test_tls_san_lists_an_address_once() -> None:
    document = _server(endpoint="https://203.0.113.20:6443")
    assert document["tls-san"] == ["tethys", "203.0.113.20", "127.0.0.1"]


def test_kubeconfig_mode_is_a_string_for_a_yaml_1_1_reader() -> None:
    """Unquoted, k3s's YAML 1.1 parser reads 0600 as the octal number 384."""
    text = k3s_config.dump(_server())
    assert yaml.safe_load(text)["write-kubeconfig-mode"] == "0600"  # PyYAML is YAML 1.1
    assert "write-kubeconfig-mode: '0600'" in text


def test_agent_joins_through_the_endpoint_with_a_token_file() -> None:
    document = _agent(node_ip="10.0.0.2", flannel_iface="wg0")
    assert document == {
        "server": ENDPOINT,
        "token-file": "/etc/rancher/k3s/token",
        "node-name": "styx",
        "node-ip": "10.0.0.2",
        "flannel-iface": "wg0",
    }


def test_node_ip_and_flannel_iface_only_when_given() -> None:
    assert "node-ip" not in _server() and "flannel-iface" not in _server()


def test_labels_and_taints_in_k3s_form() -> None:
    document = _agent(
        labels={"oceanid.cluster/tunnel-enabled": "true", "node.kubernetes.io/gpu": ""},
        taints=["workload-type=gpu-compute:NoSchedule", "dedicated:NoExecute"],
    )
    assert document["node-label"] == [
        "node.kubernetes.io/gpu=",
        "oceanid.cluster/tunnel-enabled=true",
    ]
    assert document["node-taint"] == ["workload-type=gpu-compute:NoSchedule", "dedicated:NoExecute"]


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"node-role.kubernetes.io/worker": "true"}, "refuses node-role.kubernetes.io"),
        ({"node-role.kubernetes.io/control-plane": ""}, "refuses node-role.kubernetes.io"),
        ({"kubernetes.io/role": "gpu"}, "kubernetes.io and k8s.io namespaces"),
        ({"example.k8s.io/x": "y"}, "kubernetes.io and k8s.io namespaces"),
        ({"oceanid.cluster/gpu": "yes please"}, "not a Kubernetes label value"),
        ({"Bad_Prefix/x": "y"}, "not a Kubernetes label key"),
        ({"a" * 64: "y"}, "not a Kubernetes label key"),
    ],
)
def test_labels_the_kubelet_refuses_are_refused(labels: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _agent(labels=labels)


def test_labels_the_kubelet_sets_itself_are_allowed() -> None:
    document = _agent(
        labels={"topology.kubernetes.io/zone": "fsn1", "kubelet.kubernetes.io/x": "1"},
    )
    assert len(document["node-label"]) == 2


@pytest.mark.parametrize(
    ("taint", "message"),
    [
        ("workload-type=gpu-compute", "must be key\\[=value\\]:Effect"),
        ("workload-type=gpu-compute:NoScheduling", "effect must be one of"),
        ("workload type=gpu:NoSchedule", "not a Kubernetes label key"),
    ],
)
def test_bad_taints_are_refused(taint: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _agent(taints=[taint])


@pytest.mark.parametrize(
    "endpoint", ["10.0.0.1:6443", "http://10.0.0.1:6443", "https://10.0.0.1", "https://:6443"]
)
def test_endpoint_must_be_an_https_url_with_a_port(endpoint: str) -> None:
    with pytest.raises(ValueError, match="must be https://HOST:PORT"):
        _agent(endpoint=endpoint)


def _standin() -> object:
    loader = importlib.machinery.SourceFileLoader("k3s_standin", str(STANDIN))
    spec = importlib.util.spec_from_loader("k3s_standin", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.mark.parametrize("role", ["server", "agent"])
def test_the_dumped_file_is_one_k3s_reads_for_its_role(role: str, tmp_path: Path) -> None:
    """The k3s stand-in refuses keys the role's command does not have and bad labels/taints."""
    standin = _standin()
    build = _server if role == "server" else _agent
    path = tmp_path / "config.yaml"
    path.write_text(
        k3s_config.dump(
            build(
                node_ip="10.0.0.5",
                labels={"oceanid.cluster/tunnel-enabled": "true"},
                taints=["workload-type=gpu-compute:NoSchedule"],
            )
        )
    )
    options = standin.Options(role, ["--config", str(path)])  # type: ignore[attr-defined]
    standin.node_labels(options)  # type: ignore[attr-defined] - refuses what k3s refuses
    standin.node_taints(options)  # type: ignore[attr-defined]
    assert options.get("token-file") == "/etc/rancher/k3s/token"
    assert options.get("node-taint") == ["workload-type=gpu-compute:NoSchedule"]
    if role == "server":
        assert options.get("write-kubeconfig-mode") == "0600"


def test_servers_encrypt_secrets_at_rest_and_the_standin_reads_it(tmp_path: Path) -> None:
    """`secrets-encryption` is a server flag (k3s pkg/cli/cmds/server.go); agents have none."""
    assert _server()["secrets-encryption"] is True
    assert "secrets-encryption" not in _agent()
    path = tmp_path / "config.yaml"
    path.write_text(k3s_config.dump(_server()))
    options = _standin().Options("server", ["--config", str(path)])  # type: ignore[attr-defined]
    assert options.get("secrets-encryption") is True


def test_the_flannel_backend_is_a_server_key_and_the_standin_reads_it(tmp_path: Path) -> None:
    """k3s's flannel-backend flag is a server's (pkg/cli/cmds/server.go); an agent takes the
    server's at start (pkg/agent/config/config.go) and the stand-in refuses it there."""
    document = _server(flannel_backend="wireguard-native")
    assert document["flannel-backend"] == "wireguard-native"
    assert "flannel-backend" not in _server()
    with pytest.raises(ValueError, match="flannel-backend is a k3s server key"):
        _agent(flannel_backend="wireguard-native")
    standin = _standin()
    path = tmp_path / "config.yaml"
    path.write_text(k3s_config.dump(document))
    options = standin.Options("server", ["--config", str(path)])  # type: ignore[attr-defined]
    assert options.get("flannel-backend") == "wireguard-native"
    path.write_text(k3s_config.dump(_agent()) + "flannel-backend: vxlan\n")
    with pytest.raises(standin.Failure):  # type: ignore[attr-defined]
        standin.Options("agent", ["--config", str(path)])  # type: ignore[attr-defined]


@pytest.mark.parametrize("role", ["server", "agent"])
def test_node_addresses_reach_the_config_and_the_standin_reads_them(
    role: str, tmp_path: Path
) -> None:
    build = _server if role == "server" else _agent
    document = build(node_ip="10.0.0.5", node_external_ip="203.0.113.5")
    assert (document["node-ip"], document["node-external-ip"]) == ("10.0.0.5", "203.0.113.5")
    assert "node-external-ip" not in build(node_ip="10.0.0.5")
    path = tmp_path / "config.yaml"
    path.write_text(k3s_config.dump(document))
    options = _standin().Options(role, ["--config", str(path)])  # type: ignore[attr-defined]
    assert options.get("node-external-ip") == ["203.0.113.5"]


def test_an_agents_file_names_the_servers_backend_as_a_comment() -> None:
    """A backend changed on the servers changes the agents' config.yaml too (so they restart
    and take it), without a key k3s's agent does not have."""
    text = k3s_config.dump(_agent()) + k3s_config.agent_note("wireguard-native")
    assert yaml.safe_load(text) == _agent()
    assert text != k3s_config.dump(_agent()) + k3s_config.agent_note("vxlan")


def test_servers_name_the_agent_token_file_and_the_standin_reads_it(tmp_path: Path) -> None:
    """`agent-token-file` is a server flag (k3s pkg/cli/cmds/server.go); its content, trimmed,
    is the `node` user's password (pkg/cli/server/server.go, deps.go genUsers)."""
    secret = tmp_path / "agent-token"
    secret.write_text("k3s-agent-secret-0123456789abcdef\n")
    document = _server(agent_token_file=str(secret))
    assert document["agent-token-file"] == str(secret)
    assert "agent-token" not in document and "agent-token-file" not in _server()
    with pytest.raises(ValueError, match="agent-token-file is a k3s server key"):
        _agent(agent_token_file=str(secret))
    path = tmp_path / "config.yaml"
    path.write_text(k3s_config.dump(document))
    options = _standin().Options("server", ["--config", str(path)])  # type: ignore[attr-defined]
    assert options.agent_token() == "k3s-agent-secret-0123456789abcdef"
    assert "k3s-agent-secret" not in path.read_text()  # the file names it, never holds it
