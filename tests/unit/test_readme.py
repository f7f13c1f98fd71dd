"""The README is the operator's first screen (issue 23): short, the two root commands on top,
every link alive, every `make` target it or docs/ names real; the internals live in docs/."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
TARGET = re.compile(r"^([a-z][a-z0-9-]*):(?!=)", re.M)


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_the_first_screen_keeps_the_two_commands_and_the_readme_stays_short():
    lines = text(README).splitlines()
    assert len(lines) < 200
    first = "\n".join(lines[:25])
    assert "apt-get update && apt-get install -y make python3-venv && make lab" in first
    assert re.search(r"^make test\b", first, re.M)
    prerequisites = text(README).split("## Prerequisites", 1)[1].split("\n## ", 1)[0]
    assert "575" in prerequisites and "rel-25-08" in prerequisites  # the driver, with its source


def test_every_link_to_a_page_of_the_repository_resolves():
    for page in [README, *DOCS]:
        for link in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text(page)):
            assert (page.parent / link).exists(), f"{page.name}: {link}"


def test_every_make_target_the_docs_name_exists():
    targets = set(TARGET.findall(text(REPO / "Makefile")))
    for page in [README, *DOCS]:
        for name in re.findall(r"`make ([a-z][a-z0-9-]*)", text(page)):
            assert name in targets, f"{page.name} names `make {name}`, which the Makefile lacks"


def test_the_first_deploy_is_a_numbered_sequence_ending_in_smoke():
    section = text(README).split("## First deploy", 1)[1].split("\n## ", 1)[0]
    steps = re.findall(r"^(\d+)\. ", section, re.M)
    assert steps == [str(n) for n in range(1, len(steps) + 1)] and len(steps) >= 6
    assert section.index("make check") < section.index("make deploy") < section.index("make smoke")


def test_the_internals_moved_to_docs_with_the_lab_traps():
    lab = text(REPO / "docs" / "lab.md")
    assert "Known traps, learned the hard way" in lab
    assert "A dry run with `-y` shows nothing" in lab
    for page in ("k3s.md", "gpu-hosts.md", "performance.md", "security.md", "secrets.md"):
        assert f"docs/{page}" in text(README), page
