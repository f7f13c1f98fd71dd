"""Shared fixtures for unit tests: a valid settings dict and a fake-secret factory."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def _group_data() -> dict:
    namespace: dict = {}
    exec(
        compile((REPO / "group_data" / "all.py").read_text(), "group_data/all.py", "exec"),
        namespace,
    )
    data = {k: v for k, v in namespace.items() if not k.startswith("__")}
    return data


@pytest.fixture
def data() -> dict:
    """group_data/all.py as shipped."""
    return copy.deepcopy(_group_data())
