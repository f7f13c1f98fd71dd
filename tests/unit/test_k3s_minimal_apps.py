"""The guide's minimal deploy (issue 21 item 6): with `enable_node_provisioning` off nothing of
k3s is installed or joined, but the cluster apps still go to the first server where the node's
state read shows k3s running; where it does not, one line says so and nothing is written.
Planned as `pyinfra inventory.py deploys/site.py` would (tests/unit/test_k3s_site_plan.py's
harness), the facts answered from values."""

from __future__ import annotations

import json
import logging

from pyinfra.api import FileUploadCommand, StringCommand

from deploys import cluster_apps, k3s
from facts.managed import ManagedState, PathState, empty_state
from operations import k3s as k3s_ops
from operations.k3s import ADDONS_PROBE, INSTALL_PROBE
from tests.unit import test_k3s_site_plan
from tests.unit.test_k3s_site_plan import _plan

# the k3s role tests' fixtures: sites through preflight, pyinfra in CLI mode
k3s_site = test_k3s_site_plan.site
_cli_mode = test_k3s_site_plan._cli_mode

REPORT = "k3s on this node (provisioning off)"
RUNNING = ["version k3s version v1.33.4+k3s1 (148243c4)", "unit k3s.service active", "token -"]
STOPPED = ["version k3s version v1.33.4+k3s1 (148243c4)", "unit k3s.service inactive", "token -"]


def _node(host_name, planned, install, apps_in_place=False):
    """A node whose k3s was installed by hand (or an earlier provisioning run)."""
    probes = {INSTALL_PROBE: install}
    state = {**empty_state(), "arch": "amd64", "probes": probes}
    node = k3s.declare(planned.hosts[host_name], planned)
    if apps_in_place and node.apps:
        report = node.report
        state["paths"] = {
            f.path: PathState("file", f.mode.zfill(4), f.user, f.group, f.sha256)
            for f in report.files
        }
        state["record"] = (json.dumps(report.declared(), indent=1, sort_keys=True) + "\n").encode()
        probes[ADDONS_PROBE] = [  # what k3s last applied: every file, as written
            f"{k3s_ops.addon_name(f.path)} {f.sha256}" for f in report.files
        ]
    return {ManagedState: state}


def _changes(order):
    return {
        (name, host): commands
        for name, _, by_host in order
        for host, commands in by_host.items()
        if commands
    }


def test_apps_are_written_where_k3s_runs_and_nothing_of_k3s_changes(k3s_site) -> None:
    planned = k3s_site(provisioning=False)
    _, order = _plan(planned, lambda name, s: _node(name, s, RUNNING))
    changes = _changes(order)
    assert {host for _, host in changes} == {"tethys"}  # the first server only
    written = [
        c.dest
        for c in changes[("k3s auto-deploy manifests (provisioning off)", "tethys")]
        if isinstance(c, FileUploadCommand)
    ]
    wanted = cluster_apps.manifest_files(planned, planned.hosts["tethys"].settings)
    assert len(written) >= len(wanted) >= 2  # Label Studio's manifest and its Secret at least
    assert ("k3s applied the auto-deploy manifests", "tethys") in changes  # confirmed applied
    names = {name for name, _ in changes}
    assert names <= {
        "k3s auto-deploy manifests (provisioning off)",
        "cluster apps no longer wanted (provisioning off)",
        "k3s applied the auto-deploy manifests",
    }  # no binary, config, unit or token of k3s
    text = "\n".join(
        c.get_raw_value()
        for commands in changes.values()
        for c in commands
        if isinstance(c, StringCommand)
    )
    assert "/usr/local/bin/k3s" not in text and "config.yaml" not in text


def test_a_second_run_changes_nothing(k3s_site) -> None:
    planned = k3s_site(provisioning=False)
    _, order = _plan(planned, lambda name, s: _node(name, s, RUNNING, apps_in_place=True))
    assert _changes(order) == {}


def test_an_app_data_change_is_applied(k3s_site, data) -> None:
    before = k3s_site(provisioning=False)
    data["cluster_apps"]["ml_backend"]["title"] = "another title"
    after = k3s_site(provisioning=False)
    _, order = _plan(after, lambda name, s: _node(name, before, RUNNING, apps_in_place=True))
    changes = _changes(order)
    uploads = [
        c.dest
        for c in changes[("k3s auto-deploy manifests (provisioning off)", "tethys")]
        if isinstance(c, FileUploadCommand)
    ]
    assert len(uploads) == 1  # the connector's manifest (its Secret is unchanged)
    assert ("k3s applied the auto-deploy manifests", "tethys") in changes


def test_without_k3s_running_the_apps_are_skipped_in_one_line(k3s_site, caplog) -> None:
    for install in (STOPPED, ["version -", "token -"]):
        caplog.clear()
        caplog.set_level(logging.INFO, logger="pyinfra")
        planned = k3s_site(provisioning=False)
        _, order = _plan(planned, lambda name, s, i=install: _node(name, s, i))
        assert _changes(order) == {}
        assert [name for name, _, _ in order] == [REPORT, "cluster apps (provisioning off)"]
        assert order[1][1] == ["tethys"]
        skipped = [r.getMessage() for r in caplog.records if "cluster apps" in r.getMessage()]
        assert len(skipped) == 1 and "k3s is not running on tethys" in skipped[0]
