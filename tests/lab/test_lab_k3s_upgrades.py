"""Upgrades under Kubernetes' version-skew rules in the lab (issue 20, item 4): tethys (the only
server, embedded etcd) takes an etcd snapshot, then is upgraded first; when its new binary never
becomes ready (`/readyz` failing: the stand-in's READYZ_FAULT, which lists the versions that
cannot serve) it is rolled back, and no agent is upgraded in that run.

Each test leaves the lab converged again.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest

from lab.converge import pyinfra
from lab.topology import MIRROR_DIR
from tests.lab import ssh
from tests.lab.test_lab_k3s import BINARY, UNITS, invocation, release, standin, wait_ready

pytestmark = pytest.mark.lab

NEW = "v1.33.5+k3s1"
FAULT = "/var/lib/rancher/k3s/server/standin-readyz-fault"  # the stand-in's READYZ_FAULT
SNAPSHOTS = "/var/lib/rancher/k3s/server/db/snapshots"


def binary_sha(name: str) -> str:
    return ssh(name, f"sudo sha256sum {BINARY}").stdout.split(" ")[0]


def test_a_server_that_never_becomes_ready_is_rolled_back_and_no_agent_upgraded(converged):
    bumped = release(NEW, standin(NEW))
    before = {name: (invocation(name), binary_sha(name)) for name in UNITS}
    assert ssh("tethys", f"echo {NEW} | sudo tee {FAULT} >/dev/null").returncode == 0
    try:
        run = pyinfra("deploys/site.py", "--data", f"k3s={json.dumps(bumped)}")
    finally:
        ssh("tethys", f"sudo rm -f {FAULT}")
        shutil.rmtree(MIRROR_DIR / "k3s-io/k3s/releases/download" / NEW)
    assert run.returncode != 0, "an upgrade whose server never became ready passed"
    assert "Traceback" not in run.output
    # the snapshot came first, named in the output, written where k3s writes it
    saved = re.search(r"etcd snapshot (pre-upgrade-v1\.33\.5-k3s1-tethys-\d+) saved", run.output)
    assert saved, run.output[-6000:]
    assert ssh("tethys", f"sudo test -f {SNAPSHOTS}/{saved.group(1)}").returncode == 0
    # tethys: its own health check failed, the previous binary is back and serving
    assert "k3s.service was not healthy on its new binary" in run.output, run.output[-6000:]
    assert "v1.33.4+k3s1" in ssh("tethys", f"{BINARY} --version").stdout
    assert ssh("tethys", "systemctl is-active k3s").stdout.strip() == "active"
    # the agents: not upgraded in that run, not even restarted
    for name in ("styx", "calypso"):
        assert (invocation(name), binary_sha(name)) == before[name], f"{name} was touched"
        assert "v1.33.4+k3s1" in ssh(name, f"{BINARY} --version").stdout
        assert (
            f"k3s server tethys failed in this run: k3s on {name} was not upgraded to {NEW}"
            in run.output
        ), run.output[-6000:]
    assert sorted(run.failed_hosts) == ["calypso", "styx", "tethys"], run.failed_hosts
    wait_ready(UNITS)
    back = pyinfra("deploys/site.py")  # the restart tethys still owes, then nothing
    assert back.returncode == 0, back.output[-6000:]
    again = pyinfra("deploys/site.py")
    assert again.returncode == 0 and again.changed == {}, again.changed
    wait_ready(UNITS)


def test_an_agent_alone_is_not_upgraded_past_its_server(converged):
    """`--limit styx` with a new version: the servers are not in the run, so styx's upgrade
    is refused while planning, and nothing on styx changes."""
    bumped = release(NEW, standin(NEW))
    before = (invocation("styx"), binary_sha("styx"))
    try:
        run = pyinfra("deploys/site.py", "--limit", "styx", "--data", f"k3s={json.dumps(bumped)}")
    finally:
        shutil.rmtree(MIRROR_DIR / "k3s-io/k3s/releases/download" / NEW)
    assert run.returncode != 0
    assert "waits for every server to run v1.33.5+k3s1 first; tethys not in this run" in (
        run.output
    ), run.output[-4000:]
    assert (invocation("styx"), binary_sha("styx")) == before
    again = pyinfra("deploys/site.py")
    assert again.returncode == 0 and again.changed == {}, again.changed


def broken_agent(version: str) -> bytes:
    """The stand-in at `version` whose `k3s agent` cannot start (a build broken for agents),
    its server as good as any: the agents' own rollback, once the servers run it."""
    marker = "def run_agent(options: Options) -> int:\n"
    source = standin(version).decode()
    assert marker in source
    broken = '    raise Failure("STAND-IN: a broken build: the agent cannot start")\n'
    return source.replace(marker, marker + broken, 1).encode()


def test_servers_first_then_an_agent_that_cannot_start_is_rolled_back(converged):
    version = "v1.33.6+k3s1"
    bumped = release(version, broken_agent(version))
    try:
        run = pyinfra("deploys/site.py", "--data", f"k3s={json.dumps(bumped)}")
    finally:
        shutil.rmtree(MIRROR_DIR / "k3s-io/k3s/releases/download" / version)
    assert run.returncode != 0, "an upgrade to an agent that cannot start passed"
    assert version in ssh("tethys", f"{BINARY} --version").stdout  # the server went first
    for name in ("styx", "calypso"):
        assert "v1.33.4+k3s1" in ssh(name, f"{BINARY} --version").stdout
        assert ssh(name, "systemctl is-active k3s-agent").stdout.strip() == "active"
    assert "k3s-agent.service was not healthy on its new binary" in run.output
    assert sorted(run.failed_hosts) == ["calypso", "styx"], run.failed_hosts
    back = pyinfra("deploys/site.py")  # tethys back to the pinned patch release
    assert back.returncode == 0, back.output[-6000:]
    assert "v1.33.4+k3s1" in ssh("tethys", f"{BINARY} --version").stdout
    again = pyinfra("deploys/site.py")
    assert again.returncode == 0 and again.changed == {}, again.changed
    wait_ready(UNITS)
