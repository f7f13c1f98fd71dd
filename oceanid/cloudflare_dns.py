"""Cloudflare DNS records and tunnel ingress for Oceanid's public names, through the API.

The public names (oceanid/names.py: ``label.<base>`` on the cluster tunnel, ``gpu.<base>``,
``gpu2.<base>`` … each on its own node tunnel) are proxied CNAMEs to
``<tunnel-id>.cfargotunnel.com``. This module is the pure part plus the SDK calls;
``operations/cloudflare.py`` wraps it for pyinfra.

Ownership rules, because the zone is shared with people and other tools:

- a record that already matches is adopted as it is (nothing written, its comment untouched);
- records the deploy creates carry the comment ``managed-by: oceanid-deploys``; the deploy changes a
  record only when it carries that comment or its name is in the operator's takeover list
  (setting ``cloudflare_takeover_records``); anything else is a conflict that stops the run;
- only A, AAAA and CNAME records can be taken over; another type at a wanted name (TXT, MX …) is
  never overwritten and stops the run, since a CNAME cannot share its name (RFC 1034);
- the deploy never deletes a record. Stale managed records are reported, not removed;
- a name is never pointed at a tunnel that does not exist or was deleted.

Every run plans first (reads everything, checks every conflict) and writes only when the whole plan
is clean, so a conflict or a bad token never leaves half the names changed.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import cloudflare
from cloudflare import Cloudflare
from cloudflare.pagination import SyncV4PagePaginationArray

from oceanid.ingress import CATCH_ALL_SERVICE

if TYPE_CHECKING:
    from oceanid.secrets import Secrets
    from oceanid.settings import Settings

MANAGED_COMMENT = "managed-by: oceanid-deploys"
TAKEOVER_SETTING = "cloudflare_takeover_records"
TUNNEL_DOMAIN = "cfargotunnel.com"
DEFAULT_BASE_URL = "https://api.cloudflare.com/client/v4"
# Bounded retries: the SDK retries 408/409/429/5xx and connection errors, honouring Retry-After up
# to 60 s, otherwise backing off 0.5 s → 8 s. Three retries keep a stuck run under ~4 minutes.
MAX_RETRIES = 3
TIMEOUT_S = 30.0
LIST_PAGE_SIZE = 100
TOKEN_HINT = (
    "check the API token (ESC cloudflareApiToken): it must be valid and allow Zone DNS Edit on the "
    "zone and Account Cloudflare Tunnel Edit"
)
# The API answers 403/10000 both for a bad token and for a well-formed zone or account ID that the
# token cannot reach (or that does not exist), so these lines name the ID as well as the token.
ZONE_REACH = (
    "check the zone ID (ESC cloudflareZoneId), and that the token can reach it: the API token "
    "(ESC cloudflareApiToken) must be valid and allow Zone DNS Edit on that zone"
)
ACCOUNT_REACH = (
    "check the account ID (ESC cloudflareAccountId), and that the token can reach it: the API "
    "token (ESC cloudflareApiToken) must be valid and allow Account Cloudflare Tunnel Edit there"
)
TUNNEL_KEYS = "cloudflareTunnelId or cloudflareNodeTunnelId"
# Records a public name may replace when taken over; anything else there is never overwritten.
ROUTABLE_TYPES = frozenset({"A", "AAAA", "CNAME"})
# What the deploy sets in an ingress rule; other keys read back (originRequest defaults the API
# fills in) are not the deploy's to compare.
RULE_KEYS = ("hostname", "path", "service")
RATE_LIMIT_BLOCK = "5 minutes"  # the API's block once a client passes 1200 requests in 5 minutes
_CREATE_RACE_CODES = {81053, 81057, 81058}


class CloudflareError(Exception):
    """A one-line, operator-facing failure: what failed and what to do. Never holds a secret."""


class CloudflareConflictError(CloudflareError):
    """The zone holds records the deploy may not change; nothing was written."""


# -- access ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CloudflareAccess:
    """Where and as whom to talk to the API. The token never appears in repr/str (pyinfra prints
    operation arguments), so pass this object, not the bare token, to operations."""

    api_token: str = field(repr=False)
    account_id: str
    zone_id: str
    base_url: str | None = None

    def __post_init__(self) -> None:
        token = self.api_token
        if hasattr(token, "unmask"):  # pyinfra's HiddenValue
            object.__setattr__(self, "api_token", token.unmask())

    def __str__(self) -> str:
        return repr(self)

    @classmethod
    def of(cls, settings: Settings, secrets: Secrets) -> CloudflareAccess:
        """The site's API access, as every caller builds it (DNS and Access, the node tunnel's
        hand-over, smoke, adopt-plan): ESC's token, account and zone, and
        `cloudflare_api_base_url`. The zone may be unset where only the account's tunnels are
        read (the hand-over, with `manage_dns` off); preflight requires it with `manage_dns`."""
        return cls(
            api_token=secrets["cloudflareApiToken"],
            account_id=secrets["cloudflareAccountId"],
            zone_id=secrets.get("cloudflareZoneId") or "",
            base_url=settings.cloudflare_api_base_url,
        )

    def client(self) -> Cloudflare:
        """The token is checked here, not when the object is made: a deploy file builds it while
        loading, where an error would be a traceback; here the operation refuses in one line."""
        token = self.api_token
        if not isinstance(token, str) or not token.strip():
            raise CloudflareError(f"the Cloudflare API token is empty; {TOKEN_HINT}")
        if any(ch.isspace() for ch in token.strip()):
            raise CloudflareError(f"the Cloudflare API token contains whitespace; {TOKEN_HINT}")
        return _shared_client(token, self.base_url)


@functools.lru_cache(maxsize=8)
def _shared_client(api_token: str, base_url: str | None) -> Cloudflare:
    """One client per token and API for the whole pyinfra run: every host's read then shares
    its connection pool and TLS context (building a context loads the CA bundle, about 30 ms of
    CPU, and each new connection is a TLS handshake)."""
    return make_client(api_token, base_url)


def make_client(api_token: str, base_url: str | None = None) -> Cloudflare:
    """Build an SDK client that authenticates with the token and nothing else.

    The SDK sends only the first credential it has, in the order e-mail, global key, token, and
    fills unset ones from ``CLOUDFLARE_EMAIL``/``CLOUDFLARE_API_KEY``; a stray variable in the
    operator's shell would silently replace the token. Likewise ``CLOUDFLARE_BASE_URL`` would
    redirect the token to another host, so the base URL is always explicit here.
    """
    client = Cloudflare(
        api_token=api_token.strip(),
        base_url=base_url or DEFAULT_BASE_URL,
        max_retries=MAX_RETRIES,
        timeout=TIMEOUT_S,
    )
    client.api_email = None
    client.api_key = None
    client.user_service_key = None
    return client


def _causes(error: cloudflare.APIStatusError) -> list[tuple[list[int], str]]:
    """Each error as (its codes, outermost first; its innermost cause, described).

    Validation errors may arrive as 1004 "DNS Validation Error" with the specific cause in
    ``error_chain``; the SDK's typed errors drop that chain, so it is read from the body.
    """
    body = error.body
    entries = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(entries, list) or not entries:
        entries = [{"code": e.code, "message": e.message} for e in error.errors]
    causes = []
    for entry in entries:
        chain = [entry]
        while isinstance(chain[-1], dict) and chain[-1].get("error_chain"):
            chain.append(chain[-1]["error_chain"][0])
        chain = [link for link in chain if isinstance(link, dict)]
        inner = chain[-1]
        described = f"{inner.get('code', '')} {inner.get('message', '')}".strip()
        if len(chain) > 1:
            described += f" (reported as {entry.get('code')} {entry.get('message')})"
        causes.append(([link.get("code") for link in chain], described))
    return causes


def _rate_limit_todo(error: cloudflare.APIStatusError) -> str:
    """How long to wait: the API's Retry-After when it gave one, else its documented block."""
    kept = f"the API kept rate-limiting after {MAX_RETRIES} retries"
    try:
        seconds = int(float(error.response.headers.get("retry-after", "")))
    except ValueError:
        seconds = 0
    if seconds > 0:
        return f"{kept} and asks to wait {seconds} s (Retry-After); wait that long, then rerun"
    return (
        f"{kept}; it blocks a client for {RATE_LIMIT_BLOCK} once the rate limit is passed: "
        f"wait {RATE_LIMIT_BLOCK}, then rerun"
    )


def _api_error(action: str, error: Exception, hint: str = "", reach: str = "") -> CloudflareError:
    """Turn an SDK exception into one line naming what failed and what to do.

    ``reach`` says what to check when the API refuses access (403/10000: a bad token, or an ID the
    token cannot reach); ``hint`` what to check when it has no such object (7003, 404).
    """
    if isinstance(error, cloudflare.APIStatusError):
        causes = _causes(error)
        codes = {code for chain, _ in causes for code in chain}
        detail = "; ".join(described for _, described in causes) or "no details"
        status = error.status_code
        if status == 429 or 971 in codes:
            todo = _rate_limit_todo(error)
        elif status in (401, 403) or {10000, 9109, 6003, 9106, 1000} & codes:
            todo = reach or TOKEN_HINT
        elif {7003, 7000} & codes or status == 404:
            todo = (
                hint or "check the account and zone IDs (ESC cloudflareAccountId, cloudflareZoneId)"
            )
        elif status >= 500:
            todo = "Cloudflare answered with a server error; rerun later"
        else:
            todo = "fix what the Cloudflare error says, then rerun"
        return CloudflareError(f"Cloudflare API: {action} failed (HTTP {status}: {detail}); {todo}")
    if isinstance(error, cloudflare.APITimeoutError):
        return CloudflareError(f"Cloudflare API: {action} timed out; check the network and rerun")
    if isinstance(error, cloudflare.APIConnectionError):
        return CloudflareError(
            f"Cloudflare API: {action} failed, cannot reach the API ({error.__cause__ or error}); "
            "check the network and the API base URL"
        )
    return CloudflareError(f"Cloudflare API: {action} failed: {error}")


# -- desired state --------------------------------------------------------------------------------


def tunnel_target(tunnel_id: str) -> str:
    return f"{tunnel_id}.{TUNNEL_DOMAIN}"


def _norm(name: str) -> str:
    return name.strip().lower().rstrip(".")


@dataclass(frozen=True)
class DesiredRecord:
    """A public name as a proxied CNAME (automatic TTL) to a tunnel."""

    name: str
    content: str
    type: Literal["CNAME"] = "CNAME"
    proxied: bool = True
    ttl: int = 1

    def describe(self) -> str:
        ttl = "auto" if self.ttl == 1 else str(self.ttl)
        proxy = "proxied" if self.proxied else "DNS only"
        return f"{self.type} {self.name} → {self.content} ({proxy}, ttl {ttl})"


# -- DNS plan -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CurrentRecord:
    """A record as the API reports it (only the fields the plan looks at)."""

    id: str
    name: str
    type: str
    content: str
    proxied: bool
    ttl: int
    comment: str | None

    @property
    def managed(self) -> bool:
        return self.comment == MANAGED_COMMENT

    @property
    def routable(self) -> bool:
        """A, AAAA or CNAME: the only records a take-over may replace."""
        return self.type in ROUTABLE_TYPES

    def describe(self) -> str:
        proxy = "proxied" if self.proxied else "DNS only"
        ttl = "auto" if self.ttl == 1 else str(self.ttl)
        owner = ", managed by this deploy" if self.managed else ""
        return f"{self.type} {self.content} ({proxy}, ttl {ttl}{owner})"


@dataclass(frozen=True)
class RecordAction:
    """What the deploy does with one desired name: adopt (nothing), create, or update one record."""

    kind: Literal["adopt", "create", "update"]
    desired: DesiredRecord
    current: CurrentRecord | None = None
    reason: str = ""

    def describe(self) -> str:
        if self.kind == "create":
            return f"create {self.desired.describe()}"
        if self.kind == "update":
            assert self.current is not None
            return (
                f"update {self.desired.name}: {self.current.describe()} → "
                f"{self.desired.describe()} ({self.reason})"
            )
        return f"adopt {self.desired.describe()}"


@dataclass(frozen=True)
class Conflict:
    """A desired name held by records the deploy may not change."""

    desired: DesiredRecord
    current: tuple[CurrentRecord, ...]

    def message(self) -> str:
        now = ", ".join(r.describe() for r in self.current)
        others = [r for r in self.current if not r.routable]
        if others:
            held = ", ".join(r.describe() for r in others)
            return (
                f"DNS name {self.desired.name} holds {held}, which the deploy never overwrites "
                "(a take-over replaces only A, AAAA and CNAME records) and the wanted CNAME "
                "cannot share its name with it; move that record or choose another public name "
                "for this host, then rerun"
            )
        if len(self.current) > 1:
            return (
                f"DNS name {self.desired.name} has {len(self.current)} records ({now}); the deploy "
                f"wants one {self.desired.describe()} and never deletes records it did not create: "
                "remove the extra records by hand, then rerun"
            )
        return (
            f"DNS record {self.desired.name} points at {now}; the deploy wants "
            f"{self.desired.describe()}; to let the deploy overwrite it, add "
            f"'{self.desired.name}' to {TAKEOVER_SETTING}"
        )


@dataclass(frozen=True)
class Plan:
    """The DNS side of a run, computed from one read of the zone."""

    zone_id: str
    actions: tuple[RecordAction, ...]
    conflicts: tuple[Conflict, ...] = ()
    orphans: tuple[CurrentRecord, ...] = ()
    unused_takeover: tuple[str, ...] = ()

    @property
    def changes(self) -> tuple[RecordAction, ...]:
        return tuple(a for a in self.actions if a.kind != "adopt")

    def check(self) -> None:
        """Raise one error listing every conflict; the plan must not be applied then."""
        if self.conflicts:
            raise CloudflareConflictError(
                "Cloudflare DNS: nothing changed, "
                + " | ".join(c.message() for c in self.conflicts)
            )


def _current(record: Mapping[str, Any]) -> CurrentRecord:
    kind = str(record.get("type"))
    content = str(record.get("content") or "")
    return CurrentRecord(
        id=str(record.get("id")),
        name=_norm(str(record.get("name"))),
        type=kind,
        content=_norm(content) if kind == "CNAME" else content,
        proxied=bool(record.get("proxied", False)),
        ttl=int(record.get("ttl", 1) or 1),
        comment=record.get("comment"),
    )


def list_records(client: Cloudflare, zone_id: str) -> list[CurrentRecord]:
    """Every record in the zone, as plain JSON through the SDK's own pager.

    `client.dns.records.list` would be the typed way, but touching `client.dns` imports the
    SDK's DNS tree (170 modules, about 0.1 s of CPU) on every run, a no-op included; only a
    write needs it. The pager fetches page after page until a page is empty (it ignores
    ``total_pages``), so a zone of N records costs N/100 + 1 requests."""
    try:
        pages = client.get_api_list(
            f"/zones/{zone_id}/dns_records",
            model=object,
            page=SyncV4PagePaginationArray[object],
            options={"params": {"per_page": LIST_PAGE_SIZE}},
        )
        return [_current(record) for record in pages if isinstance(record, Mapping)]
    except cloudflare.APIError as error:
        raise _api_error(
            f"reading DNS records of zone {zone_id}",
            error,
            hint="check the zone ID (ESC cloudflareZoneId): it is the zone's 32-character ID",
            reach=ZONE_REACH,
        ) from None


def _decide(
    desired: DesiredRecord, found: list[CurrentRecord], takeover: set[str]
) -> RecordAction | Conflict:
    """Adopt a match; change only a managed or taken-over single record; else conflict.
    A record of another type than A, AAAA or CNAME at the name is always a conflict."""
    if not found:
        return RecordAction("create", desired)
    if not all(record.routable for record in found):
        return Conflict(desired, tuple(found))
    if len(found) > 1:
        return Conflict(desired, tuple(found))
    current = found[0]
    same_target = current.type == desired.type and current.content == _norm(desired.content)
    same_settings = current.proxied == desired.proxied and current.ttl == desired.ttl
    if same_target and same_settings:
        return RecordAction("adopt", desired, current)
    if current.managed:
        return RecordAction("update", desired, current, "record created by this deploy")
    if desired.name in takeover:
        return RecordAction("update", desired, current, f"listed in {TAKEOVER_SETTING}")
    return Conflict(desired, (current,))


def plan(
    client: Cloudflare,
    zone_id: str,
    desired: Sequence[DesiredRecord],
    takeover: Iterable[str] = (),
) -> Plan:
    """Compare the zone with ``desired``; reads only. ``takeover`` holds full names the operator
    lets the deploy overwrite."""
    takeover_set = {_norm(name) for name in takeover}
    records = list_records(client, zone_id)
    by_name: dict[str, list[CurrentRecord]] = {}
    for record in records:
        by_name.setdefault(record.name, []).append(record)
    actions: list[RecordAction] = []
    conflicts: list[Conflict] = []
    for want in desired:
        decision = _decide(want, by_name.get(_norm(want.name), []), takeover_set)
        (conflicts if isinstance(decision, Conflict) else actions).append(decision)
    wanted = {_norm(d.name) for d in desired}
    orphans = tuple(r for r in records if r.managed and r.name not in wanted)
    return Plan(
        zone_id=zone_id,
        actions=tuple(actions),
        conflicts=tuple(conflicts),
        orphans=orphans,
        unused_takeover=tuple(sorted(takeover_set - wanted)),
    )


def _record_body(desired: DesiredRecord) -> dict[str, Any]:
    return {
        "name": desired.name,
        "type": desired.type,
        "content": desired.content,
        "proxied": desired.proxied,
        "ttl": desired.ttl,
        "comment": MANAGED_COMMENT,
    }


def _matches_now(client: Cloudflare, zone_id: str, desired: DesiredRecord) -> bool:
    found = [r for r in list_records(client, zone_id) if r.name == _norm(desired.name)]
    decision = _decide(desired, found, set())
    return isinstance(decision, RecordAction) and decision.kind == "adopt"


def apply_action(client: Cloudflare, zone_id: str, action: RecordAction) -> None:
    """Write one planned change. A create that answers "already exists" is checked again: the SDK
    retries a POST whose first answer was lost, and the record may be the one just made."""
    body = _record_body(action.desired)
    try:
        if action.kind == "create":
            client.dns.records.create(zone_id=zone_id, **body)
        elif action.kind == "update":
            assert action.current is not None
            client.dns.records.update(action.current.id, zone_id=zone_id, **body)
    except cloudflare.APIStatusError as error:
        codes = {e.code for e in error.errors}
        lost_answer = action.kind == "create" and codes & _CREATE_RACE_CODES
        if lost_answer and _matches_now(client, zone_id, action.desired):
            return
        raise _api_error(action.describe(), error, reach=ZONE_REACH) from None
    except cloudflare.APIError as error:
        raise _api_error(action.describe(), error, reach=ZONE_REACH) from None


# -- tunnel ingress -------------------------------------------------------------------------------


def desired_ingress(
    routes: Mapping[str, str] | Iterable[tuple[str, str]],
    catch_all: str = CATCH_ALL_SERVICE,
) -> list[dict[str, Any]]:
    """Ingress rules in order, hostname → service, closed by the catch-all rule cloudflared requires
    last (a rule without hostname or path)."""
    items = routes.items() if isinstance(routes, Mapping) else routes
    rules: list[dict[str, Any]] = []
    for hostname, service in items:
        if not hostname or not service:
            raise CloudflareError(f"ingress rule {hostname!r} → {service!r} needs both parts")
        rules.append({"hostname": _norm(hostname), "service": service})
    rules.append({"service": catch_all})
    return rules


def _norm_rule(rule: Mapping[str, Any], keys: Iterable[str] | None = None) -> dict[str, Any]:
    """Drop empty fields, and with ``keys`` every field but those, so that a rule read back (with
    ``originRequest`` defaults the API fills in, ``path: ""`` and the like) equals the rule that
    was written."""
    out: dict[str, Any] = {}
    for key, value in rule.items():
        if value in (None, "", {}, []) or (keys is not None and key not in keys):
            continue
        out[key] = _norm(value) if key == "hostname" else value
    return out


def _norm_ingress(
    rules: Iterable[Mapping[str, Any]], keys: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    keys = None if keys is None else set(keys)
    return [_norm_rule(rule, keys) for rule in rules]


def _describe_rule(rule: Mapping[str, Any]) -> str:
    path = f" {rule['path']}" if rule.get("path") else ""
    return f"{rule.get('hostname') or '*'}{path} → {rule.get('service')}"


@dataclass(frozen=True)
class TunnelConfigPlan:
    """The ingress of one tunnel: ``update`` (remote-managed, differs), ``noop`` or ``local``."""

    tunnel_id: str
    tunnel_name: str
    kind: Literal["update", "noop", "local"]
    current: tuple[dict[str, Any], ...] = ()
    desired: tuple[dict[str, Any], ...] = ()
    new_config: dict[str, Any] | None = None

    def describe(self) -> str:
        label = f"tunnel {self.tunnel_name} ({self.tunnel_id})"
        if self.kind == "local":
            return f"{label} is locally managed: ingress comes from its config file"
        if self.kind == "noop":
            return f"{label} ingress is {', '.join(_describe_rule(r) for r in self.desired)}"
        before = ", ".join(_describe_rule(r) for r in self.current) or "none"
        after = ", ".join(_describe_rule(r) for r in self.desired)
        return f"set ingress of {label}: {before} ⇒ {after}"


def _tunnel_api(
    client: Cloudflare, method: str, account_id: str, tunnel_id: str, tail: str = "", body=None
) -> Any:
    """A cfd_tunnel endpoint through the SDK's own transport (auth, retries, typed errors).

    `client.zero_trust` would be the typed way, but touching it imports the SDK's whole
    Zero Trust tree, about 0.75 s of CPU on every pyinfra run, a no-op converge included;
    the three tunnel endpoints we use are plain JSON, so they go through the client directly.
    """
    path = f"/accounts/{account_id}/cfd_tunnel/{tunnel_id}{tail}"
    if method == "GET":
        envelope = client.get(path, cast_to=object)
    else:
        envelope = client.put(path, body=body, cast_to=object)
    return envelope.get("result") if isinstance(envelope, dict) else None


def get_tunnel(
    client: Cloudflare, account_id: str, tunnel_id: str, source: str = ""
) -> dict[str, Any]:
    """The tunnel object; a tunnel that does not exist or was deleted is refused, naming the
    setting its ID came from (``source``, an ESC key), since no name may point at it."""
    key = source or TUNNEL_KEYS
    try:
        tunnel = _tunnel_api(client, "GET", account_id, tunnel_id) or {}
    except cloudflare.APIError as error:
        raise _api_error(
            f"reading tunnel {tunnel_id} (ESC {key})",
            error,
            hint=f"no tunnel has that ID in account {account_id}: set ESC {key} to the ID of an "
            "existing tunnel of that account (ESC cloudflareAccountId)",
            reach=ACCOUNT_REACH,
        ) from None
    if tunnel.get("deleted_at"):
        raise CloudflareError(
            f"Cloudflare: tunnel {tunnel.get('name') or tunnel_id} ({tunnel_id}, ESC {key}) was "
            f"deleted at {tunnel['deleted_at']}; no name is routed to a deleted tunnel: set ESC "
            f"{key} (and its tunnel token) to a live tunnel, then rerun"
        )
    return tunnel


def plan_tunnel_config(
    client: Cloudflare,
    account_id: str,
    tunnel_id: str,
    ingress: Sequence[Mapping[str, Any]],
    source: str = "",
) -> TunnelConfigPlan:
    """Compare a remotely-managed tunnel's ingress with ``ingress``; reads only. A locally-managed
    tunnel (``config_src`` "local") takes its ingress from the file on the host, so it is left
    alone here. Only the fields the rules set are compared (``RULE_KEYS`` and any other key of
    ``ingress``): the API reads rules back with ``originRequest`` defaults never sent.
    ``source`` names the setting the tunnel ID came from, for the error when it is missing."""
    wanted = _norm_ingress(ingress)
    if not wanted or "hostname" in wanted[-1] or "path" in wanted[-1]:
        raise CloudflareError(
            f"tunnel {tunnel_id}: the last ingress rule must be a catch-all (no hostname, no path)"
        )
    tunnel = get_tunnel(client, account_id, tunnel_id, source)
    name = tunnel.get("name") or tunnel_id
    if tunnel.get("config_src") != "cloudflare":
        return TunnelConfigPlan(tunnel_id, name, "local", desired=tuple(wanted))
    try:
        answer = _tunnel_api(client, "GET", account_id, tunnel_id, "/configurations")
    except cloudflare.APIError as error:
        raise _api_error(
            f"reading the configuration of tunnel {name}", error, reach=ACCOUNT_REACH
        ) from None
    config: dict[str, Any] = dict((answer or {}).get("config") or {})
    managed = set(RULE_KEYS).union(*(rule.keys() for rule in wanted))
    current = _norm_ingress(config.get("ingress") or [], managed)
    if current == wanted:
        return TunnelConfigPlan(tunnel_id, name, "noop", tuple(current), tuple(wanted))
    new_config = {**config, "ingress": [dict(rule) for rule in ingress]}
    return TunnelConfigPlan(tunnel_id, name, "update", tuple(current), tuple(wanted), new_config)


def apply_tunnel_config(client: Cloudflare, account_id: str, tunnel_plan: TunnelConfigPlan) -> None:
    """Put the planned configuration (whole config replaced, other keys kept as read)."""
    if tunnel_plan.kind != "update":
        return
    try:
        _tunnel_api(
            client,
            "PUT",
            account_id,
            tunnel_plan.tunnel_id,
            "/configurations",
            body={"config": tunnel_plan.new_config},
        )
    except cloudflare.APIError as error:
        raise _api_error(tunnel_plan.describe(), error, reach=ACCOUNT_REACH) from None


# -- tunnel status --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TunnelStatus:
    """A tunnel's health as Cloudflare sees it, for smoke and status commands."""

    tunnel_id: str
    name: str
    status: str  # healthy, degraded, down, inactive
    config_src: str
    connectors: int
    connections: int
    versions: tuple[str, ...] = ()

    @property
    def serving(self) -> bool:
        return self.status in ("healthy", "degraded") and self.connections > 0

    def describe(self) -> str:
        versions = f", cloudflared {', '.join(self.versions)}" if self.versions else ""
        return (
            f"tunnel {self.name} ({self.tunnel_id}): {self.status}, "
            f"{self.connectors} connector(s), {self.connections} connection(s){versions}"
        )


def tunnel_clients(client: Cloudflare, account_id: str, tunnel_id: str) -> list[dict[str, Any]]:
    """The tunnel's connectors (``GET .../cfd_tunnel/{id}/connections``: one entry per running
    cloudflared, its ``id`` the connector's ID and ``conns`` its edge connections; the SDK's
    ``cloudflare/types/zero_trust/tunnels/cloudflared/client.py`` ``Client``/``Conn``)."""
    try:
        clients = _tunnel_api(client, "GET", account_id, tunnel_id, "/connections") or []
    except cloudflare.APIError as error:
        raise _api_error(
            f"reading connections of tunnel {tunnel_id}", error, reach=ACCOUNT_REACH
        ) from None
    return [c for c in clients if isinstance(c, dict)]


def _live_conns(connector: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [c for c in (connector.get("conns") or []) if not c.get("is_pending_reconnect")]


def other_connectors(
    client: Cloudflare, account_id: str, tunnel_id: str, own_id: str | None
) -> list[str]:
    """IDs of the tunnel's connectors with a live edge connection, ``own_id`` left out (the
    connector about to stop: what remains serves the tunnel once it is gone)."""
    found = []
    for connector in tunnel_clients(client, account_id, tunnel_id):
        ids = {connector.get("id")} | {c.get("client_id") for c in _live_conns(connector)}
        if _live_conns(connector) and (own_id is None or own_id not in ids):
            found.append(str(connector.get("id") or "?"))
    return found


def wait_for_other_connector(
    client: Cloudflare,
    account_id: str,
    tunnel_id: str,
    own_id: str | None,
    *,
    timeout: float = 120.0,
    interval: float = 5.0,
    say: Callable[[str], None] = print,
    tell_every: float = 10.0,
    check: str = "that the other connector runs and reaches Cloudflare",
) -> str:
    """Wait until the tunnel shows a connected connector other than ``own_id``; return its ID.

    Make before break: a connector that stops while no other one serves its tunnel takes its
    public name down. Polls every ``interval`` seconds, says what it waits for at least every
    ``tell_every`` seconds, and after ``timeout`` raises, naming the tunnel and ``check``."""
    start = time.monotonic()
    told = -tell_every
    while True:
        others = other_connectors(client, account_id, tunnel_id, own_id)
        if others:
            return others[0]
        waited = time.monotonic() - start
        if waited >= timeout:
            mine = f" than this host's ({own_id})" if own_id else ""
            raise CloudflareError(
                f"tunnel {tunnel_id}: no connector other{mine} connected within {timeout:g} s; "
                f"check {check}, then rerun"
            )
        if waited - told >= tell_every:
            say(
                f"waiting for another connector on tunnel {tunnel_id} before this one stops: "
                f"{waited:.0f} s of {timeout:g} s"
            )
            told = waited
        time.sleep(min(interval, max(timeout - waited, 0.0)))


def tunnel_status(
    client: Cloudflare, account_id: str, tunnel_id: str, source: str = ""
) -> TunnelStatus:
    """Status from the tunnel object; counts from ``/connections`` (the tunnel object's own
    ``connections`` list is deprecated). Pending-reconnect connections are not counted. A tunnel
    that does not exist or was deleted is an error naming ``source``, the ESC key of its ID."""
    tunnel = get_tunnel(client, account_id, tunnel_id, source)
    clients = tunnel_clients(client, account_id, tunnel_id)
    live = [_live_conns(connector) for connector in clients]
    return TunnelStatus(
        tunnel_id=tunnel_id,
        name=tunnel.get("name") or tunnel_id,
        status=tunnel.get("status") or "unknown",
        config_src=tunnel.get("config_src") or "unknown",
        connectors=sum(1 for conns in live if conns),
        connections=sum(len(conns) for conns in live),
        versions=tuple(sorted({c["version"] for c in clients if c.get("version")})),
    )


# -- the whole run --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoutesPlan:
    """DNS and tunnel ingress together, so that a run writes nothing unless all of it is clean."""

    dns: Plan
    tunnels: tuple[TunnelConfigPlan, ...] = ()

    @property
    def changes(self) -> list[str]:
        """One line per write, in the order ``apply_routes`` makes them."""
        lines = [t.describe() for t in self.tunnels if t.kind == "update"]
        return lines + [action.describe() for action in self.dns.changes]

    def settled(self) -> str:
        names = ", ".join(a.desired.name for a in self.dns.actions) or "no names"
        return f"Cloudflare DNS records {names} and tunnel ingress are as wanted"


def _record_tunnel(record: DesiredRecord) -> str | None:
    suffix = "." + TUNNEL_DOMAIN
    content = _norm(record.content)
    return content.removesuffix(suffix) if content.endswith(suffix) else None


def plan_routes(
    client: Cloudflare,
    access: CloudflareAccess,
    records: Sequence[DesiredRecord],
    *,
    ingress: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    takeover: Iterable[str] = (),
    tunnel_keys: Mapping[str, str] | None = None,
) -> RoutesPlan:
    """Read the zone and every tunnel, then decide; raises CloudflareConflictError on conflicts.

    Every tunnel a record points at is looked up too, so that no name is pointed at a tunnel that
    does not exist or was deleted; ``tunnel_keys`` maps a tunnel ID to the setting (ESC key) it
    came from, which the error names."""
    keys = tunnel_keys or {}
    dns = plan(client, access.zone_id, records, takeover) if records else Plan(access.zone_id, ())
    tunnels = tuple(
        plan_tunnel_config(client, access.account_id, tunnel_id, rules, keys.get(tunnel_id, ""))
        for tunnel_id, rules in (ingress or {}).items()
    )
    targets = dict.fromkeys(
        t for t in map(_record_tunnel, records) if t and t not in (ingress or {})
    )
    for tunnel_id in targets:
        get_tunnel(client, access.account_id, tunnel_id, keys.get(tunnel_id, ""))
    dns.check()
    return RoutesPlan(dns, tunnels)


def apply_routes(client: Cloudflare, access: CloudflareAccess, routes: RoutesPlan) -> list[str]:
    """Tunnel ingress first, then DNS: a name never points at a tunnel that has no rule for it
    yet. Returns the changes made; on a failure the error lists the ones already made."""
    routes.dns.check()
    steps = [
        (lambda p=plan: apply_tunnel_config(client, access.account_id, p), plan.describe())
        for plan in routes.tunnels
        if plan.kind == "update"
    ]  # ingress first, so a name never points at a tunnel without a rule for it
    steps += [
        (lambda a=action: apply_action(client, access.zone_id, a), action.describe())
        for action in routes.dns.changes
    ]
    done: list[str] = []
    for write, described in steps:
        try:
            write()
        except CloudflareError as error:
            made = "; ".join(done) if done else "none"
            raise CloudflareError(f"{error} (changes already made: {made})") from None
        done.append(described)
    return done
