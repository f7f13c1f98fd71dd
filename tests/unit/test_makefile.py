"""The Makefile is the operator's menu (issue 23): `make` alone lists every target from its
`##` line, and every deploy target runs unattended with YES=1, limited with LIMIT=."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MAKEFILE = REPO / "Makefile"
TARGET = re.compile(r"^([a-z][a-z0-9-]*):(?!=)([^#]*)(?:##\s*(.*))?$")

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def targets() -> dict[str, str | None]:
    """Each target's name and its `##` text (None without one)."""
    found = {}
    for line in MAKEFILE.read_text(encoding="utf-8").splitlines():
        match = TARGET.match(line)
        if match:
            found[match.group(1)] = match.group(3)
    return found


def make(*argv: str) -> str:
    done = subprocess.run(
        ["make", "-s", "--no-print-directory", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def test_every_target_has_a_help_line_and_make_alone_lists_it():
    found = targets()
    assert len(found) > 20
    assert [name for name, text in found.items() if not text] == []
    listed = make()  # the default goal is help
    names = {line.split()[0] for line in listed.splitlines() if line.strip()}
    assert set(found) <= names, set(found) - names
    assert make("help") == listed


def dry(*argv: str) -> str:
    """The commands make would run (-n), with check and the venv taken as done."""
    return make("-n", "-o", "check", "-o", "venv", "-o", ".venv/.installed", *argv)


@pytest.mark.parametrize("target", ["deploy", "deploy-simple", "deploy-full"])
def test_deploy_targets_take_yes_limit_and_args(target):
    line = dry(target, "YES=1", "LIMIT=styx", "ARGS=--serial").replace("\\\n", " ")
    assert re.search(r"pyinfra\s+-y\s+inventory\.py deploys/site\.py", line), line
    assert "--limit 'styx'" in line and "--serial" in line
    assert " -y " not in dry(target)  # without YES pyinfra asks before it changes anything


def test_deploy_full_turns_provisioning_on_for_the_run_only():
    line = dry("deploy-full").replace("\\\n", " ")
    assert "--data enable_node_provisioning=True" in line
    assert "--data enable_control_plane_lb=True" in line
    simple = dry("deploy-simple").replace("\\\n", " ")
    assert "--data enable_node_provisioning=False" in simple


def test_a_dry_run_never_gets_yes():
    for target in ("diff", "lab-diff"):
        line = dry(target, "YES=1", "LIMIT=calypso")
        assert "--dry" in line and " -y" not in line, line
        assert "--limit 'calypso'" in line


def test_venv_installs_no_test_extras_and_test_targets_do():
    text = MAKEFILE.read_text(encoding="utf-8")
    recipe = text.split("$(STAMP): pyproject.toml", 1)[1].split("\n\n", 1)[0]
    assert "pip install -q -e ." in recipe and "[test]" not in recipe
    for target in ("test", "test-unit", "test-lab", "lint", "lab"):
        prerequisites = re.search(rf"^{target}:([^#\n]*)", text, re.M).group(1).split()
        assert "venv-test" in prerequisites, target
