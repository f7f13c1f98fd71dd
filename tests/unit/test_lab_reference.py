"""The bench's reference deploy (lab/reference.py, lab/reference_deploy.py): the site's
declared state through pyinfra's built-in operations, checked against the declarations of the
lab's own hosts, and its operations run for real by pyinfra on this machine.

The lab's hosts come from the lab's inventory and group data, read as they are written (their
plain values; what needs a running lab, such as its artifact pins, is the production data's).
"""

from __future__ import annotations

import ast
import grp
import hashlib
import logging
import os
import pwd
import subprocess
from collections import Counter
from inspect import signature
from io import BytesIO

import pytest
import yaml
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.operation import add_op
from pyinfra.api.operations import run_ops
from pyinfra.api.state import StateStage

from lab.reference import OPERATIONS, declared, host_ops, reference_ops
from oceanid.model import HostView
from oceanid.preflight import check
from operations.managed import DesiredState, ManagedBinary, ManagedDirectory, ManagedFile
from tests.unit.conftest import REPO

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTheLabReferenceTestOnly operator@lab"


# What `make lab` records in .lab/artifacts.json, as the lab's group data reads it (`_pins[…]`)
PINNED = {
    "id": "sha256:" + "0" * 64,
    "url": "http://10.77.0.1:8080/images/x.tar",
    "sha256": "0" * 64,
}


class _Pins(ast.NodeTransformer):
    """`_pins["triton_image"]["id"]` → a value of that shape: the lab's pins without a lab
    (a whole pin, `_pins["k3s"]`, stays unread: the test's data gives those)."""

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        root = node
        while isinstance(root, ast.Subscript):
            root = root.value
        key = node.slice.value if isinstance(node.slice, ast.Constant) else None
        if isinstance(root, ast.Name) and root.id == "_pins" and key in PINNED:
            return ast.Constant(PINNED[key])
        return self.generic_visit(node)


def _plain_values(path) -> dict:
    """What a data file assigns as plain values (literals, and the lab's pins), by name."""
    values = {}
    for node in _Pins().visit(ast.parse(path.read_text())).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name.startswith("_"):
                continue
            try:
                values[name] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return values


def _lab_groups() -> dict[str, set[str]]:
    """host -> its groups, as inventories/lab.py lists them (`group = [_host("name"), ...]`)."""
    groups: dict[str, set[str]] = {}
    for node in ast.parse((REPO / "inventories" / "lab.py").read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.List):
            for element in node.value.elts:
                if isinstance(element, ast.Call) and isinstance(element.args[0], ast.Constant):
                    groups.setdefault(element.args[0].value, set()).add(node.targets[0].id)
    return groups


@pytest.fixture
def lab_site(data, lab_secrets, tmp_path):
    def make(hosts: dict[str, set[str]] | None = None, **changes):
        data.update(_plain_values(REPO / "inventories" / "group_data" / "all.py"))
        data.update(admin_ssh_keys=[KEY], **changes)
        path = tmp_path / "secrets.yaml"
        path.write_text(yaml.safe_dump(lab_secrets))
        path.chmod(0o600)
        hosts = _lab_groups() if hosts is None else hosts
        views = [HostView(name, frozenset(g), data) for name, g in hosts.items()]
        return check(views, environ={"SECRETS_FILE": str(path)})

    return make


def _of(ops: list[tuple[str, dict]], operation: str) -> list[dict]:
    return [kwargs for name, kwargs in ops if name == operation]


def test_the_lab_inventory_is_read_as_written():
    assert _lab_groups() == {
        "tethys": {"k3s_servers"},
        "styx": {"k3s_agents"},
        "calypso": {"k3s_agents", "gpu_hosts"},
        "calypso2": {"gpu_hosts"},
        "calypso3": {"gpu_hosts"},
    }


def test_every_declared_thing_is_in_the_reference_once_with_its_owner_and_mode(lab_site):
    site = lab_site()
    for name, plan in site.hosts.items():
        states = declared(plan, site)
        ops = host_ops(plan, states, "amd64")

        packages = Counter(p for m in states for p in m.packages)
        assert Counter(p for k in _of(ops, "apt.packages") for p in k["packages"]) == packages
        assert all(k["no_recommends"] for k in _of(ops, "apt.packages")), name

        files = Counter(
            (f.path, f.content, f.mode, f.user, f.group) for m in states for f in m.files
        )
        put = _of(ops, "files.put")
        assert (
            Counter((k["dest"], k["src"].getvalue(), k["mode"], k["user"], k["group"]) for k in put)
            == files
        )

        directories = Counter(
            (d.path, d.mode, d.user, d.group) for m in states for d in m.directories
        )
        made = _of(ops, "files.directory")
        assert Counter((k["path"], k["mode"], k["user"], k["group"]) for k in made) == directories

        binaries = Counter((b.path, *b.pin("amd64"), b.mode) for m in states for b in m.binaries)
        fetched = _of(ops, "files.download")
        assert (
            Counter((k["dest"], k["src"], k["sha256sum"], k["mode"]) for k in fetched) == binaries
        )

        users = Counter(u for m in states for u in m.users)
        accounts = _of(ops, "server.user")
        assert Counter(k["user"] for k in accounts) == users
        for account in accounts:  # as managed.account creates them; home left as it is
            login = account["user"] == plan.settings.admin_user
            assert account["shell"] == ("/bin/bash" if login else "/usr/sbin/nologin")
            assert (account["create_home"], account["system"]) == (login, not login)
            assert account["ensure_home"] is False
        assert _of(ops, "server.user_authorized_keys") == [
            {
                "name": "base: the operators' SSH keys in oceanid's authorized_keys",
                "user": "oceanid",
                "public_keys": [KEY],
                "authorized_key_directory": "/home/oceanid/.ssh",
            }
        ]

        units = Counter(u for m in states for u in m.units)
        services = _of(ops, "systemd.service")
        assert Counter(k["service"] for k in services) == units
        assert all(k["running"] and k["enabled"] for k in services), name

        with_packages = sum(1 for m in states if m.packages)
        others = files + directories + binaries + users + units
        assert len(ops) == with_packages + sum(others.values()) + 1, name  # + the SSH keys
        for operation, kwargs in ops:  # arguments pyinfra's operation takes (name: global)
            arguments = {k: v for k, v in kwargs.items() if k != "name"}
            signature(OPERATIONS[operation]._inner).bind(**arguments)

    calypso = declared(site.hosts["calypso"], site)  # the state the table measures
    assert {m.name for m in calypso} == {"base", "gpu host calypso", "k3s agent calypso"}
    assert len([b for m in calypso for b in m.binaries]) == 2  # cloudflared and k3s
    assert {u for m in calypso for u in m.users} == {"oceanid", "triton", "oceanid-ml-backend"}
    assert {u for m in calypso for u in m.units} == {
        "cloudflared-node.service",
        "tritonserver.service",
        "oceanid-ml-backend.service",
        "oceanid-firewall.service",
        "k3s-agent.service",
    }


def test_a_secret_file_reaches_the_reference_only_inside_a_bytesio(lab_site):
    site = lab_site()
    seen = 0
    for plan in site.hosts.values():
        states = declared(plan, site)
        ops = host_ops(plan, states, "amd64")
        shown = repr(ops)  # what a name, a log line or an error could carry
        for secret in (f for m in states for f in m.files if f.secret):
            (put,) = [k for k in _of(ops, "files.put") if k["dest"] == secret.path]
            assert isinstance(put["src"], BytesIO)
            assert put["src"].getvalue() == secret.content
            for line in secret.content.decode().splitlines():
                if len(line) >= 8:
                    assert line not in shown, secret.path
            seen += 1
    assert seen >= 3  # calypso's and calypso2's tunnel credentials, k3s's token


def test_the_host_connector_is_kept_stopped_while_the_cluster_runs_its_tunnel(lab_site, data):
    apps = {**data["cluster_apps"], "node_tunnel_mode": "daemonset"}
    # calypso2 and calypso3 are no k3s nodes in the lab: the cluster could not run their tunnels
    hosts = {n: g for n, g in _lab_groups().items() if n not in ("calypso2", "calypso3")}
    site = lab_site(hosts, cluster_apps=apps)
    plan = site.hosts["calypso"]
    services = _of(host_ops(plan, declared(plan, site), "amd64"), "systemd.service")
    wanted = {k["service"]: (k["running"], k["enabled"]) for k in services}
    assert wanted == {
        "cloudflared-node.service": (False, False),
        "tritonserver.service": (True, True),
        "oceanid-ml-backend.service": (True, True),
        "oceanid-firewall.service": (True, True),
        "k3s-agent.service": (True, True),
    }


def _pyinfra_local(tmp_path, *args: str) -> subprocess.CompletedProcess:
    """The real pyinfra CLI on `@local` running the reference deploy, in a site whose group
    data is production's with no `hosts` entry, secrets from a file and no DNS: this machine
    is a host with the base role only (nothing else is declared for it)."""
    site = tmp_path / "site"
    (site / "group_data").mkdir(parents=True)
    text = (REPO / "group_data" / "all.py").read_text()
    text += '\nsecret_sources = ["file"]\nmanage_dns = False\nhosts = {}\n'
    (site / "group_data" / "all.py").write_text(text)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYINFRA_PROGRESS": "off"}
    deploy = str(REPO / "lab" / "reference_deploy.py")
    return subprocess.run(
        [str(REPO / ".venv/bin/pyinfra"), "@local", deploy, *args],
        cwd=site,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_deploy_file_queues_the_reference_in_a_real_dry_run(tmp_path):
    done = _pyinfra_local(tmp_path, "--dry")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "Ready: " in output
    assert "base: file /etc/sudoers.d/oceanid" in output  # not on this machine: a change


def test_the_reference_refuses_diff_which_would_print_secret_files(tmp_path):
    done = _pyinfra_local(tmp_path, "--dry", "--diff")
    assert done.returncode != 0
    assert "--diff would print secret files' content" in done.stdout + done.stderr


# -- pyinfra 3's built-in operations, run for real on this machine ------------------------------


def _state() -> State:
    state = State(Inventory((["@local"], {})), Config())
    state.set_stage(StateStage.Connect)
    connect_all(state)
    state.set_stage(StateStage.Prepare)
    return state


def _prepare(ops: list[tuple[str, dict]]) -> tuple[State, list[bool]]:
    """Queue `ops` as --dry does; whether each would change something."""
    state = _state()
    changes = []
    for operation, kwargs in ops:
        (meta,) = add_op(state, OPERATIONS[operation], **kwargs).values()
        changes.append(meta._maybe_is_change)
    return state, changes


def _tiny(tmp_path) -> DesiredState:
    """A manifest of this machine's own user, under `tmp_path`: a folder, a file, a secret
    file and a pinned binary downloaded from a file:// URL."""
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    tool = b"#!/bin/sh\necho tool\n"
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "tool-1.0-amd64").write_bytes(tool)
    (tmp_path / "bin").mkdir()
    etc = tmp_path / "etc"
    return DesiredState(
        name="tiny",
        directories=[ManagedDirectory(str(etc), "0750", user, group)],
        files=[
            ManagedFile(str(etc / "app.conf"), b"answer: 42\n", "0640", user, group),
            ManagedFile(str(etc / "token"), b"s3cret-t0ken-value\n", "0600", user, group, True),
        ],
        binaries=[
            ManagedBinary(
                str(tmp_path / "bin" / "tool"),
                f"file://{tmp_path}/mirror/tool-{{version}}-{{arch}}",
                "1.0",
                {"amd64": hashlib.sha256(tool).hexdigest()},
            )
        ],
    )


def test_pyinfra_runs_the_reference_operations_and_then_has_nothing_to_do(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="pyinfra")
    desired = _tiny(tmp_path)
    ops = reference_ops([desired], "amd64")
    assert [name for name, _ in ops] == [
        "files.directory",
        "files.put",
        "files.put",
        "files.download",
    ]

    _, changes = _prepare(ops)  # --dry: planned, nothing executed
    assert changes == [True, True, True, True]
    assert not (tmp_path / "etc").exists()

    state, _ = _prepare(reference_ops([desired], "amd64"))
    state.set_stage(StateStage.Execute)
    run_ops(state)
    (results,) = state.results.values()
    assert results.error_ops == 0
    for wanted in [*desired.directories, *desired.files]:
        path = tmp_path / wanted.path
        assert oct(path.stat().st_mode & 0o777) == oct(int(wanted.mode, 8)), wanted.path
        assert (path.owner(), path.group()) == (wanted.user, wanted.group)
    for file in desired.files:
        assert (tmp_path / file.path).read_bytes() == file.content
    binary = tmp_path / "bin" / "tool"
    assert hashlib.sha256(binary.read_bytes()).hexdigest() == desired.binaries[0].sha256["amd64"]
    assert oct(binary.stat().st_mode & 0o777) == "0o755"

    _, changes = _prepare(reference_ops([desired], "amd64"))  # the no-op converge
    assert changes == [False, False, False, False]
    assert "s3cret-t0ken-value" not in caplog.text
