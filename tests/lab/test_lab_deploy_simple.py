"""`make deploy-simple` in the lab (issue 21 item 6): with enable_node_provisioning off nothing of
k3s is installed or changed, but the cluster apps stay deployed on tethys, where k3s runs, and
a change to them is applied; with k3s stopped there, one line says the apps were skipped.

The lab's own data has provisioning on, so these runs add the guide's `--data` flags, as `make
deploy-simple` does; each test puts the lab back with a full converge.
"""

from __future__ import annotations

import json

import pytest

from lab.converge import pyinfra
from tests.lab import ssh
from tests.lab.test_lab_apps import LABEL_STUDIO, SERVER, app_files, group_apps

pytestmark = pytest.mark.lab

SIMPLE = ("--data", "enable_node_provisioning=False", "--data", "enable_control_plane_lb=False")
WRITES = "k3s auto-deploy manifests (provisioning off)"


def simple(*args: str):
    return pyinfra("deploys/site.py", "--limit", SERVER, *SIMPLE, *args)


def restore() -> None:
    back = pyinfra("deploys/site.py", "--limit", SERVER)
    assert back.returncode == 0, back.output[-4000:]


def test_deploy_simple_keeps_the_apps_and_applies_a_change(converged):
    before = app_files()
    try:
        first = simple()
        assert first.returncode == 0, first.output[-4000:]
        assert app_files() == before  # every manifest left in place, none rewritten
        # at most the apps' record of what they wrote (the first run in this mode): nothing
        # of k3s, HAProxy or the apps' files changed
        assert set(first.changed) <= {"cluster apps no longer wanted (provisioning off)"}, (
            first.changed
        )
        again = simple()
        assert again.returncode == 0 and again.changed == {}, again.changed

        apps = group_apps()
        apps["label_studio"]["memory_limit"] = "5Gi"
        changed = simple("--data", f"cluster_apps={json.dumps(apps)}")
        assert changed.returncode == 0, changed.output[-4000:]
        assert changed.changed.get(WRITES) == [SERVER], changed.changed
        assert "k3s applied the auto-deploy manifests" in changed.changed
        after = app_files()
        assert after[LABEL_STUDIO] != before[LABEL_STUDIO]
        assert {p for p in after if after[p] != before[p]} == {LABEL_STUDIO}
        served = ssh(SERVER, "sudo k3s kubectl get deployment label-studio -n apps -o json")
        assert '"memory": "5Gi"' in served.stdout.replace('":"', '": "')
    finally:
        restore()


def test_deploy_simple_without_k3s_running_says_the_apps_were_skipped(converged):
    before = app_files()
    try:
        assert ssh(SERVER, "sudo systemctl stop k3s.service").returncode == 0
        run = simple()
        assert run.returncode == 0, run.output[-4000:]
        assert f"k3s is not running on {SERVER}" in run.output
        assert WRITES not in run.changed
        assert app_files() == before
    finally:
        assert ssh(SERVER, "sudo systemctl start k3s.service").returncode == 0
        restore()
