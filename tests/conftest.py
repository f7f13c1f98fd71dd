"""Fixtures shared by every test folder."""

from __future__ import annotations

import pytest

from lab import fake_secrets


@pytest.fixture
def lab_secrets() -> dict[str, str]:
    """Fresh fake secrets, well-formed like the lab's: one of each tunnel credential shape."""
    return fake_secrets.generate()
