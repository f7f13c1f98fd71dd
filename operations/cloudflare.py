"""
Manage Oceanid's Cloudflare routes (DNS records, remotely-managed tunnel ingress) through the API.

These operations talk to the Cloudflare API from the machine running pyinfra, not from the target
host: call them once per run (``_run_once=True``, or against ``@local``). The API is read while the
operation is generated, so ``--dry`` shows each change it would make and makes none; the writes
happen in a Python callback when the operation executes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from weakref import WeakKeyDictionary

from pyinfra import host, logger
from pyinfra.api import OperationValueError, operation
from pyinfra.api.host import Host
from pyinfra.api.state import State

from oceanid import pyinfra_internals as internals
from oceanid.cloudflare_access import AccessPlan, ServiceTokenRef, apply_access, plan_access
from oceanid.cloudflare_dns import (
    CloudflareAccess,
    CloudflareError,
    DesiredRecord,
    RoutesPlan,
    apply_routes,
    plan_routes,
)
from operations.failure import refuse

# What `read_routes` read, per pyinfra run (its State) and per host and arguments.
_READS: WeakKeyDictionary[State, dict[tuple, RoutesPlan | CloudflareError]] = WeakKeyDictionary()
_ACCESS_READS: WeakKeyDictionary[State, dict[tuple, AccessPlan | CloudflareError]] = (
    WeakKeyDictionary()
)


def read_routes(
    access: CloudflareAccess,
    *,
    records: Sequence[DesiredRecord] = (),
    ingress: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    takeover: Iterable[str] = (),
    tunnel_keys: Mapping[str, str] | None = None,
) -> RoutesPlan | CloudflareError:
    """The zone and tunnels read for ``routes`` on the current host, once per run.

    ``routes`` plans from this read both when pyinfra detects changes and when it executes, so
    what runs is what was shown. A deploy file may call it first, while it is loaded: each
    host's reads then overlap the other hosts' (and their SSH facts) instead of running at the
    end of the run. A failed read is returned, not raised, and the operation refuses with it.
    """
    key = (
        host.name,
        access.account_id,
        access.zone_id,
        access.base_url,
        repr(list(records)),
        repr(sorted((ingress or {}).items())),
        tuple(takeover),
        repr(sorted((tunnel_keys or {}).items())),
    )
    reads = _READS.setdefault(host.state, {})
    if key not in reads:
        try:
            reads[key] = plan_routes(
                access.client(),
                access,
                records,
                ingress=ingress,
                takeover=takeover,
                tunnel_keys=tunnel_keys,
            )
        except CloudflareError as error:
            reads[key] = error
    return reads[key]


def _apply(
    state: State,
    host: Host,
    access: CloudflareAccess,
    planned: RoutesPlan | AccessPlan,
    write: Callable[..., list[str]] = apply_routes,
) -> bool:
    """Callback run at execution: write the plan made moments before (``write``: ``apply_routes``
    or ``apply_access``), log each change made.

    A failure is logged as one line and reported by returning False (pyinfra then marks the
    operation failed) instead of raising, which pyinfra would print with a full traceback.
    """
    try:
        done = write(access.client(), access, planned)
    except CloudflareError as error:
        host.log_styled(str(error), fg="red", log_func=logger.error)
        return False
    for line in done:
        host.log(f"Cloudflare: {line}")
    return True


def _settle(
    access: CloudflareAccess,
    planned: RoutesPlan | AccessPlan,
    write: Callable[..., list[str]] = apply_routes,
):
    """What an operation yields for a plan: nothing and a noop line stating the settled state, or
    each change shown (``--dry`` stops here) and the one command that writes them."""
    if not planned.changes:
        host.noop(planned.settled())
        return
    if not internals.executing(host.state):
        for line in planned.changes:
            host.log(f"Cloudflare: would {line}")
    yield internals.host_callback(_apply, access, planned, write=write)


@operation()
def routes(
    access: CloudflareAccess,
    *,
    records: Sequence[DesiredRecord] = (),
    ingress: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    takeover: Iterable[str] = (),
    others: Iterable[str] = (),
    tunnel_keys: Mapping[str, str] | None = None,
):
    """
    Point public names at their tunnels and set remotely-managed tunnels' ingress, all or nothing.

    + access: ``CloudflareAccess`` (API token, account id, zone id, optional base URL); the token
      never appears in pyinfra's output
    + records: desired proxied CNAMEs (``DesiredRecord``; deploys/dns makes them from the names
      of ``oceanid.names``)
    + ingress: tunnel id -> ingress rules (``oceanid.ingress.node_ingress`` and the like);
      only tunnels whose configuration is managed by Cloudflare are changed, locally-managed
      ones are left to their config file
    + takeover: full names of existing records the deploy may overwrite (the
      ``cloudflare_takeover_records`` setting)
    + others: names that other hosts of the site manage in their own runs of this operation;
      they are neither stale records nor unused takeover names here
    + tunnel_keys: tunnel id -> the setting (ESC key) it came from, named when that tunnel does
      not exist or was deleted

    A matching record is adopted unchanged. A record with other content or type, not created by
    this deploy and not in ``takeover``, stops the run before anything is written, and so does
    any record at the name other than A, AAAA or CNAME; no record is ever deleted. A name is
    never pointed at a tunnel that does not exist or was deleted.

    Everything is read while the operation is planned, so a failed read (API unreachable, token
    or zone refused) refuses the operation then, ``--dry`` included, and shows no change.

    **Example:**

    .. code:: python

        cloudflare.routes(
            name="Cloudflare routes",
            access=CloudflareAccess(api_token=token, account_id=acct, zone_id=zone),
            records=[DesiredRecord("gpu.boathou.se", tunnel_target(node_tunnel))],
            ingress={node_tunnel: node_ingress("gpu.boathou.se", GpuService())},
            _run_once=True,
        )
    """
    if not isinstance(access, CloudflareAccess):
        raise OperationValueError("access must be a CloudflareAccess (keeps the token out of logs)")
    if isinstance(takeover, str):
        raise OperationValueError("takeover must be a list of names, not one string")

    planned = read_routes(
        access, records=records, ingress=ingress, takeover=takeover, tunnel_keys=tunnel_keys
    )
    if isinstance(planned, CloudflareError):
        yield from refuse(str(planned))
        return

    others = {name.lower() for name in others}
    for orphan in planned.dns.orphans:
        if orphan.name.lower() in others:
            continue
        host.log(
            f"Cloudflare: {orphan.name} ({orphan.describe()}) carries this deploy's comment but is "
            "no longer wanted; left in place, delete it by hand if it is stale",
            log_func=logger.warning,
        )
    for name in planned.dns.unused_takeover:
        if name.lower() in others:
            continue
        host.log(
            f"Cloudflare: {name} is in cloudflare_takeover_records but is not a name this deploy "
            "manages",
            log_func=logger.warning,
        )
    for tunnel_plan in planned.tunnels:
        if tunnel_plan.kind == "local":
            host.log(f"Cloudflare: {tunnel_plan.describe()}", log_func=logger.debug)

    yield from _settle(access, planned)


def read_access(
    access: CloudflareAccess, domain: str, token: ServiceTokenRef, app_name: str
) -> AccessPlan | CloudflareError:
    """The account's service tokens, applications and policies read for ``access_application``
    on the current host, once per run (see ``read_routes``: what runs is what was shown)."""
    key = (host.name, access.account_id, access.base_url, domain, token.client_id, app_name)
    reads = _ACCESS_READS.setdefault(host.state, {})
    if key not in reads:
        try:
            reads[key] = plan_access(access.client(), access.account_id, domain, token, app_name)
        except CloudflareError as error:
            reads[key] = error
    return reads[key]


@operation()
def access_application(
    access: CloudflareAccess,
    domain: str,
    token: ServiceTokenRef,
    app_name: str,
):
    """
    Put a public name behind Cloudflare Access: one application, one policy, one service token.

    + access: ``CloudflareAccess`` (API token, account id, optional base URL); the token never
      appears in pyinfra's output
    + domain: the full public name to guard (``gpu.boathou.se``)
    + token: ``ServiceTokenRef`` with the ESC client ID of the service token to admit; the token
      must exist in the account (its secret is never needed here)
    + app_name: the application's name when the deploy creates it; an application of that name
      is moved to ``domain`` when no application guards the name yet

    The application that guards ``domain`` is adopted (never duplicated); its policy is set to
    admit only the service token (decision ``non_identity``) where it differs, and any other
    policy of that application is removed. An application that also guards other names, or is
    not self-hosted, stops the run before anything is written, as does a token that is missing,
    disabled or expired. Everything is read while the operation is planned, so ``--dry`` shows
    each change.

    **Example:**

    .. code:: python

        cloudflare.access_application(
            name="Cloudflare Access for gpu.boathou.se",
            access=CloudflareAccess(api_token=token, account_id=acct, zone_id=zone),
            domain="gpu.boathou.se",
            token=ServiceTokenRef(client_id),
            app_name="oceanid calypso",
        )
    """
    if not isinstance(access, CloudflareAccess):
        raise OperationValueError("access must be a CloudflareAccess (keeps the token out of logs)")
    if not isinstance(token, ServiceTokenRef):
        raise OperationValueError("token must be a ServiceTokenRef (hides its client ID)")

    planned = read_access(access, domain, token, app_name)
    if isinstance(planned, CloudflareError):
        yield from refuse(str(planned))
        return
    yield from _settle(access, planned, apply_access)
