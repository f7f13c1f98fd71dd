"""The server's own health check (issue 20, item 8): a k3s server upgraded to a binary that never
serves is rolled back, because its restart waits, bounded, for k3s's `/readyz` through the admin
kubeconfig (`k3s kubectl get --raw /readyz`), not merely for the unit to be active.

The commands are the ones pyinfra plans for the site's k3s roles (tests/unit/test_k3s_site_plan's
CLI-mode State), and the server's is run, as the host would, in a mount namespace of the test's
own whose /usr/local/bin holds the new and the previous binary (stand-ins that only answer
`kubectl get --raw /readyz`), with systemctl and journalctl standing in for systemd.
"""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest
from pyinfra.api import StringCommand

from facts.managed import ManagedState
from operations import services

# the site plan's fixtures (`site`, the autouse `_cli_mode`) and its planner
from tests.unit.test_k3s_site_plan import _cli_mode, _converged, _plan, site  # noqa: F401

BINARY = "/usr/local/bin/k3s"
READYZ = "k3s kubectl get --raw /readyz"


def _bumped(name: str, planned) -> dict:
    """A converged node whose installed k3s is another version: the pin upgrades it."""
    facts = _converged(name, planned)
    paths = facts[ManagedState]["paths"]
    paths[BINARY] = dataclasses.replace(paths[BINARY], sha256="0" * 64)
    return facts


def _restart(order, unit: str, host: str) -> str:
    (command,) = [
        c.get_raw_value()
        for name, _, by_host in order
        if name == unit
        for c in by_host.get(host, [])
        if isinstance(c, StringCommand) and "systemctl restart" in c.get_raw_value()
    ]
    return command


def test_the_servers_upgrade_waits_for_its_own_readyz_and_rolls_back(site, monkeypatch):  # noqa: F811
    monkeypatch.setattr(services, "HEALTH_WAIT", 7)
    _, order = _plan(site(), _bumped)
    server = _restart(order, "k3s", "tethys")
    assert f"timeout 7 sh -c 'until {READYZ} >/dev/null 2>&1; do sleep" in server
    assert f"mv -f {BINARY}.previous {BINARY}" in server
    agent = _restart(order, "k3s-agent", "styx")
    assert READYZ not in agent  # an agent has no API of its own, and no admin kubeconfig


FAKE_K3S = """#!/bin/sh
# k3s {version}: `kubectl get --raw /readyz` as kube-apiserver answers it {how}
if [ "$*" = "kubectl get --raw /readyz" ]; then {answer}; fi
echo "k3s {version}"
"""


@pytest.mark.skipif(not Path("/usr/bin/unshare").exists(), reason="needs util-linux unshare")
@pytest.mark.parametrize("ready", [False, True])
def test_a_new_binary_that_never_serves_is_put_back(site, monkeypatch, tmp_path, ready):  # noqa: F811
    monkeypatch.setattr(services, "HEALTH_WAIT", 3)
    monkeypatch.setattr(services, "START_WAIT", 10)
    _, order = _plan(site(), _bumped)
    server = _restart(order, "k3s", "tethys")

    tools = tmp_path / "tools"
    tools.mkdir()
    log = tmp_path / "systemctl.log"
    (tools / "systemctl").write_text(f'#!/bin/sh\necho "$*" >> {log}\nexit 0\n')
    (tools / "journalctl").write_text("#!/bin/sh\necho 'k3s: apiserver not ready'\n")
    bins = tmp_path / "bin"
    bins.mkdir()
    failing = "echo 'readyz check failed' >&2; exit 1"
    new_answer = "echo ok; exit 0" if ready else failing
    (bins / "k3s").write_text(
        FAKE_K3S.format(version="new", how="(ok)" if ready else "(500)", answer=new_answer)
    )
    (bins / "k3s.previous").write_text(
        FAKE_K3S.format(version="old", how="(ok)", answer="echo ok; exit 0")
    )
    for path in [*tools.iterdir(), *bins.iterdir()]:
        path.chmod(0o755)
    script = tmp_path / "restart.sh"
    script.write_text(server + "\n")
    shell = (
        "mount -t tmpfs tmpfs /usr/local/bin && cp -p "
        f"{bins}/k3s {bins}/k3s.previous /usr/local/bin/ && "
        f"PATH={tools}:/usr/local/bin:/usr/bin:/bin sh {script}; rc=$?; "
        f"cp /usr/local/bin/k3s {tmp_path}/after; exit $rc"
    )
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", shell], capture_output=True, text=True, timeout=60
    )
    after = (tmp_path / "after").read_text()
    if ready:
        assert done.returncode == 0, done.stderr
        assert "k3s new" in after
        assert log.read_text().splitlines() == [
            "restart k3s.service",
            "is-active --quiet k3s.service",
        ]
    else:
        assert done.returncode != 0
        assert "k3s old" in after  # the previous binary is back
        assert "was not healthy on its new binary: the previous binary" in done.stderr
        restarts = [line for line in log.read_text().splitlines() if line.startswith("restart")]
        assert restarts == ["restart k3s.service", "restart k3s.service"]
