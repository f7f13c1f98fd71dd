"""The cluster apps in the lab (issue 11, item 8): their manifests land on tethys, the k3s
stand-in applies every one of them, `--dry --diff` shows a changed memory limit and no
secret, a rotated Label Studio password changes only the Secret file (the dry run naming
its key, never a value), and a second converge changes nothing.
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
from deploys.cluster_apps import ml_backend
from lab.converge import pyinfra
from lab.topology import REPO, SECRETS_FILE
from tests.lab import lab_secret_lines, ssh

pytestmark = pytest.mark.lab

SERVER = "tethys"
SECRET = cluster_apps.path("label-studio", secret=True)
LABEL_STUDIO = cluster_apps.path("label-studio")
APPLIED = "STAND-IN applied manifest"
STANDIN_WAIT = 30  # the stand-in looks at the folder every second


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
    assert_no_secret(run.output)
    assert app_files() == before, "--dry changed a file"


def rotated_secrets(key: str, value: str) -> Path:
    values = yaml.safe_load(SECRETS_FILE.read_text())
    values[key] = value
    fd, name = tempfile.mkstemp(prefix="oceanid-secrets-", suffix=".yaml")
    with os.fdopen(fd, "w") as out:  # mkstemp: 0600, as the secrets loader insists
        yaml.safe_dump(values, out)
    return Path(name)


def test_a_rotated_admin_password_changes_only_the_secret_file(converged):
    new = "lab-rotated-admin-password-7d1f"
    rotated = rotated_secrets("labelStudioAdminPassword", new)
    env = {"SECRETS_FILE": str(rotated)}
    before = app_files()
    try:
        preview = dry_run("--limit", SERVER, env=env)
        assert preview.returncode == 0, preview.output[-4000:]
        assert f"{SECRET}: secret content changes (not shown); keys: " in preview.output
        assert "apps/label-studio: LABEL_STUDIO_PASSWORD changes" in preview.output
        assert "POSTGRE_PASSWORD" not in preview.output  # only the key that changed
        assert new not in preview.output
        assert_no_secret(preview.output)
        others = [p for p in before if p != SECRET and p in preview.output]
        assert others == [], f"the dry run names {others}"
        assert app_files() == before, "--dry changed a file"

        run = pyinfra("deploys/site.py", env=env)
        assert run.returncode == 0, run.output[-4000:]
        assert run.changed == {"k3s auto-deploy manifests": [SERVER]}, run.changed
        assert new not in run.output
        after = app_files()
        assert [p for p in before if after[p] != before[p]] == [SECRET]
        assert after[SECRET].startswith("600 root:root ")
    finally:
        rotated.unlink()
        back = pyinfra("deploys/site.py")
    assert back.returncode == 0, back.output[-4000:]
    assert app_files() == before
    again = pyinfra("deploys/site.py")
    assert again.returncode == 0 and again.changed == {}, again.changed


def cluster_objects(kinds: str, instance: str) -> set[str]:
    """`k3s kubectl get KINDS -A -l app.kubernetes.io/instance=INSTANCE -o name` on tethys."""
    selector = f"app.kubernetes.io/instance={instance}"
    done = ssh(SERVER, f"sudo k3s kubectl get {kinds} -A -l {selector} -o name")
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_an_app_switched_off_has_its_file_removed_and_its_objects_deleted(converged):
    """k3s leaves the objects of a file that disappears: the run deletes them, says so,
    and leaves the other apps' objects; switched on again, they come back."""
    connector = f"oceanid-{ml_backend.APP}"
    kinds = "cronjobs,configmaps,secrets"
    deadline = time.monotonic() + STANDIN_WAIT
    while not cluster_objects("cronjobs", connector):
        assert time.monotonic() < deadline, "the ML backend connector's CronJob is not there"
        time.sleep(1)
    label_studio_objects = cluster_objects("deployments,services,pvc", "oceanid-label-studio")
    assert label_studio_objects
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
    assert cluster_apps.path(ml_backend.APP) in app_files()
    deadline = time.monotonic() + STANDIN_WAIT
    while cluster_objects(kinds, connector) != {
        f"cronjob.batch/{ml_backend.NAME}",
        f"configmap/{ml_backend.NAME}",
        f"secret/{ml_backend.SECRET}",
    }:
        assert time.monotonic() < deadline, cluster_objects(kinds, connector)
        time.sleep(1)
    again = pyinfra("deploys/site.py")
    assert again.returncode == 0 and again.changed == {}, again.changed
