"""The cluster apps on the first server as pyinfra plans them: their files in the server
role's one DesiredState, the objects of an app switched off deleted in the same run, `--diff`
naming a Secret's changed keys (never a value), and the host connector stopped while a
DaemonSet serves its tunnel. Facts are answered from values; no host is contacted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess

import pyinfra
import pytest
import yaml
from pyinfra.api import Config, FileUploadCommand, FunctionCommand, Inventory, State, StringCommand
from pyinfra.api.state import StateStage
from pyinfra.context import ctx_host, ctx_state

from deploys import cluster_apps
from deploys.cluster_apps.objects import SECRETS_ANNOTATION
from deploys.gpu_host import cloudflared_node
from deploys.k3s import server
from facts.cloudflared import CloudflaredReady
from facts.managed import ManagedState, PathState, empty_state, script
from operations import _desired, _diff, managed
from operations.managed import DesiredState
from tests.unit import test_k3s_roles, test_k3s_site_plan
from tests.unit.test_cluster_apps import COMBINATIONS, files_of, with_credential_shapes
from tests.unit.test_k3s_site_plan import _converged, _fresh, _plan

# the fixtures of the k3s role tests: sites through preflight, pyinfra in CLI mode
make_site = test_k3s_roles.make_site
k3s_site = test_k3s_site_plan.site
_cli_mode = test_k3s_site_plan._cli_mode

SECRET = cluster_apps.path("label-studio", secret=True)
LABEL_STUDIO = cluster_apps.path("label-studio")
ML = cluster_apps.path("ml-backend-connector")


def _commands(order, name: str, host: str = "tethys") -> list:
    found = [by_host[host] for op, _, by_host in order if op == name and host in by_host]
    assert len(found) == 1, name
    return found[0]


def _text(commands) -> str:
    return "\n".join(c.get_raw_value() for c in commands if isinstance(c, StringCommand))


def test_the_first_server_carries_every_app_file_and_writes_it(k3s_site) -> None:
    site = k3s_site()
    role = server.declare(site.hosts["tethys"], site).desired
    wanted = [f.path for f in cluster_apps.manifest_files(site, site.hosts["tethys"].settings)]
    assert LABEL_STUDIO in wanted and SECRET in wanted
    assert set(wanted) <= {f.path for f in role.files}
    assert role.file(SECRET).mode == "0600" and role.file(SECRET).secret
    _, order = _plan(site, _fresh)
    uploads = [
        c.dest
        for c in _commands(order, "k3s auto-deploy manifests")
        if isinstance(c, FileUploadCommand)
    ]
    assert len(uploads) >= len(wanted)  # each file staged, then renamed over its path
    assert "k3s kubectl delete" not in _text(
        _commands(order, "cluster apps switched off: objects deleted")
    )


def test_without_provisioning_no_app_file_is_written(k3s_site) -> None:
    _, order = _plan(k3s_site(provisioning=False), _fresh)
    assert all("auto-deploy" not in name for name, _, _ in order)


def _converged_with(old_site):
    """The facts of a cluster converged with `old_site`'s data, for a plan of another site."""

    def facts(host_name, site):
        return _converged(host_name, old_site)

    return facts


def test_an_app_switched_off_has_its_file_removed_and_its_objects_deleted(k3s_site, data) -> None:
    before = k3s_site()
    data["cluster_apps"]["ml_backend"]["enabled"] = False
    after = k3s_site()
    _, order = _plan(after, _converged_with(before))
    swept = _text(_commands(order, "k3s files no longer wanted"))
    removed = swept.splitlines()[0].split()
    assert removed[:3] == ["rm", "-f", "--"]
    assert sorted(removed[3:]) == [cluster_apps.path("ml-backend-connector", secret=True), ML]
    deleted = _text(_commands(order, "cluster apps switched off: objects deleted"))
    assert deleted == (
        "k3s kubectl delete deployments,daemonsets,cronjobs,services,configmaps,secrets,"
        "poddisruptionbudgets,namespaces -A --ignore-not-found "
        "-l app.kubernetes.io/instance=oceanid-ml-backend-connector\n"
        # and the Addons k3s keeps for its files (named up to the first dot), or the same
        # bytes written when it is switched on again would be skipped
        "k3s kubectl delete addons.k3s.cattle.io -n kube-system --ignore-not-found "
        "oceanid-ml-backend-connector oceanid-ml-backend-connector-secret"
    )
    # the next run: the file is gone, nothing is deleted again
    _, again = _plan(after, _converged)
    assert _commands(again, "cluster apps switched off: objects deleted") == []


def test_label_studio_switched_off_keeps_its_data(k3s_site, data) -> None:
    before = k3s_site()
    data["cluster_apps"]["label_studio"]["enabled"] = False
    data["cluster_apps"]["ml_backend"]["enabled"] = False
    after = k3s_site()
    _, order = _plan(after, _converged_with(before))
    deleted = _commands(order, "cluster apps switched off: objects deleted")
    ls = [
        c.get_raw_value() for c in deleted if "instance=oceanid-label-studio" in c.get_raw_value()
    ]
    assert len(ls) == 1
    assert "persistentvolumeclaims" not in ls[0] and "namespaces" not in ls[0]


def _diff_plan(site, old_site, caplog, monkeypatch) -> str:
    """The --diff output of a plan of `site` over hosts converged with `old_site`, whose
    old files are read back as the fact reads them (non-secret text, secret line hashes)."""
    old_role = server.declare(old_site.hosts["tethys"], old_site).desired

    def facts(host_name, _site):
        found = _converged(host_name, old_site)
        if host_name == "tethys":
            state = found[ManagedState]
            state["peeks"] = {f.path: f.content for f in old_role.files if not f.secret}
            state["line_hashes"] = {
                f.path: [_diff.line_hash(line) for line in f.content.decode().splitlines()]
                for f in old_role.files
                if f.secret
            }
        return found

    caplog.set_level(logging.INFO)
    monkeypatch.setattr(test_k3s_site_plan, "Config", lambda: Config(DIFF=True))
    _plan(site, facts)
    return caplog.text


def test_diff_names_the_rotated_key_and_never_a_value(
    k3s_site, lab_secrets, caplog, monkeypatch
) -> None:
    before = k3s_site()
    lab_secrets["labelStudioAdminPassword"] = "rotated-password-4242"
    after = k3s_site()
    text = _diff_plan(after, before, caplog, monkeypatch)
    assert f"{SECRET}: secret content changes (not shown); keys: " in text
    assert "apps/label-studio: LABEL_STUDIO_PASSWORD changes" in text
    assert "POSTGRE_PASSWORD" not in text  # only the key that changed
    assert "rotated-password-4242" not in text
    assert before.secrets["labelStudioAdminPassword"] not in text
    # the Deployment's file shows its secrets digest changing, that line alone
    assert f"{LABEL_STUDIO}: changes" in text
    changed = [
        line.split("]", 1)[1].strip()
        for line in text.splitlines()
        if re.search(r"\]\s+[-+] ", line)
    ]
    assert len(changed) == 2, changed
    assert all(line[1:].strip().startswith(f"{SECRETS_ANNOTATION}: ") for line in changed)
    assert ML + ":" not in text and cluster_apps.path("cloudflared") + ":" not in text


def test_diff_shows_a_changed_memory_limit(k3s_site, data, caplog, monkeypatch) -> None:
    before = k3s_site()
    data["cluster_apps"]["label_studio"]["memory_limit"] = "4Gi"
    after = k3s_site()
    text = _diff_plan(after, before, caplog, monkeypatch)
    assert f"{LABEL_STUDIO}: changes" in text
    assert "memory: 3Gi" in text and "memory: 4Gi" in text
    assert SECRET not in text


def test_the_fact_reads_a_secret_file_as_salted_line_hashes_only(tmp_path) -> None:
    """The script as the host runs it: the old content never leaves the host, yet the
    hashes match the controller's for the lines that did not change."""
    old = b"kind: Secret\nstringData:\n  A: old-value-1234\n  B: same\n"
    path = tmp_path / "secret.yaml"
    path.write_bytes(old)
    text = script(lines=(str(path),), salt=_diff.SALT)
    done = subprocess.run(["sh", "-s"], input=text, capture_output=True, text=True, check=True)
    assert "old-value-1234" not in done.stdout
    assert "b2xkLXZhbHVl" not in done.stdout  # nor its base64
    hashes = ManagedState().process(done.stdout.splitlines())["line_hashes"][str(path)]
    assert hashes == [_diff.line_hash(line) for line in old.decode().splitlines()]
    new = managed.ManagedFile(
        "/x",
        old.replace(b"old-value-1234", b"new"),
        secret=True,
        line_keys=(("ns/s: A", 2, 3), ("ns/s: B", 3, 4)),
    )
    assert _diff.secret_changes(new, hashes) == "; keys: ns/s: A changes"


HOST_CONNECTOR = "6b3c1c2e-3f4a-4e43-9d1c-1d5b0f3d8a11"


@pytest.mark.parametrize("mode", ["daemonset", "host"])
def test_the_host_connector_follows_node_tunnel_mode(make_site, mode) -> None:
    """daemonset: the DaemonSet manifest is rendered and the host unit, enabled and active,
    is stopped and disabled; host: no DaemonSet, and a unit a daemonset run disabled is
    enabled and started again."""
    site = make_site(cluster_apps={**_apps(mode)})
    plan = site.hosts["calypso"]
    desired = DesiredState(name="gpu host calypso")
    inputs = cloudflared_node.add_to(desired, plan)
    paths = {d.path: PathState("directory", "0755", "root", "root") for d in desired.directories}
    for f in desired.files:
        paths[f.path] = PathState("file", f.mode.zfill(4), f.user, f.group, f.sha256)
    for b in desired.binaries:
        paths[b.path] = PathState("file", "0755", "root", "root", b.sha256["amd64"])
    running = {"enabled": "enabled", "active": "active"}
    stopped = {"enabled": "disabled", "active": "inactive"}
    unit = running if mode == "daemonset" else stopped  # as the other mode left it
    facts = {
        ManagedState: {
            **empty_state(),
            "arch": "amd64",
            "paths": paths,
            "record": (json.dumps(desired.declared(), indent=1, sort_keys=True) + "\n").encode(),
            "units": {cloudflared_node.UNIT: unit},
        },
        CloudflaredReady: {"status": 200, "ready_connections": 4, "connector_id": HOST_CONNECTOR},
    }
    inventory = Inventory((["calypso"], {}))
    state = State(inventory, Config())
    state.current_deploy_filename = __file__
    state.current_op_file_number = 0
    state.set_stage(StateStage.Prepare)
    _desired.STATE_CACHE.clear()
    pyinfra.is_cli = True
    (host,) = list(inventory)
    host.get_fact = lambda cls, *a, **k: facts[cls]  # type: ignore[method-assign]
    state.activate_host(host)
    with ctx_state.use(state), ctx_host.use(host):
        cloudflared_node.deploy(desired, inputs, plan)
        cloudflared_node.hand_over(desired, plan, site)
        commands = []
        for op_hash in state.get_op_order():
            host.current_op_hash = op_hash
            commands += list(state.ops[host][op_hash].command_generator())
    waits = [c for c in commands if isinstance(c, FunctionCommand)]
    commands = [c for c in commands if not isinstance(c, FunctionCommand)]
    text = "\n".join(str(getattr(c, "get_raw_value", lambda c=c: c)()) for c in commands)
    rendered = cluster_apps.manifest_files(site, plan.settings)
    daemonset = cluster_apps.path("node-tunnel") in {f.path for f in rendered}
    if mode == "daemonset":
        assert daemonset
        assert text == f"systemctl disable --now {cloudflared_node.UNIT}"
        # make before break: the stop waits for a connector other than the host's own
        (wait,) = waits
        assert wait.function.__name__ == "_other_connector_up"
        assert wait.args[1:3] == (plan.node_tunnel_id, HOST_CONNECTOR)
    else:
        assert not waits
        assert not daemonset
        assert f"systemctl enable {cloudflared_node.UNIT}" in text
        assert "start" in text


def _apps(mode: str) -> dict:
    from tests.unit.conftest import _group_data

    apps = _group_data()["cluster_apps"]
    return {**apps, "node_tunnel_mode": mode}


@pytest.mark.parametrize(("ls", "connector", "ml", "mode", "shape"), COMBINATIONS)
def test_the_k3s_standin_accepts_every_rendered_file(
    data, lab_secrets, tmp_path, ls, connector, ml, mode, shape
) -> None:
    """Every file of every flag combination, in one auto-deploy folder, as k3s gets them."""
    from tests.unit.test_k3s_config import _standin

    standin = _standin()
    apps_data = data["cluster_apps"]
    apps_data["label_studio"]["enabled"] = ls
    apps_data["cluster_connector"] = connector
    apps_data["ml_backend"]["enabled"] = ml
    apps_data["node_tunnel_mode"] = mode
    files = files_of(data, with_credential_shapes(lab_secrets, shape, shape), tmp_path)
    folder = tmp_path / "manifests"
    folder.mkdir()
    for managed_file in files.values():
        (folder / managed_file.path.rsplit("/", 1)[1]).write_bytes(managed_file.content)
    for managed_file in files.values():
        path = folder / managed_file.path.rsplit("/", 1)[1]
        found = standin.check_manifest(str(path))
        expected = [
            f"{d['kind']}/{d['metadata']['name']}" for d in yaml.safe_load_all(managed_file.content)
        ]
        assert found == expected
        # and the stand-in reads each value as PyYAML does (block scalars included)
        assert standin.read_manifest(str(path)) == list(yaml.safe_load_all(managed_file.content))


def test_sha256_helper_is_not_the_line_hash() -> None:
    """A line hash is salted: it is not the plain SHA-256 a table could reverse."""
    assert _diff.line_hash("x") != hashlib.sha256(b"x").hexdigest()
