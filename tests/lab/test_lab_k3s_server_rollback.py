"""The server's own health check in the lab (issue 20, item 8): tethys upgraded to a k3s whose API
never becomes ready is rolled back by its bounded `/readyz` wait (deploys/k3s/server.py HEALTH),
and no agent is upgraded in that run (item 4: a failed server upgrade stops every agent's).

The new binary is the k3s stand-in under another version; the lab makes it unready with the
stand-in's fault file (tests/standins/k3s READYZ_FAULT): while
`/var/lib/rancher/k3s/server/standin-readyz-fault` lists a version, that version's `/readyz`
answers 500 as kube-apiserver's does with a failed check, and the old version, rolled back to,
is ready. The agent's rollback test (its binary cannot start at all) is in test_lab_k3s.py.
"""

from __future__ import annotations

import json
import shutil

import pytest

from lab.converge import pyinfra
from lab.topology import MIRROR_DIR
from tests.lab import ssh
from tests.lab.test_lab_k3s import BINARY, UNITS, invocation, release, standin, wait_ready

pytestmark = pytest.mark.lab

PINNED = "v1.33.4+k3s1"
UNREADY = "v1.33.8+k3s1"
FAULT = "/var/lib/rancher/k3s/server/standin-readyz-fault"
AGENTS = ("styx", "calypso")


def versions() -> dict[str, str]:
    return {name: ssh(name, f"{BINARY} --version").stdout for name in UNITS}


def test_a_server_upgrade_that_never_serves_is_rolled_back_and_no_agent_upgrades(converged):
    bumped = release(UNREADY, standin(UNREADY))
    before = {name: invocation(name) for name in AGENTS}
    try:
        marked = ssh("tethys", f"echo {UNREADY} | sudo tee {FAULT} >/dev/null")
        assert marked.returncode == 0, marked.stderr
        run = pyinfra("deploys/site.py", "--data", f"k3s={json.dumps(bumped)}", json_output=False)
        found = versions()
    finally:
        ssh("tethys", f"sudo rm -f {FAULT}")
        shutil.rmtree(MIRROR_DIR / "k3s-io/k3s/releases/download" / UNREADY)
    try:
        assert run.returncode != 0, "a server upgrade whose API never became ready passed"
        assert "k3s.service was not healthy on its new binary" in run.output, run.output[-4000:]
        assert PINNED in found["tethys"], found["tethys"]
        assert ssh("tethys", "systemctl is-active k3s").stdout.strip() == "active"
        assert ssh("tethys", "sudo k3s kubectl get --raw /readyz").stdout.strip() == "ok"
        upgraded = [name for name in AGENTS if PINNED not in found[name]]
        assert upgraded == [], f"agents upgraded after tethys's upgrade failed: {upgraded}"
        assert {name: invocation(name) for name in AGENTS} == before, "an agent restarted"
    finally:
        back = pyinfra("deploys/site.py")  # the pinned version everywhere again
        assert back.returncode == 0, back.output[-4000:]
        wait_ready(UNITS)
    again = pyinfra("deploys/site.py")
    assert again.returncode == 0 and again.changed == {}, again.changed
