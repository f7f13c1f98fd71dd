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
