"""The k3s units, kernel modules and sysctls as rendered, read back as systemd reads them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from deploys.k3s import units

# What the upstream unit has and ours must keep (issue 10, item 1).
REQUIRED = {
    ("Unit", "Wants", "network-online.target"),
    ("Unit", "After", "network-online.target"),
    ("Service", "Type", "notify"),
    ("Service", "KillMode", "process"),
    ("Service", "Delegate", "yes"),
    ("Service", "LimitNOFILE", "1048576"),
    ("Service", "LimitNPROC", "infinity"),
    ("Service", "LimitCORE", "infinity"),
    ("Service", "TasksMax", "infinity"),
    ("Service", "TimeoutStartSec", "0"),
    ("Service", "Restart", "always"),
    ("Service", "RestartSec", "5s"),
    ("Service", "ExecStartPre", "-/sbin/modprobe br_netfilter"),
    ("Service", "ExecStartPre", "-/sbin/modprobe overlay"),
    ("Install", "WantedBy", "multi-user.target"),
}


def _directives(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for each line, repeated keys kept (configparser would merge them)."""
    section, found = "", []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.append((section, key, value))
    return found


@pytest.mark.parametrize(
    ("role", "name"), [("server", "k3s.service"), ("agent", "k3s-agent.service")]
)
def test_unit_has_what_the_upstream_unit_has(role: str, name: str) -> None:
    assert units.UNIT_NAMES[role] == name
    directives = _directives(units.unit(role))  # type: ignore[arg-type]
    assert set(directives) >= REQUIRED
    assert ("Service", "ExecStart", f"/usr/local/bin/k3s {role}") in directives
    assert [key for section, key, _ in directives if section == "Service"].count("ExecStart") == 1


@pytest.mark.parametrize("role", ["server", "agent"])
def test_k3s_does_not_start_without_the_host_firewall(role: str) -> None:
    """A boot where the firewall's table failed to load must not bring k3s up with its ports
    open to everyone: the unit checks for the table before it starts, as its first step."""
    directives = _directives(units.unit(role))  # type: ignore[arg-type]
    pre = [value for section, key, value in directives if key == "ExecStartPre"]
    assert pre[0] == "/usr/sbin/nft list table inet oceanid"  # no "-": a failure stops k3s


@pytest.mark.parametrize("role", ["server", "agent"])
def test_unit_carries_no_settings_environment_or_token(role: str) -> None:
    """Settings live in config.yaml; a token in a unit or its environment is readable by all."""
    text = units.unit(role)  # type: ignore[arg-type]
    keys = {key for _, key, _ in _directives(text)}
    assert not keys & {"Environment", "EnvironmentFile"}
    exec_start = next(value for _, key, value in _directives(text) if key == "ExecStart")
    assert "--" not in exec_start
    assert not [value for _, _, value in _directives(text) if "token" in value.lower()]


def test_unknown_role_is_refused() -> None:
    with pytest.raises(ValueError, match="'server' or 'agent'"):
        units.unit("worker")  # type: ignore[arg-type]


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd's own parser: an unknown key or a bad value is a warning on stderr (exit 0)."""
    binary = tmp_path / "k3s"  # verify checks that ExecStart's program exists and is executable
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    paths = []
    for role, name in units.UNIT_NAMES.items():
        path = tmp_path / name
        path.write_text(units.unit(role, binary=str(binary)))  # type: ignore[arg-type]
        paths.append(str(path))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *paths],
        capture_output=True,
        text=True,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")


def test_modules_file_loads_what_the_unit_probes() -> None:
    lines = [line for line in units.modules_load().splitlines() if not line.startswith("#")]
    assert lines == ["br_netfilter", "overlay"]


def test_sysctl_file_sets_bridge_filtering_and_forwarding() -> None:
    lines = [line for line in units.sysctl().splitlines() if not line.startswith("#")]
    settings = dict(line.split(" = ") for line in lines)
    assert settings == {
        "net.bridge.bridge-nf-call-iptables": "1",
        "net.bridge.bridge-nf-call-ip6tables": "1",
        "net.ipv4.ip_forward": "1",
    }
