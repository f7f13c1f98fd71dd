"""testinfra checks of a k3s server (the `k3s_servers` group, with enable_node_provisioning).

The server runs `k3s.service` from the deploy's own unit, holds its token in a 0600 file, answers
on 6443 and sees every node of the cluster Ready.
"""

import json

from tests.hosts.k3s_common import check_firewall, check_node


def test_server_unit_binary_and_token(host):
    check_node(host, "server")


def test_api_listens_on_6443(host):
    """On every address: real k3s binds [::]:6443 (both families), an IPv4-only one 0.0.0.0."""
    assert any(
        host.socket(f"tcp://{any_address}:6443").is_listening for any_address in ("0.0.0.0", "::")
    )


def test_kubeconfig_is_private(host):
    with host.sudo():
        kubeconfig = host.file("/etc/rancher/k3s/k3s.yaml")
        assert kubeconfig.is_file
        assert (kubeconfig.user, kubeconfig.mode) == ("root", 0o600)


def test_every_node_ready(host):
    with host.sudo():
        nodes = json.loads(host.check_output("k3s kubectl get nodes -o json --request-timeout=10s"))
    ready = {
        item["metadata"]["name"]: any(
            c["type"] == "Ready" and c["status"] == "True" for c in item["status"]["conditions"]
        )
        for item in nodes["items"]
    }
    assert ready and all(ready.values()), ready


def test_k3s_ports_are_firewalled(host):
    check_firewall(host)
