"""Which hosts each role's checks run on: the pyinfra inventory says, nothing is typed twice.

`pytest tests/hosts --inventory=inventories/lab.py` (`make verify [INVENTORY=…]`) loads the
inventory as pyinfra does (`pyinfra_cli.inventory.make_inventory`, group data included) and runs
each role module on exactly the hosts of its group, reached as pyinfra reaches them: the host's
`ssh_hostname`/`ssh_port`/`ssh_user`, its `ssh_config_file` and `ssh_key`, and `sudo` when its
data sets `_sudo` (calypso's `oceanid` account).

`pytest tests/hosts --hosts=ssh://calypso,…` (plain testinfra) checks the hosts given, as
testinfra's own options say to reach them; their roles still come from the inventory
(`--inventory`, `inventory.py` by default), so calypso gets the GPU checks and tethys does not.
A role with no host in the run is not collected: nothing is skipped, nothing counted twice.

With neither option nothing here is collected, so a bare `pytest` never reaches production.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest

from oceanid import model

DEFAULT_INVENTORY = "inventory.py"
ALL_HOSTS = None
# What a GPU host serves, from its data (`hosts.<name>.gpu.service`): more groups to match on.
TRITON, TRITON_HOST, TRITON_CONTAINER, GPU_HTTP = (
    "triton",
    "triton runtime host",
    "triton runtime container",
    "gpu http",
)
# module -> the inventory group whose hosts it checks (ALL_HOSTS: every host)
ROLE_MODULES = {
    "test_base": ALL_HOSTS,
    "test_gpu": model.GPU_HOSTS,
    "test_triton": TRITON,
    "test_ml_backend": TRITON,  # the ML backend runs beside each Triton
    "test_triton_host": TRITON_HOST,
    "test_triton_container": TRITON_CONTAINER,
    "test_gpu_http": GPU_HTTP,
    "test_k3s_server": model.K3S_SERVERS,
    "test_k3s_agent": model.K3S_AGENTS,
    "test_cluster_apps": model.K3S_SERVERS,
}
# Modules that check what k3s provisioning installs: only hosts with it enabled.
PROVISIONED = ("test_k3s_server", "test_k3s_agent", "test_cluster_apps")


@dataclass(frozen=True)
class InventoryHost:
    name: str
    groups: frozenset[str]  # its inventory groups, and what its GPU service is (TRITON…)
    spec: str  # a testinfra host spec reaching the host as pyinfra does
    provisioned: bool  # enable_node_provisioning in its data


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--inventory",
        default=None,
        help=f"pyinfra inventory whose hosts and groups to check (default {DEFAULT_INVENTORY})",
    )


def testinfra_spec(name: str, data: dict) -> str:
    """`ssh://[user@]host[:port]?ssh_config=…&ssh_identity_file=…&sudo=true` from host data."""
    hostname = str(data.get("ssh_hostname") or name)
    user = data.get("ssh_user")
    netloc = f"{quote(str(user))}@{hostname}" if user else hostname
    if data.get("ssh_port"):
        netloc += f":{int(data['ssh_port'])}"
    query = {}
    if data.get("ssh_config_file"):
        query["ssh_config"] = str(data["ssh_config_file"])
    if data.get("ssh_key"):
        query["ssh_identity_file"] = str(data["ssh_key"])
    if data.get("_sudo"):
        query["sudo"] = "true"
    return f"ssh://{netloc}" + (f"?{urlencode(query)}" if query else "")


# Run in a child process: pyinfra's CLI package patches the stdlib for gevent on import, which
# the test process (testinfra's SSH subprocesses) is better without.
_LOAD = """
import json, sys
from oceanid import preflight
KEYS = ("ssh_hostname", "ssh_port", "ssh_user", "ssh_config_file", "ssh_key", "_sudo",
        "enable_node_provisioning")

def service(h):
    gpu = ((h.data.get("hosts") or {}).get(h.name) or {}).get("gpu")
    if gpu is None or "gpu_hosts" not in h.groups:
        return []
    kind = (gpu.get("service") or {}).get("kind", "triton")
    runtime = (gpu.get("service") or {}).get("runtime", "container")
    return ["gpu http"] if kind == "http" else ["triton", "triton runtime " + runtime]


hosts = [
    {
        "name": h.name,
        "groups": sorted(h.groups) + service(h),
        "data": {k: h.data.get(k) for k in KEYS},
    }
    for h in preflight.load_inventory(sys.argv[1])
]
print(json.dumps(hosts))
"""


def inventory_hosts(path: str) -> list[InventoryHost]:
    """The inventory's hosts, loaded exactly as the pyinfra CLI loads them."""
    done = subprocess.run(
        [sys.executable, "-c", _LOAD, path], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:  # e.g. the lab inventory while the lab is down: its one line
        reason = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise pytest.UsageError(f"--inventory {path}: {reason}")
    return [
        InventoryHost(
            name=host["name"],
            groups=frozenset(host["groups"]),
            spec=testinfra_spec(host["name"], host["data"]),
            provisioned=bool(host["data"]["enable_node_provisioning"]),
        )
        for host in json.loads(done.stdout)
    ]


def pytest_configure(config: pytest.Config) -> None:
    """Load the inventory once, before collection, so a refusal is one line, not a traceback."""
    given = config.getoption("--inventory", None)
    wanted = given is not None or config.getoption("hosts", None) is not None
    config._oceanid_hosts = inventory_hosts(given or DEFAULT_INVENTORY) if wanted else None


def _hosts(config: pytest.Config) -> list[InventoryHost] | None:
    return getattr(config, "_oceanid_hosts", None)


def role_hosts(module: str, hosts: list[InventoryHost]) -> list[InventoryHost]:
    group = ROLE_MODULES[module]
    return [
        host
        for host in hosts
        if (group is ALL_HOSTS or group in host.groups)
        and (module not in PROVISIONED or host.provisioned)
    ]


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.suffix != ".py" or collection_path.stem not in ROLE_MODULES:
        return None
    hosts = _hosts(config)
    if hosts is None:
        return True
    if config.getoption("hosts", None) is not None:
        return None  # the hosts given are matched to the role in collection_modifyitems
    return not role_hosts(collection_path.stem, hosts)


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Before testinfra's own hook: each role module's hosts, from the inventory."""
    hosts = _hosts(metafunc.config)
    module = metafunc.module.__name__.rpartition(".")[2]
    if hosts is not None and module in ROLE_MODULES:
        metafunc.module.testinfra_hosts = [h.spec for h in role_hosts(module, hosts)]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With --hosts, each host keeps only its roles' modules (matched by host name)."""
    hosts = _hosts(config)
    if hosts is None or config.getoption("hosts", None) is None:
        return
    keep, drop = [], []
    for item in items:
        module = item.module.__name__.rpartition(".")[2]
        spec = getattr(item, "callspec", None)
        tested = spec.params.get("_testinfra_host") if spec else None
        if tested is None or module not in ROLE_MODULES:
            keep.append(item)
            continue
        names = {h.name for h in role_hosts(module, hosts)}
        (keep if tested.backend.host.name in names else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
