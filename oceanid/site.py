"""The deploy files' door to the validated site: preflight once, then a plan per host.

pyinfra executes a deploy file once per host; the preflight (settings, secrets, tunnel
credentials for the whole inventory) runs on the first and is reused, so ESC is asked
once and a bad value stops the run before any operation is queued.
"""

from __future__ import annotations

import sys
from functools import cache

from pyinfra import host, inventory

from oceanid.preflight import (
    HostPlan,
    PreflightError,
    Site,
    check,
    short_name,
    views_from_inventory,
)


@cache
def _site() -> Site:
    try:
        return check(views_from_inventory(inventory))
    except PreflightError as exc:
        for line in exc.problems:
            print(f"preflight: {line}", file=sys.stderr)
        print(f"preflight: {len(exc.problems)} problem(s); no host was changed", file=sys.stderr)
        raise SystemExit(2) from None


def site() -> Site:
    return _site()


def this_host() -> HostPlan:
    return _site().hosts[short_name(host.name)]
