"""The deploy files' door to the validated site: preflight once, then a plan per host.

pyinfra executes a deploy file once per host; the preflight (settings, secrets, tunnel
credentials for the whole inventory) runs on the first and its result, or its failure,
is reused, so ESC is asked once and a bad value stops the run, with one line per
problem, before any operation is queued.
"""

from __future__ import annotations

from pyinfra import host, inventory
from pyinfra.api.exceptions import PyinfraError

from oceanid.model import HostPlan, Site
from oceanid.preflight import PreflightError, check, short_name, views_from_inventory

_RESULT: list[Site | PyinfraError] = []


class PreflightFailed(PyinfraError):
    """Settings or secrets are wrong; nothing was changed on any host."""


def site() -> Site:
    if not _RESULT:
        try:
            _RESULT.append(check(views_from_inventory(inventory)))
        except PreflightError as exc:
            lines = "\n".join(f"    {line}" for line in exc.problems)
            _RESULT.append(
                PreflightFailed(
                    f"preflight found {len(exc.problems)} problem(s); no host was changed:\n{lines}"
                )
            )
    result = _RESULT[0]
    if isinstance(result, PyinfraError):
        raise result
    return result


def this_host() -> HostPlan:
    return site().hosts[short_name(host.name)]
