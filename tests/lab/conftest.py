"""One lab per test session, shared by every lab module.

Booting the four hosts and their first converge cost about two minutes, so the lab is
brought up once; `test_teardown_leaves_nothing` runs after every other test that uses it,
and the module that kills `lab up` on purpose runs last of all.
"""

from __future__ import annotations

import pytest

from lab.converge import pyinfra
from tests.lab import lab_cli


@pytest.fixture(scope="session")
def lab():
    up = lab_cli("up", "--no-deploy", timeout=1200)
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    yield
    down = lab_cli("down")
    assert down.returncode == 0, down.stderr


@pytest.fixture(scope="session")
def dry_run(lab):
    """Before anything is deployed: --dry --diff (without -y, so pyinfra detects changes)
    shows every change and makes none."""
    return pyinfra("deploys/site.py", "--dry", "--diff", "-vv", json_output=False, yes=False)


@pytest.fixture(scope="session")
def converged(lab, dry_run):
    first = pyinfra("deploys/site.py")
    assert first.returncode == 0, first.output[-6000:]
    assert first.totals["error"] == 0 and not first.failed_hosts
    assert first.totals["success"] > 0, "the first converge changed nothing on fresh hosts"
    return first


LAST = ("test_teardown_leaves_nothing",)


def pytest_collection_modifyitems(items):
    """Teardown after every test that shares the lab; the interrupted-`lab up` module last."""

    def rank(item) -> int:
        if item.module.__name__.endswith("test_lab_interrupted"):
            return 2
        return 1 if item.originalname in LAST else 0

    items.sort(key=rank)  # stable: each group keeps pytest's order
