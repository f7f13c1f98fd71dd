"""Shared fixtures for unit tests: a valid settings dict and a fake-secret factory."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from lab import fake_secrets  # noqa: E402

SHA = "a" * 64


def _group_data() -> dict:
    namespace: dict = {}
    exec(
        compile((REPO / "group_data" / "all.py").read_text(), "group_data/all.py", "exec"),
        namespace,
    )
    data = {k: v for k, v in namespace.items() if not k.startswith("__")}
    for name in ("k3s", "cloudflared"):
        data[name] = {**data[name], "sha256": {"amd64": SHA}}
    return data


@pytest.fixture
def data() -> dict:
    """group_data/all.py as shipped, with real-looking pins in place of placeholders."""
    return copy.deepcopy(_group_data())


@pytest.fixture
def lab_secrets() -> dict[str, str]:
    return fake_secrets.generate()
