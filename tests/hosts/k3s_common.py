"""Checks every k3s node gets, server or agent: the files the k3s role writes and its unit.

Paths and unit names come from the deploy's own modules (deploys/k3s), so a check and the
deploy never disagree about where a thing lives.
"""

from __future__ import annotations

import yaml

from deploys.k3s import firewall
from deploys.k3s.config import CONFIG, TOKEN_FILE
from deploys.k3s.node import unit_file
from deploys.k3s.units import BINARY, MODULES_FILE, SYSCTL_FILE, UNIT_NAMES

GENERATED_TOKEN = "/var/lib/rancher/k3s/server/token"  # what k3s writes when given none


def check_node(host, role: str) -> None:
    unit = UNIT_NAMES[role]
    service = host.service(unit)
    assert service.is_enabled, f"{unit} is not enabled"
    assert service.is_running, f"{unit} is not running"
    binary = host.file(BINARY)
    assert binary.is_file and binary.mode == 0o755 and binary.user == "root", BINARY
    assert "k3s version v" in host.check_output(f"{BINARY} --version")
    for path in (MODULES_FILE, SYSCTL_FILE):
        assert host.file(path).is_file, f"{path} is missing"
    with host.sudo():
        config = yaml.safe_load(host.file(CONFIG).content_string)
        # Ours (token-file, 0600), or on a first server without a k3s_token k3s's own.
        token_path = config.get("token-file") or (GENERATED_TOKEN if role == "server" else None)
        assert token_path in (TOKEN_FILE, GENERATED_TOKEN), f"{CONFIG}: no token-file"
        token = host.file(token_path)
        assert (token.user, token.mode) == ("root", 0o600), f"{token_path} is not root's 0600"
        unit_text = host.file(unit_file(role)).content_string
        secret = token.content_string.strip()
        processes = host.check_output("ps -eo args")
    assert "token" not in config, f"{CONFIG} holds the token itself"
    # Booleans first: pytest's assertion messages would print the values compared.
    long_enough, in_unit, in_args = len(secret) >= 16, secret in unit_text, secret in processes
    assert long_enough, f"{token_path} holds no token"
    assert not in_unit, f"the cluster token is in {unit}"
    assert not in_args, "the cluster token is in a process's arguments"
    if role == "agent":  # design.md §7: the agent token in full, never the server token
        agent_token = secret.startswith("K10") and "::node:" in secret and "::server:" not in secret
        assert agent_token, f"{token_path} holds no full agent token (K10<CA hash>::node:...)"


def check_firewall(host) -> None:
    """The deploy's nftables table is loaded and its unit enabled for every boot."""
    service = host.service(firewall.UNIT)
    assert service.is_enabled, f"{firewall.UNIT} is not enabled"
    assert service.is_running, f"{firewall.UNIT} is not active"
    rules = host.file(firewall.RULES)
    assert rules.is_file and rules.user == "root", firewall.RULES
    with host.sudo():
        table = host.check_output("nft list table inet oceanid")
    assert "tcp dport" in table and "6443" in table and "drop" in table, table
