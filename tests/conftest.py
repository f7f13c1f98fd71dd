"""Fixtures shared by every test folder; and gevent's monkey-patching, done first.

pyinfra's CLI module patches the standard library with gevent when it is imported. A test
module importing it (the pyinfra-testing harness does) after `ssl` and urllib3 were
imported leaves them half patched, and HTTPS clients then fail with RecursionError (the
`kubernetes` client against the k3s stand-in, when both ran in one session). Patching
here, before any test module is imported, runs every test in the same fully patched
process that pyinfra runs in.

The pyinfra-testing fact harness freezes the clock (freezegun) around each fact's parser.
Starting a freeze walks every loaded module's attributes; the `kubernetes` client's models
are lazy, so that walk imported them with freezegun's fake datetime in place, pydantic
refused it, and the half-started freeze kept the clock at 2025-01-01 for the rest of the
session. freezegun leaves the modules on its ignore list alone.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import pytest  # noqa: E402

try:  # the test extras' pyinfra-testing brings freezegun; `make verify` runs without them
    import freezegun  # noqa: E402 - after the patching, on purpose
except ImportError:  # no harness, no frozen clock to keep away from kubernetes
    freezegun = None
else:
    freezegun.configure(extend_ignore_list=["kubernetes"])

from lab import fake_secrets  # noqa: E402


@pytest.fixture
def lab_secrets() -> dict[str, str]:
    """Fresh fake secrets, well-formed like the lab's: one of each tunnel credential shape."""
    return fake_secrets.generate()
