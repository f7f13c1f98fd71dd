"""lab/docker_host.py: the shape of the nspawn settings a Docker lab host gets, and the host's
own cgroups, on a folder laid out like this machine's /sys/fs/cgroup (cgroup v1 hybrid).

That Docker runs with these settings is shown by the experiment in lab/docker.md, not here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from lab import docker_host

HYBRID = "9:name=systemd:/\n8:pids:/\n1:cpu:/\n0::/\n"


def _machine(tmp_path: Path, *folders: str) -> Path:
    root = tmp_path / "cgroup"
    for folder in folders:
        (root / folder).mkdir(parents=True)
    return root


def test_nspawn_options_allow_what_runc_calls():
    options = docker_host.nspawn_options()
    assert all(isinstance(o, str) and o.startswith("--system-call-filter=") for o in options)
    allowed = {o.split("=", 1)[1] for o in options}
    assert {"@keyring", "bpf"} <= allowed


def test_nspawn_env_gives_the_host_cgroup2_and_a_writable_net_sysctl():
    env = docker_host.nspawn_env()
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
    assert env["SYSTEMD_NSPAWN_UNIFIED_HIERARCHY"] == "1"
    assert env["SYSTEMD_NSPAWN_API_VFS_WRITABLE"] in {"network", "yes"}


def test_daemon_json_is_json_and_pins_overlay2():
    settings = docker_host.daemon_json()
    assert json.loads(json.dumps(settings)) == settings
    assert settings["storage-driver"] == "overlay2"
    assert not {"iptables", "bridge"} & settings.keys()  # the host has its own netns


def test_cgroup_dirs_are_children_of_the_callers_own_in_the_payload_hierarchies(tmp_path):
    root = _machine(tmp_path, "systemd/lab", "unified/lab", "cpu")
    nested = "9:name=systemd:/lab\n1:cpu:/\n0::/lab\n"
    assert docker_host.cgroup_dirs("calypso2", nested, root) == [
        root / "systemd/lab/ocl-calypso2",
        root / "unified/lab/ocl-calypso2",
    ]
    assert docker_host.cgroup_dirs("calypso2", HYBRID, root)[0] == root / "systemd/ocl-calypso2"


def test_cgroup_dirs_skip_hierarchies_this_machine_does_not_mount(tmp_path):
    root = _machine(tmp_path, "cpu")
    assert docker_host.cgroup_dirs("calypso2", HYBRID, root) == []


def test_join_cgroups_moves_the_caller_into_its_host_cgroups(tmp_path):
    root = _machine(tmp_path, "systemd", "unified", "cpu")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(HYBRID)
    docker_host.join_cgroups("calypso2", root, proc)
    for folder in ("systemd", "unified"):
        procs = root / folder / "ocl-calypso2" / "cgroup.procs"
        assert procs.read_text() == f"{os.getpid()}\n"
    assert not (root / "cpu" / "ocl-calypso2").exists()
    docker_host.join_cgroups("calypso2", root, proc)  # a second supervisor start reuses them


def test_remove_cgroups_removes_the_hosts_empty_cgroups_only(tmp_path):
    root = _machine(
        tmp_path,
        "systemd/ocl-calypso2/payload/system.slice",
        "unified/ocl-calypso2/supervisor",
        "unified/ocl-styx/payload",
    )
    busy = root / "unified/ocl-calypso2/payload"
    busy.mkdir()
    (busy / "still-here").write_text("")
    removed = docker_host.remove_cgroups("calypso2", root)
    assert not (root / "systemd/ocl-calypso2").exists()
    assert (root / "systemd/ocl-calypso2/payload/system.slice") in removed
    assert busy.is_dir() and not (root / "unified/ocl-calypso2/supervisor").exists()
    assert (root / "unified/ocl-styx/payload").is_dir()
