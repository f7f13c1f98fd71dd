"""`make verify`: each role's testinfra module runs on exactly its group's hosts, reached as the
inventory says. Checked with pytest's own collection (nothing connects) on real inventories."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lab.converge import verify_argv
from tests.hosts.conftest import inventory_hosts

REPO = Path(__file__).resolve().parents[2]


def collect(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q",
         "tests/hosts", *args],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def collected(done: subprocess.CompletedProcess[str]) -> set[tuple[str, str]]:
    """(module, host) pairs from pytest's collection listing."""
    pairs = set()
    for line in done.stdout.splitlines():
        if "::" in line and "[ssh://" in line:
            module = line.split("::")[0].rsplit("/", 1)[1].removesuffix(".py")
            host = line.split("[ssh://", 1)[1].split("]")[0].split("-")[0]
            pairs.add((module, host))
    return pairs


def test_production_inventory_roles_and_login():
    done = collect("--inventory=inventory.py")
    assert done.returncode == 0, done.stdout + done.stderr
    assert collected(done) == {
        ("test_base", "tethys"),
        ("test_base", "styx"),
        ("test_base", "calypso"),
        ("test_gpu", "calypso"),  # and k3s only with enable_node_provisioning, off here
        ("test_triton", "calypso"),  # its service, from its data: Triton in a container
        ("test_triton_container", "calypso"),
        ("test_ml_backend", "calypso"),  # the ML-backend adapter beside a `triton` kind
    }
    specs = {host.name: host.spec for host in inventory_hosts("inventory.py")}
    assert specs == {
        "tethys": "ssh://tethys",
        "styx": "ssh://styx",
        "calypso": "ssh://oceanid@calypso?sudo=true",  # its hosts: entry, written once
    }


def test_provisioned_inventory_gets_the_k3s_modules(tmp_path):
    inventory = tmp_path / "inventory.py"
    inventory.write_text(
        "common = {'enable_node_provisioning': True, 'ssh_config_file': '/srv/lab/ssh config'}\n"
        "k3s_servers = [('tethys', common)]\n"
        "k3s_agents = [('styx', common), ('calypso', {**common, 'ssh_user': 'oceanid',"
        " '_sudo': True, 'ssh_port': 2222})]\n"
        "gpu_hosts = [('calypso', {})]\n"
    )
    done = collect(f"--inventory={inventory}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert collected(done) == {
        *{("test_base", host) for host in ("tethys", "styx", "calypso")},
        ("test_gpu", "calypso"),
        ("test_triton", "calypso"),
        ("test_triton_container", "calypso"),
        ("test_ml_backend", "calypso"),
        ("test_k3s_server", "tethys"),
        ("test_cluster_apps", "tethys"),
        ("test_k3s_agent", "styx"),
        ("test_k3s_agent", "calypso"),
    }
    specs = {host.name: host.spec for host in inventory_hosts(str(inventory))}
    assert specs["tethys"] == "ssh://tethys?ssh_config=%2Fsrv%2Flab%2Fssh+config"
    assert specs["calypso"] == (
        "ssh://oceanid@calypso:2222?ssh_config=%2Fsrv%2Flab%2Fssh+config&sudo=true"
    )


def test_plain_hosts_option_keeps_each_hosts_roles():
    done = collect("--hosts=ssh://calypso,ssh://tethys")
    assert done.returncode == 0, done.stdout + done.stderr
    assert collected(done) == {
        ("test_base", "tethys"),
        ("test_base", "calypso"),
        ("test_gpu", "calypso"),
        ("test_triton", "calypso"),
        ("test_triton_container", "calypso"),
        ("test_ml_backend", "calypso"),
    }
    assert "deselected" in done.stdout


def test_bare_pytest_collects_nothing_here():
    done = collect()
    assert collected(done) == set()


def test_an_inventory_that_refuses_to_load_is_one_line(tmp_path):
    inventory = tmp_path / "lab.py"
    inventory.write_text('raise SystemExit("lab: the lab is down (no bridge ocl-br0)")\n')
    done = collect(f"--inventory={inventory}")
    assert done.returncode != 0
    assert done.stderr.strip() == (
        f"ERROR: --inventory {inventory}: lab: the lab is down (no bridge ocl-br0)"
    )
    assert "Traceback" not in done.stdout + done.stderr


def test_lab_verify_takes_the_lab_inventory():
    argv = verify_argv()
    assert "--inventory=inventories/lab.py" in argv
    assert not any(arg.startswith("--hosts") for arg in argv)
