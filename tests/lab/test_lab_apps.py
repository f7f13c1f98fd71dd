"""The cluster apps in the lab (issue 11, item 8): their manifests land on tethys, the k3s
stand-in applies every one of them, `--dry --diff` shows a changed memory limit and no
secret, a rotated Label Studio password changes the Secret file and the Deployment's
secrets digest alone (the dry run naming its key, never a value; the API serving the new
digest), and a second converge changes nothing.

Issue 20: k3s keeps an Addon per manifest (kube-system, named after the file up to its first
dot) with the SHA-256 of what it applied, and skips a file whose content its Addon holds. Every
manifest has its Addon with the file's checksum; a file touched with the same content brings
back no object deleted by hand; an app switched off and on again is back (its Addons were
deleted with its objects), the node tunnel's DaemonSet too after daemonset -> host ->
daemonset.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from deploys import cluster_apps
from deploys.cluster_apps import ml_backend, node_tunnel
from deploys.cluster_apps.objects import SECRETS_ANNOTATION
from deploys.k3s import apps as k3s_apps
from lab.converge import pyinfra
from lab.topology import REPO, SECRETS_FILE
from operations.k3s import addon_name
from tests.lab import lab_secret_lines, ssh

pytestmark = pytest.mark.lab

SERVER = "tethys"
# the lab without calypso2 and calypso3, which are no k3s nodes: daemonset mode needs every GPU
# host in the cluster
CLUSTER = "inventories/lab_cluster.py"
SECRET = cluster_apps.path("label-studio", secret=True)
LABEL_STUDIO = cluster_apps.path("label-studio")
APPLIED = "STAND-IN applied manifest"
RESCAN = 15  # k3s (and the stand-in) look at the auto-deploy folder every 15 s
STANDIN_WAIT = 3 * RESCAN


def group_apps() -> dict:
    """`cluster_apps` as group_data/all.py ships it (the lab does not override it)."""
    namespace: dict = {}
    source = REPO / "group_data" / "all.py"
    exec(compile(source.read_text(), str(source), "exec"), namespace)  # noqa: S102 - our file
    return namespace["cluster_apps"]


def app_files() -> dict[str, str]:
    """path -> 'mode owner:group sha256' of every oceanid-*.yaml in the auto-deploy folder
    (a root-only folder: found and hashed as root)."""
    find = f"sudo find {cluster_apps.MANIFEST_DIR} -maxdepth 1 -name 'oceanid-*.yaml'"
    listed = ssh(SERVER, f"{find} -printf '%p %m %u:%g\\n'")
    hashed = ssh(SERVER, f"{find} -exec sha256sum {{}} +")
    assert listed.returncode == 0 and hashed.returncode == 0, listed.stderr + hashed.stderr
    digests = {
        path: digest for digest, path in (line.split() for line in hashed.stdout.splitlines())
    }
    found = {}
    for line in listed.stdout.splitlines():
        path, mode, owner = line.split()
        found[path] = f"{mode} {owner} {digests[path]}"
    return found


def journal() -> str:
    return ssh(SERVER, "sudo journalctl -u k3s --no-pager -o cat").stdout


def dry_run(*args: str, env: dict[str, str] | None = None):
    return pyinfra("deploys/site.py", *args, "--dry", "--diff", json_output=False, yes=False,
                   env=env)  # fmt: skip


def assert_no_secret(output: str) -> None:
    for key, line in lab_secret_lines():
        assert line not in output, f"{key} is in the output"


def test_the_manifests_land_on_tethys_and_the_standin_applies_each(converged):
    files = app_files()
    site_apps = {"label-studio", "cloudflared", "ml-backend-connector"}  # lab data: host mode
    for app in site_apps:
        assert cluster_apps.path(app) in files, f"{app}'s manifest is missing"
        assert files[cluster_apps.path(app)].startswith("644 root:root ")
        assert files[cluster_apps.path(app, secret=True)].startswith("600 root:root ")
    assert cluster_apps.path("node-tunnel") not in files
    deadline = time.monotonic() + STANDIN_WAIT
    while True:
        log = journal()
        missing = [path for path in files if f'file="{path}"' not in log]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not missing, f"the stand-in did not apply {missing}"
    for line in log.splitlines():
        if "oceanid-" in line:
            assert "level=error" not in line, line
    applied = [line for line in log.splitlines() if APPLIED in line]
    assert any("Deployment/label-studio" in line for line in applied), applied
    assert_no_secret(log)


def test_dry_diff_shows_a_changed_memory_limit_and_no_secret(converged):
    apps = group_apps()
    limit = apps["label_studio"]["memory_limit"]
    apps["label_studio"]["memory_limit"] = "5Gi"
    before = app_files()
    run = dry_run("--limit", SERVER, "--data", f"cluster_apps={json.dumps(apps)}")
    assert run.returncode == 0, run.output[-4000:]
    assert f"{LABEL_STUDIO}: changes" in run.output
    assert f"memory: {limit}" in run.output and "memory: 5Gi" in run.output
    assert SECRET not in run.output, "a Secret file changes with a memory limit"
    assert (  # what k3s would apply again: the file whose Addon holds other content
        "k3s applies oceanid-label-studio.yaml (content their Addons do not hold)" in run.output
    )
    assert_no_secret(run.output)
    assert app_files() == before, "--dry changed a file"


def rotated_secrets(key: str, value: str) -> Path:
    values = yaml.safe_load(SECRETS_FILE.read_text())
    values[key] = value
    fd, name = tempfile.mkstemp(prefix="oceanid-secrets-", suffix=".yaml")
    with os.fdopen(fd, "w") as out:  # mkstemp: 0600, as the secrets loader insists
        yaml.safe_dump(values, out)
    return Path(name)


def label_studio_digest() -> tuple[str, str]:
    """(in the manifest file on tethys, as the API serves the Deployment) Label Studio's
    secrets digest, once the stand-in has applied the file (bounded wait)."""
    deadline = time.monotonic() + STANDIN_WAIT
    while True:
        text = ssh(SERVER, f"sudo cat {LABEL_STUDIO}").stdout
        (deployment,) = [d for d in yaml.safe_load_all(text) if d["kind"] == "Deployment"]
        filed = deployment["spec"]["template"]["metadata"]["annotations"][SECRETS_ANNOTATION]
        got = ssh(SERVER, "sudo k3s kubectl get deployment label-studio -n apps -o json")
        assert got.returncode == 0, got.stderr
        template = json.loads(got.stdout)["spec"]["template"]["metadata"]
        served = (template.get("annotations") or {}).get(SECRETS_ANNOTATION, "")
        if served == filed or time.monotonic() > deadline:
            return filed, served
        time.sleep(1)


def test_a_rotated_admin_password_changes_the_secret_file_and_the_digest(converged):
    """Only the Secret file and the Deployment's digest line change, so the Deployment's pod
    template changes and its pods restart with the new password."""
    new = "lab-rotated-admin-password-7d1f"
    rotated = rotated_secrets("labelStudioAdminPassword", new)
    env = {"SECRETS_FILE": str(rotated)}
    before = app_files()
    digest, served = label_studio_digest()
    assert served == digest and len(digest) == 64
    try:
        preview = dry_run("--limit", SERVER, env=env)
        assert preview.returncode == 0, preview.output[-4000:]
        assert f"{SECRET}: secret content changes (not shown); keys: " in preview.output
        assert "apps/label-studio: LABEL_STUDIO_PASSWORD changes" in preview.output
        assert "POSTGRE_PASSWORD" not in preview.output  # only the key that changed
        assert new not in preview.output
        assert_no_secret(preview.output)
        others = [p for p in before if p != SECRET and p in preview.output]
        assert others == [LABEL_STUDIO], f"the dry run names {others}"
        assert f"{SECRETS_ANNOTATION}: {digest}" in preview.output  # the line that goes
        assert app_files() == before, "--dry changed a file"

        run = pyinfra("deploys/site.py", env=env)
        assert run.returncode == 0, run.output[-4000:]
        assert run.changed == {
            "k3s auto-deploy manifests": [SERVER],
            "k3s applied the auto-deploy manifests": [SERVER],  # confirmed by its Addon
        }, run.changed
        assert new not in run.output
        after = app_files()
        assert {p for p in before if after[p] != before[p]} == {LABEL_STUDIO, SECRET}
        assert after[SECRET].startswith("600 root:root ")
        rolled, served = label_studio_digest()
        assert rolled != digest and served == rolled  # the pod template the API holds
    finally:
        rotated.unlink()
        back = pyinfra("deploys/site.py")
    assert back.returncode == 0, back.output[-4000:]
    assert app_files() == before
    assert label_studio_digest() == (digest, digest)
    again = pyinfra("deploys/site.py")
    assert again.returncode == 0 and again.changed == {}, again.changed


def cluster_objects(kinds: str, instance: str) -> set[str]:
    """`k3s kubectl get KINDS -A -l app.kubernetes.io/instance=INSTANCE -o name` on tethys."""
    selector = f"app.kubernetes.io/instance={instance}"
    done = ssh(SERVER, f"sudo k3s kubectl get {kinds} -A -l {selector} -o name")
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def addons() -> dict[str, dict]:
    """The Addons k3s keeps in kube-system, by name (`k3s kubectl` on tethys)."""
    done = ssh(SERVER, "sudo k3s kubectl get addons -n kube-system -o json")
    assert done.returncode == 0, done.stderr
    return {item["metadata"]["name"]: item for item in json.loads(done.stdout)["items"]}


def manifest_checksums() -> dict[str, str]:
    """path -> SHA-256 of every manifest k3s applies in its auto-deploy folder (its own, in
    subfolders too, and ours; not dot-files; the lab has no `.skip` files)."""
    listed = ssh(
        SERVER,
        f"sudo find {cluster_apps.MANIFEST_DIR} -type f \\( -name '*.yaml' -o -name '*.yml' "
        "-o -name '*.json' \\) ! -name '.*' -exec sha256sum {} +",
    )
    assert listed.returncode == 0, listed.stderr
    return {path: digest for digest, path in (line.split() for line in listed.stdout.splitlines())}


def test_every_manifest_has_its_addon_with_the_files_checksum(converged):
    files = manifest_checksums()
    assert f"{cluster_apps.MANIFEST_DIR}/runtimes.yaml" in files  # k3s writes its own
    assert cluster_apps.path("label-studio") in files
    deadline = time.monotonic() + STANDIN_WAIT
    while True:
        held = addons()
        specs = {path: (held.get(addon_name(path)) or {}).get("spec") for path in files}
        wrong = {
            path: spec
            for path, spec in specs.items()
            if spec != {"source": path, "checksum": files[path]}
        }
        if not wrong or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert wrong == {}, f"Addons not holding their file's checksum: {wrong}"


def test_a_file_touched_with_the_same_content_brings_back_no_object_deleted_by_hand(converged):
    """As k3s: the file's modification time changed, its checksum is its Addon's: skipped."""
    path = cluster_apps.path(ml_backend.APP)
    selector = f"app.kubernetes.io/instance=oceanid-{ml_backend.APP}"
    where = ssh(
        SERVER,
        f"sudo k3s kubectl get configmaps -A -l {selector} "
        "-o jsonpath='{.items[0].metadata.namespace}'",
    )
    assert where.returncode == 0 and where.stdout, where.stderr
    delete = f"sudo k3s kubectl delete configmap -n {where.stdout} {ml_backend.NAME}"
    try:
        done = ssh(SERVER, delete)
        assert done.returncode == 0, done.stderr
        assert ssh(SERVER, f"sudo touch {path}").returncode == 0
        time.sleep(2 * RESCAN + 2)
        assert cluster_objects("configmaps", f"oceanid-{ml_backend.APP}") == set()
    finally:  # what k3s needs to apply it again: no Addon, and the file changed
        addon = addon_name(path)
        ssh(SERVER, f"sudo k3s kubectl delete addon -n kube-system {addon}; sudo touch {path}")
        deadline = time.monotonic() + STANDIN_WAIT
        while cluster_objects("configmaps", f"oceanid-{ml_backend.APP}") == set():
            assert time.monotonic() < deadline, "not applied again without its Addon"
            time.sleep(1)


def test_an_app_switched_off_has_its_file_removed_and_its_objects_deleted(converged):
    """k3s leaves the objects of a file that disappears, and the Addon that holds the file's
    checksum: the run deletes both, says so, and leaves the other apps' objects; switched on
    again, the same bytes are applied again (k3s would skip them with the Addon left) and the
    run confirms it: the objects are there when it ends."""
    connector = f"oceanid-{ml_backend.APP}"
    kinds = "cronjobs,configmaps,secrets"
    deadline = time.monotonic() + STANDIN_WAIT
    while not cluster_objects("cronjobs", connector):
        assert time.monotonic() < deadline, "the ML backend connector's CronJob is not there"
        time.sleep(1)
    label_studio_objects = cluster_objects("deployments,services,pvc", "oceanid-label-studio")
    assert label_studio_objects
    assert set(k3s_apps.addons(connector)) <= set(addons())
    apps = group_apps()
    apps["ml_backend"]["enabled"] = False
    off = f"cluster_apps={json.dumps(apps)}"
    try:
        run = pyinfra("deploys/site.py", "--limit", SERVER, "--data", off, json_output=False)
        assert run.returncode == 0, run.output[-4000:]
        assert f"cluster app {connector} switched off: its objects are deleted" in run.output
        files = app_files()
        assert cluster_apps.path(ml_backend.APP) not in files
        assert cluster_apps.path(ml_backend.APP, secret=True) not in files
        assert cluster_objects(kinds, connector) == set()
        assert set(k3s_apps.addons(connector)) & set(addons()) == set()
        assert cluster_objects("namespaces", "oceanid-label-studio") == {"namespace/apps"}
        assert (
            cluster_objects("deployments,services,pvc", "oceanid-label-studio")
            == label_studio_objects
        )
        still_off = pyinfra("deploys/site.py", "--limit", SERVER, "--data", off)
        assert still_off.returncode == 0 and still_off.changed == {}, still_off.changed
    finally:
        back = pyinfra("deploys/site.py")
    assert back.returncode == 0, back.output[-4000:]
    assert back.changed.get("k3s applied the auto-deploy manifests") == [SERVER], back.changed
    files = app_files()
    assert cluster_apps.path(ml_backend.APP) in files
    assert cluster_objects(kinds, connector) == {  # no wait: the run confirmed the apply
        f"cronjob.batch/{ml_backend.NAME}",
        f"configmap/{ml_backend.NAME}",
        f"secret/{ml_backend.SECRET}",
    }
    held = addons()
    for path in (cluster_apps.path(ml_backend.APP), cluster_apps.path(ml_backend.APP, secret=True)):
        assert held[addon_name(path)]["spec"]["checksum"] == files[path].split()[-1]
    again = pyinfra("deploys/site.py")
    assert again.returncode == 0 and again.changed == {}, again.changed


def test_the_node_tunnel_daemonset_is_back_after_daemonset_host_daemonset(converged):
    """`node_tunnel_mode` daemonset -> host -> daemonset (on the server: the host connectors
    are left as the lab data has them): the DaemonSet is there each time daemonset is. On the
    lab's cluster inventory: daemonset mode needs every GPU host in the cluster."""
    instance = f"oceanid-{node_tunnel.APP}"
    apps = group_apps()
    apps["node_tunnel_mode"] = "daemonset"
    daemonset = f"cluster_apps={json.dumps(apps)}"
    assert cluster_objects("daemonsets", instance) == set()  # lab data: host mode
    try:
        first = pyinfra(
            "deploys/site.py", "--limit", SERVER, "--data", daemonset, inventory=CLUSTER
        )
        assert first.returncode == 0, first.output[-4000:]
        found = cluster_objects("daemonsets", instance)
        assert found, "no node tunnel DaemonSet in daemonset mode"
        host = pyinfra("deploys/site.py", "--limit", SERVER, inventory=CLUSTER)
        assert host.returncode == 0, host.output[-4000:]
        assert cluster_objects("daemonsets", instance) == set()
        assert set(k3s_apps.addons(instance)) & set(addons()) == set()
        again = pyinfra(
            "deploys/site.py", "--limit", SERVER, "--data", daemonset, inventory=CLUSTER
        )
        assert again.returncode == 0, again.output[-4000:]
        assert cluster_objects("daemonsets", instance) == found, "the DaemonSet is not back"
    finally:
        back = pyinfra("deploys/site.py")
    assert back.returncode == 0, back.output[-4000:]
    assert cluster_objects("daemonsets", instance) == set()
    settled = pyinfra("deploys/site.py")
    assert settled.returncode == 0 and settled.changed == {}, settled.changed


def test_the_namespaces_file_comes_first_and_owns_every_apps_namespace(converged):
    """k3s applies the folder in name order: `oceanid-00-namespaces.yaml` makes the apps'
    Namespaces before any app file needs one, and its Addon owns them (issue 20 item 6)."""
    first = cluster_apps.path(cluster_apps.NAMESPACES)
    ours = sorted(app_files())
    assert ours[0] == first, ours
    owner = addon_name(first)
    assert owner == "oceanid-00-namespaces"
    done = ssh(SERVER, "sudo k3s kubectl get namespaces -o json")
    assert done.returncode == 0, done.stderr
    owners = {
        item["metadata"]["name"]: item["metadata"]
        .get("annotations", {})
        .get("objectset.rio.cattle.io/owner-name")
        for item in json.loads(done.stdout)["items"]
    }
    for namespace in ("apps", "cloudflared"):
        assert owners.get(namespace) == owner, (namespace, owners.get(namespace))
