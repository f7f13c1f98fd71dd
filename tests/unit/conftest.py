"""Shared fixtures for unit tests: a valid settings dict and a fake-secret factory."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


@pytest.fixture(autouse=True)
def _deploy_lock_of_its_own(tmp_path_factory, monkeypatch):
    """Every unit test's deploy lock in a folder of its own, not this machine's
    /run/oceanid/deploy.lock: a test that runs pyinfra inside the test process holds its lock
    for as long as that process lives, and would refuse every later `pyinfra @local` run of
    the session (the lock's holder, the test process, is still there). Subprocesses inherit it."""
    from operations._lock import LOCK_ENV

    folder = tmp_path_factory.mktemp("deploy-lock")
    monkeypatch.setenv(LOCK_ENV, str(folder / "deploy.lock"))


def _group_data() -> dict:
    namespace: dict = {}
    exec(
        compile((REPO / "group_data" / "all.py").read_text(), "group_data/all.py", "exec"),
        namespace,
    )
    data = {k: v for k, v in namespace.items() if not k.startswith("__")}
    return data


@pytest.fixture
def data() -> dict:
    """group_data/all.py as shipped."""
    return copy.deepcopy(_group_data())


def with_node_ips(data: dict, names) -> dict:
    """`data` with an IP address (192.0.2.0/24, documentation's) for each of `names` that has
    none: with provisioning on, every k3s node's firewall admits the others by address, so
    preflight refuses a node without one (production's group data names none). A node without
    an `address` gets its own name there, as if the nodes resolved it by DNS: agents join the
    first server by its address, and preflight refuses an inventory alias in its place."""
    hosts = data.setdefault("hosts", {})
    for index, name in enumerate(names):
        k3s = hosts.setdefault(name, {}).setdefault("k3s", {})
        if not {"address", "node_ip", "node_external_ip"} & set(k3s):
            k3s["node_ip"] = f"192.0.2.{10 + index}"
        k3s.setdefault("address", name)
    return data
