"""`make adopt-plan HOSTS=1` against the converged lab: each k3s node's installed k3s read over
SSH (as `make status` reads it, through the lab's SSH config and calypso's sudo), so each node's
k3s line names the version found there, never "unknown". The same path through pyinfra's
`@local` connector: tests/unit/test_adopt_hosts.py."""

from __future__ import annotations

import re

import pytest

from tests.lab.test_lab_commands import make

pytestmark = pytest.mark.lab

K3S_NODES = ("tethys", "styx", "calypso")  # inventories/lab.py: the server and the agents


def test_adopt_plan_reads_each_nodes_k3s_over_ssh(converged):
    done = make("adopt-plan", "HOSTS=1")
    assert done.returncode == 0, done.stdout + done.stderr  # nothing would be refused
    lines = done.stdout.splitlines()
    for node in K3S_NODES:
        (line,) = [text for text in lines if re.match(rf"\w+ k3s (\S+ )?on {node}[: ]", text)]
        # a version read on the node: ADOPT (the pinned one) or REPLACE (another)
        assert re.match(rf"^(ADOPT k3s v\S+ on {node}:|REPLACE k3s v\S+ on {node} with )", line)
    assert "`--hosts` reads what is installed" not in done.stdout
