"""operations.k3s.manifests_applied (the deploy confirms k3s applied what it wrote) and
facts.k3s.K3sAddons, on a fake host whose facts are real fact values. The command itself runs
against the k3s stand-in and the real kubectl in tests/standins/test_k3s.py."""

from __future__ import annotations

import hashlib
import logging

import pytest
from pyinfra.api.exceptions import FactProcessError

from facts.k3s import API_UNAVAILABLE_MARKER, K3sAddons
from facts.managed import ManagedState
from operations import _desired
from operations import k3s as k3s_ops
from operations.managed import DesiredState, ManagedFile
from tests.unit.test_operations import (
    assert_refused,
    file_state,
    managed_state,
    run_op,
    shell_syntax_errors,
)

FOLDER = "/var/lib/rancher/k3s/server/manifests"
APP = ManagedFile(f"{FOLDER}/oceanid-label-studio.yaml", b"kind: Deployment\n")
SECRETS = ManagedFile(f"{FOLDER}/oceanid-label-studio-secret.yaml", b"kind: Secret\n", "0600")
OLD = hashlib.sha256(b"old\n").hexdigest()


def _applied(on_host: dict[str, bytes | None], addons: dict[str, str] | None, *, unreadable=False):
    """Plan manifests_applied over APP and SECRETS: `on_host` path -> the content the host
    has (None: absent), `addons` name -> the checksum its Addon holds (None: API down)."""
    _desired.STATE_CACHE.clear()  # each call is a pyinfra run of its own
    role = DesiredState(name="k3s server tethys", files=[APP, SECRETS])
    k3s_ops.probe_addons(role)
    paths = {
        managed_file.path: file_state(managed_file, sha256=hashlib.sha256(content).hexdigest())
        for managed_file in (APP, SECRETS)
        if (content := on_host.get(managed_file.path)) is not None
    }
    if addons is None:
        lines = [API_UNAVAILABLE_MARKER]
    else:
        lines = [f"{name} {checksum}".strip() for name, checksum in addons.items()]
    state = {**managed_state(paths=paths), "probes": {k3s_ops.ADDONS_PROBE: lines}}
    if unreadable:
        state["unreadable"] = True
    return run_op(
        k3s_ops.manifests_applied,
        role,
        [APP.path, SECRETS.path],
        facts={ManagedState: state},
        name="tethys",
    )


IN_PLACE = {APP.path: APP.content, SECRETS.path: SECRETS.content}
HELD = {"oceanid-label-studio": APP.sha256, "oceanid-label-studio-secret": SECRETS.sha256}


def test_nothing_written_and_every_addon_holding_its_file_runs_no_command() -> None:
    run = _applied(IN_PLACE, {**HELD, "runtimes": OLD})
    assert run.commands == []
    assert run.noop == "k3s applied the 2 auto-deploy manifest(s) as they are"


def test_a_written_file_is_waited_for_until_its_addon_holds_its_checksum(caplog) -> None:
    caplog.set_level(logging.INFO)
    changed = {**IN_PLACE, APP.path: b"kind: Deployment # before\n"}
    run = _applied(changed, {**HELD, "oceanid-label-studio": OLD})
    assert len(run.strings) == 1 and shell_syntax_errors(run.commands) == []
    assert f"for want in oceanid-label-studio={APP.sha256}; do" in run.strings[0]
    assert "oceanid-label-studio-secret" not in run.strings[0]  # not written this run
    assert f"end=$(( $(date +%s) + {k3s_ops.APPLY_WAIT} ))" in run.strings[0]
    assert "oceanid-label-studio-secret" not in caplog.text
    assert (
        "k3s applies oceanid-label-studio.yaml (content their Addons do not hold): "
        "the run waits up to 60s for it" in caplog.text
    )


def test_a_file_not_written_whose_addon_holds_other_content_is_waited_for() -> None:
    """k3s refused it (or has not applied it yet): the run says so instead of succeeding."""
    run = _applied(IN_PLACE, {**HELD, "oceanid-label-studio-secret": OLD})
    assert len(run.strings) == 1
    assert f"for want in oceanid-label-studio-secret={SECRETS.sha256}; do" in run.strings[0]


def test_a_file_written_with_what_its_addon_holds_is_not_waited_for() -> None:
    """k3s skips content its Addon holds ("Skipping existing deployment"): nothing to wait for."""
    run = _applied({SECRETS.path: SECRETS.content}, HELD)  # APP written again, same bytes
    assert run.commands == []


def test_while_the_api_does_not_answer_every_written_file_is_waited_for() -> None:
    """A fresh cluster: k3s starts in this run and has no Addons yet while planning."""
    run = _applied({}, None)
    assert len(run.strings) == 1
    assert (
        f"for want in oceanid-label-studio={APP.sha256} "
        f"oceanid-label-studio-secret={SECRETS.sha256}; do" in run.strings[0]
    )
    assert _applied(IN_PLACE, None).commands == []  # nothing written: nothing to confirm


def test_an_unreadable_state_refuses(caplog) -> None:
    run = _applied(IN_PLACE, HELD, unreadable=True)
    assert_refused(run, caplog, "could not read the state")


def test_an_addon_is_named_after_its_file_up_to_the_first_dot() -> None:
    assert k3s_ops.addon_name(f"{FOLDER}/oceanid-a.v2.yaml") == "oceanid-a"
    assert k3s_ops.addon_name(f"{FOLDER}/metrics-server/auth-reader.yaml") == "auth-reader"


def test_the_addons_fact_reads_names_and_checksums() -> None:
    fact = K3sAddons()
    assert fact.process([API_UNAVAILABLE_MARKER]) is None
    assert fact.process([f"runtimes {OLD}", "new"]) == {"runtimes": OLD, "new": ""}
    with pytest.raises(FactProcessError, match="not an Addon's name and checksum"):
        fact.process(["error: the server doesn't have a resource type"])
    assert "get addons.k3s.cattle.io -n kube-system" in fact.command()
