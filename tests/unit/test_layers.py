"""The layer contract (design.md §6, issue 24): deploys/ -> operations/ -> oceanid/ -> facts/, each
importing only those below it. `lint-imports` checks it in `make lint` and `make test` (CI), from
pyproject.toml's [tool.importlinter]; these tests show that the tree keeps it and that an upward
import, even one inside a function, breaks the check."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAYERS = ("deploys", "operations", "oceanid", "facts")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    command = [str(LINT_IMPORTS), "--no-cache", "--no-logo"]
    return subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=120)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """The four layers and pyproject.toml, copied: what `lint-imports` reads, nothing else."""
    for package in LAYERS:
        shutil.copytree(
            REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_tree_keeps_the_layer_contract():
    done = lint_imports(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 kept, 0 broken" in done.stdout


def test_the_copy_keeps_it_too(tree: Path):
    """The copy the next tests break passes as it is: what fails there is the injected line."""
    done = lint_imports(tree)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("facts/gpu.py", "import deploys.site\n", "facts.gpu -> deploys.site"),
        ("oceanid/model.py", "from operations import k3s\n", "oceanid.model -> operations.k3s"),
        # inside a function, as the old late imports that dodged import cycles were
        (
            "operations/k3s.py",
            "def _late():\n    from deploys.k3s import config\n\n    return config\n",
            "operations.k3s -> deploys.k3s.config",
        ),
    ],
)
def test_an_upward_import_breaks_the_contract(tree: Path, module: str, line: str, broken: str):
    path = tree / module
    path.write_text(path.read_text(encoding="utf-8") + "\n\n" + line, encoding="utf-8")
    done = lint_imports(tree)
    assert done.returncode != 0
    assert "0 kept, 1 broken" in done.stdout
    assert re.search(rf"^- {re.escape(broken)} \(l\.\d+\)$", done.stdout, re.M), done.stdout


def test_make_lint_and_make_test_run_the_contract():
    """CI runs `make test` (.ci/run); `make lint` is the same check alone."""
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    for target in ("lint", "test"):
        recipe = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", makefile, re.M)
        assert recipe and "$(VENV)/bin/lint-imports" in recipe.group(1), target
