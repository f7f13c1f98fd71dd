"""
Operations on a host's ``cloudflared`` connector (facts/cloudflared.py reads it).

`stopped` hands a tunnel over: the host's connector stops only once the Cloudflare API lists
another connector on its tunnel (make before break). The API is read from the machine running
pyinfra, in a callback when the operation executes; the unit's state comes from the host's
DesiredState, its connector ID from its own ``/ready``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyinfra import host, logger
from pyinfra.api import StringCommand, operation
from pyinfra.api.host import Host
from pyinfra.api.state import State

from facts.cloudflared import CloudflaredReady
from oceanid import pyinfra_internals as internals
from operations.failure import refuse
from operations.managed import DesiredState

if TYPE_CHECKING:
    from oceanid.cloudflare_dns import CloudflareAccess


#: How long the host connector waits for another connector on its tunnel before it stops,
#: and how often the API is asked meanwhile.
HAND_OVER_TIMEOUT = 120.0
HAND_OVER_INTERVAL = 5.0


def _other_connector_up(
    state: State,
    host: Host,
    access: CloudflareAccess,
    tunnel_id: str,
    own_id: str | None,
    unit_name: str,
    *,
    timeout: float,
    interval: float,
    check: str,
) -> bool:
    """Callback, run on the operator's machine just before the stop: the API must show a
    connected connector other than this host's. False (the operation fails, the unit keeps
    running) when none appears within ``timeout``."""
    from oceanid.cloudflare_dns import CloudflareError, wait_for_other_connector

    try:
        other = wait_for_other_connector(
            access.client(),
            access.account_id,
            tunnel_id,
            own_id,
            timeout=timeout,
            interval=interval,
            say=host.log,
            check=check,
        )
    except CloudflareError as error:
        host.log_styled(f"{unit_name} keeps running: {error}", fg="red", log_func=logger.error)
        return False
    host.log(f"Cloudflare: connector {other} serves tunnel {tunnel_id}; stopping {unit_name}")
    return True


@operation()
def stopped(
    desired: DesiredState,
    unit_name: str,
    access: CloudflareAccess,
    tunnel_id: str,
    metrics_address: str,
    *,
    timeout: float = HAND_OVER_TIMEOUT,
    interval: float = HAND_OVER_INTERVAL,
    check: str = "that the cluster's connector runs on this node",
):
    """
    Stop and disable the host connector once another connector serves its tunnel.

    + desired: the GPU host's DesiredState (its units include `unit_name`)
    + unit_name: the connector's unit
    + access: ``CloudflareAccess`` (API token, account id): the tunnel's connectors are read
      from the machine running pyinfra
    + tunnel_id: the tunnel the unit serves
    + metrics_address: the unit's ``metrics:`` address, whose ``/ready`` gives its connector ID
    + timeout: seconds to wait for another connector before failing, the unit left running
    + interval: seconds between two reads of the tunnel's connections
    + check: what the failure tells the operator to check

    Make before break: a running unit stops only after the API lists a connected connector
    whose ID is not this unit's (cloudflared's ``/ready`` answers ``connectorId``; the API's
    ``/connections`` lists each connector by that ID). A unit enabled but not running is only
    disabled: it serves nothing.
    """
    if desired.unreadable():
        yield from refuse(desired.unreadable_message())
        return
    now = desired.state()["units"].get(unit_name) or {}
    enabled = now.get("enabled") in ("enabled", "enabled-runtime")
    active = now.get("active") in ("active", "activating", "reloading")
    if not enabled and not active:
        host.noop(f"{unit_name} is stopped and disabled (the cluster's DaemonSet serves it)")
        return
    if active:
        ready = host.get_fact(CloudflaredReady, metrics_address=metrics_address)
        own_id = ready["connector_id"] if ready else None
        if ready and ready["status"] == 200 and not own_id:
            yield from refuse(
                f"{unit_name} is connected but its /ready at {metrics_address} names no "
                "connectorId, so its connector cannot be told from the cluster's; it keeps "
                "running: check that the host runs the pinned cloudflared"
            )
            return
        if not internals.executing(host.state):
            host.log(
                f"would wait for another connector on tunnel {tunnel_id}, then stop {unit_name}"
            )
        yield internals.host_callback(
            _other_connector_up,
            access,
            tunnel_id,
            own_id,
            unit_name,
            timeout=timeout,
            interval=interval,
            check=check,
        )
    yield StringCommand("systemctl", "disable", "--now", unit_name)
