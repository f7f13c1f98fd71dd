"""
Fact parsers against fixtures, through pyinfra-testing's generator (one test per fixture file).

Fixtures live in ``fixtures/facts/<module>.<Fact>/*.json`` (pyinfra's own layout: ``arg``,
``command``, ``requires_command``, ``output``, ``fact``). A fixture may name real command output
kept in the shared fixtures folder instead of inlining it: ``"output_file": "nvidia-smi/h200/..."``
is read from ``../shared/fixtures`` (beside the repository) when the test runs. Real output is
never copied into the repository, and a missing shared folder fails those tests: it must not turn
into a silent skip of the only real-hardware evidence.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from unittest import TestCase

from pyinfra_testing.facts import make_fact_tests

from facts.gpu import GPU_COLUMNS

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_FIXTURES = REPO_ROOT.parent / "shared" / "fixtures"
FIXTURES = Path(__file__).parent / "fixtures" / "facts"


def _resolve_output_file(test_data: dict[str, Any]) -> dict[str, Any]:
    """Replace ``output_file`` by the named shared fixture's lines."""
    name = test_data.get("output_file")
    if name is None:
        return test_data
    path = SHARED_FIXTURES / name
    if not path.is_file():
        raise AssertionError(
            f"shared fixture {path} is missing: these tests need the real command output in "
            f"{SHARED_FIXTURES} (the shared folder beside the repository)",
        )
    return {**test_data, "output": path.read_text(encoding="utf-8").splitlines()}


def _with_shared_output(case: type[TestCase]) -> type[TestCase]:
    """Wrap the generated class's per-file hook so ``output_file`` is resolved first."""
    generated = case._test  # type: ignore[attr-defined]

    def _test(self: TestCase, test_name: str, test_data: dict[str, Any]) -> None:
        generated(self, test_name, _resolve_output_file(test_data))

    case._test = _test  # type: ignore[attr-defined]
    return case


for _fact_dir in sorted(path for path in FIXTURES.iterdir() if path.is_dir()):
    _case = _with_shared_output(make_fact_tests("facts", _fact_dir.name, _fact_dir))
    globals()[f"TestFact_{_fact_dir.name.replace('.', '_')}"] = _case
del _fact_dir, _case


def test_gpu_query_is_the_one_the_h200_fixture_was_taken_with() -> None:
    """The real CSV is only valid evidence if GpuDevices asks for the same columns, in order."""
    readme = (SHARED_FIXTURES / "nvidia-smi" / "h200" / "README.md").read_text(encoding="utf-8")
    match = re.search(r"--query-gpu=([\w.,]+)", readme)
    assert match, "the H200 fixture README no longer names its --query-gpu columns"
    assert match.group(1).split(",") == [field for field, _, _ in GPU_COLUMNS]
