"""testinfra checks of a k3s agent (the `k3s_agents` group, with enable_node_provisioning).

The agent runs `k3s-agent.service` from the deploy's own unit, joins through the endpoint in its
config.yaml and holds the token only in its 0600 file.
"""

import yaml

from deploys.k3s.config import CONFIG
from tests.hosts.k3s_common import check_firewall, check_node


def test_agent_unit_binary_and_token(host):
    check_node(host, "agent")


def test_agent_joins_through_an_https_endpoint(host):
    with host.sudo():
        config = yaml.safe_load(host.file(CONFIG).content_string)
    assert config["server"].startswith("https://"), config.get("server")


def test_agent_is_not_a_server(host):
    assert not host.service("k3s.service").is_running


def test_k3s_ports_are_firewalled(host):
    check_firewall(host)
