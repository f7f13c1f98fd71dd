"""Cloudflare Access in front of a GPU host's public name, through the API.

With ``access: service_token`` in a GPU host's settings, its name (``gpu.<base>``, ``gpuN.<base>``)
gets a self-hosted Access application whose one policy admits one service token: Cloudflare's
edge then refuses every request that does not carry that token's ``CF-Access-Client-Id`` and
``CF-Access-Client-Secret`` headers before it reaches the tunnel (design.md §7). This module is
the pure part plus the API calls; ``operations/cloudflare.py`` wraps it for pyinfra.

How the service token is identified: the API hands out a token's client secret once, when the
token is made (``ServiceTokenCreateResponse`` has ``client_secret``, the listed ``ServiceToken``
has not), so the deploy cannot make the token ESC holds; the operator makes it in the dashboard
(Zero Trust, Access, Service credentials) and stores its client ID and secret in ESC as
``cloudflareAccessClientId`` and ``cloudflareAccessClientSecret``. The deploy lists the account's
service tokens and takes the one whose ``client_id`` is the ESC client ID; the policy names it by
that token's ``id``: ``include: [{"service_token": {"token_id": <id>}}]`` with decision
``non_identity`` (the "Service Auth" action: a service token is not an identity, and an ``allow``
policy would send it to a login page). The deploy never needs, reads or prints the secret; smoke
sends it (oceanid/smoke.py).

Shapes, from the SDK (cloudflare 5.9, ``cloudflare/types/zero_trust/access/``):
``application_create_params.SelfHostedApplication`` (``domain`` and ``type`` required),
``applications/policy_create_params`` (``decision``, ``include``, ``name``; ``exclude``,
``require``, ``precedence``), ``applications/service_token_rule.ServiceTokenRule``,
``decision.Decision`` and ``service_token.ServiceToken`` (``id``, ``client_id``, ``enabled``,
``expires_at``); paths from ``cloudflare/resources/zero_trust/access/``:
``/accounts/{id}/access/apps``, ``/access/apps/{app_id}/policies``, ``/access/service_tokens``.

Idempotent and owned like the DNS records: the application for a name is found by its domain
(else by the deploy's name for it, when the host's public name changed) and adopted, never
duplicated; its policy is changed only where it differs; a policy of that application that admits
anything else is removed, since it would open the name to others. An application that also guards
other names, or that is not self-hosted, is a conflict that stops the run before any write.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import cloudflare
from cloudflare import Cloudflare
from cloudflare.pagination import SyncV4PagePaginationArray

from oceanid.cloudflare_dns import (
    LIST_PAGE_SIZE,
    CloudflareAccess,
    CloudflareError,
    _api_error,
    _norm,
)

APP_TYPE = "self_hosted"
POLICY_NAME = "oceanid: the service token only"
#: "Service Auth" in the dashboard: matches a service token, which is no identity
#: (``cloudflare/types/zero_trust/access/decision.py``).
DECISION = "non_identity"
ID_KEY, SECRET_KEY = "cloudflareAccessClientId", "cloudflareAccessClientSecret"
ACCESS_REACH = (
    "check the account ID (ESC cloudflareAccountId), and that the API token (ESC "
    "cloudflareApiToken) can reach it with Account Access: Apps and Policies Edit and Access: "
    "Service Tokens Read"
)
#: ``access.api.error.application_already_exists``: a create whose first answer was lost and
#: that the SDK retried finds the application it made (409, code 11010).
_APP_EXISTS = 11010
# A client ID as Cloudflare shows it when the token is made: 32 hex digits, then `.access`
# (older tokens carry the team's domain after it).
_CLIENT_ID = re.compile(r"[0-9a-f]{32}\.access(\.[a-z0-9-]+)*")


def check_client_id(value: str) -> str | None:
    """What is wrong with an ESC client ID, in words (None: nothing). The value is not echoed."""
    if not _CLIENT_ID.fullmatch(value.strip()):
        return (
            "not a service token's client ID (32 hex digits then .access, as Cloudflare shows it "
            "when the token is made, e.g. 88bf3b6d86161464f6509f7219099e57.access)"
        )
    return None


def check_client_secret(value: str) -> str | None:
    """The secret travels in an HTTP header (smoke): one printable line, no spaces."""
    secret = value.strip()
    if len(secret) < 16 or not all(ch.isprintable() and not ch.isspace() for ch in secret):
        return (
            "not a service token's client secret (one line of at least 16 characters without "
            "spaces, as Cloudflare shows it once when the token is made)"
        )
    return None


@dataclass(frozen=True)
class ServiceTokenRef:
    """The ESC client ID of the token to admit. Hidden from repr/str: pyinfra prints operation
    arguments, and a client ID is half a credential."""

    client_id: str = field(repr=False)

    def __post_init__(self) -> None:
        value = self.client_id
        if hasattr(value, "unmask"):  # pyinfra's HiddenValue
            value = value.unmask()
        object.__setattr__(self, "client_id", str(value).strip())


@dataclass(frozen=True)
class ServiceToken:
    """A service token as the API lists it (never with its secret)."""

    id: str
    name: str

    def describe(self) -> str:
        return f"service token {self.name} ({self.id})"


# -- reading --------------------------------------------------------------------------------------


def _path(account_id: str, tail: str) -> str:
    return f"/accounts/{account_id}/access/{tail}"


def _list(client: Cloudflare, path: str) -> list[dict[str, Any]]:
    """Every item of a paged Access list, as plain JSON through the SDK's own pager.

    ``client.zero_trust`` would be the typed way, but touching it imports the SDK's whole Zero
    Trust tree (about 0.75 s of CPU, see ``cloudflare_dns._tunnel_api``); these endpoints are plain
    JSON, so they go through the client directly, with its auth, retries and typed errors."""
    pages = client.get_api_list(
        path,
        model=object,
        page=SyncV4PagePaginationArray[object],
        options={"params": {"per_page": LIST_PAGE_SIZE}},
    )
    return [item for item in pages if isinstance(item, Mapping)]


def _call(client: Cloudflare, method: str, path: str, body: Any = None) -> Any:
    if method == "POST":
        envelope = client.post(path, body=body, cast_to=object)
    elif method == "PUT":
        envelope = client.put(path, body=body, cast_to=object)
    else:
        envelope = client.delete(path, cast_to=object)
    return envelope.get("result") if isinstance(envelope, dict) else None


def find_service_token(client: Cloudflare, account_id: str, token: ServiceTokenRef) -> ServiceToken:
    """The account's service token whose client ID is the ESC one: it must exist, be enabled and
    not have expired, or the policy would admit no one (and smoke would find the name shut)."""
    try:
        tokens = _list(client, _path(account_id, "service_tokens"))
    except cloudflare.APIError as error:
        raise _api_error("reading the Access service tokens", error, reach=ACCESS_REACH) from None
    found = [t for t in tokens if str(t.get("client_id") or "").strip() == token.client_id]
    if not found:
        raise CloudflareError(
            f"Cloudflare Access: no service token of account {account_id} has the client ID in "
            f"ESC {ID_KEY}; make one (Zero Trust, Access, Service credentials), store its client "
            f"ID and secret as ESC {ID_KEY} and {SECRET_KEY}, then rerun"
        )
    item = found[0]
    named = ServiceToken(id=str(item.get("id")), name=str(item.get("name") or item.get("id")))
    if item.get("enabled") is False:
        raise CloudflareError(
            f"Cloudflare Access: {named.describe()} (ESC {ID_KEY}) is disabled, so it cannot "
            "authenticate; enable it in the dashboard, or make a new one and store it in ESC"
        )
    expires = _when(item.get("expires_at"))
    if expires is not None and expires <= datetime.now(UTC):
        raise CloudflareError(
            f"Cloudflare Access: {named.describe()} (ESC {ID_KEY}) expired at "
            f"{item['expires_at']}; make a new one (or refresh it), store it in ESC, then rerun"
        )
    return named


def _when(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        stamp = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def _domains(app: Mapping[str, Any]) -> set[str]:
    """Every name an application guards: its ``domain``, its ``self_hosted_domains`` and its
    public ``destinations`` (``application_get_response.SelfHostedApplication``)."""
    names = {app.get("domain")} | set(app.get("self_hosted_domains") or [])
    names |= {d.get("uri") for d in app.get("destinations") or [] if isinstance(d, Mapping)}
    return {_norm(str(name)) for name in names if name}


# -- the plan -------------------------------------------------------------------------------------


def desired_policy(token: ServiceToken, precedence: int = 1) -> dict[str, Any]:
    """The one policy: this token, and nothing else, passes. ``precedence`` must be unique
    within the application while the others still exist (400, code 12130)."""
    return {
        "name": POLICY_NAME,
        "decision": DECISION,
        "include": [{"service_token": {"token_id": token.id}}],
        "exclude": [],
        "require": [],
        "precedence": precedence,
    }


def _rules(policy: Mapping[str, Any]) -> tuple:
    """What a policy admits (read back, ``name`` and ``precedence`` aside)."""
    return (
        policy.get("decision"),
        policy.get("include") or [],
        policy.get("exclude") or [],
        policy.get("require") or [],
    )


def _describe_policy(policy: Mapping[str, Any]) -> str:
    rules = [next(iter(rule), "?") for rule in policy.get("include") or [] if rule]
    return f"policy {policy.get('name')!r} ({policy.get('decision')}, include {', '.join(rules)})"


@dataclass(frozen=True)
class AccessPlan:
    """One name's application and policy, from one read of the account."""

    domain: str
    app_name: str
    token: ServiceToken
    app: dict[str, Any] | None  # None: to be created
    app_kind: Literal["create", "adopt", "update"]
    policy: dict[str, Any] | None  # the policy kept (None: to be created)
    policy_kind: Literal["create", "update", "noop"]
    extra: tuple[dict[str, Any], ...] = ()  # other policies of the app, to be removed

    @property
    def wanted_app(self) -> dict[str, Any]:
        """What the deploy sets on an application it creates or renames. A 401 (not a redirect
        to a login page) for a request without the token: the name serves an API."""
        return {
            "name": self.app_name,
            "domain": self.domain,
            "type": APP_TYPE,
            "app_launcher_visible": False,
            "service_auth_401_redirect": True,
        }

    @property
    def precedence(self) -> int:
        """The policy's order: the kept one's, or after every policy there (removed last)."""
        if self.policy is not None:
            return int(self.policy.get("precedence") or 1)
        return 1 + max((int(p.get("precedence") or 0) for p in self.extra), default=0)

    @property
    def changes(self) -> list[str]:
        """One line per write, in the order ``apply_access`` makes them."""
        lines = []
        if self.app_kind == "create":
            lines.append(f"create Access application {self.app_name} for {self.domain}")
        elif self.app_kind == "update":
            assert self.app is not None
            lines.append(
                f"update Access application {self.app_name}: domain {self.app.get('domain')} "
                f"⇒ {self.domain}"
            )
        admits = f"admitting only {self.token.describe()}"
        if self.policy_kind == "create":
            lines.append(f"create {DECISION} policy on {self.domain} {admits}")
        elif self.policy_kind == "update":
            assert self.policy is not None
            lines.append(f"update {_describe_policy(self.policy)} on {self.domain}: {admits}")
        lines += [
            f"remove {_describe_policy(p)} from {self.domain}: it admits others" for p in self.extra
        ]
        return lines

    def settled(self) -> str:
        return (
            f"Cloudflare Access application {self.app_name} guards {self.domain} and admits only "
            f"{self.token.describe()}"
        )


def _find_app(
    apps: Sequence[Mapping[str, Any]], domain: str, app_name: str
) -> tuple[dict[str, Any] | None, Literal["create", "adopt", "update"]]:
    """The application for ``domain``: one that guards it, else the deploy's own by name (the
    host's public name changed); refuses one it may not change."""
    guarding = [dict(app) for app in apps if domain in _domains(app)]
    if len(guarding) > 1:
        names = ", ".join(str(app.get("name")) for app in guarding)
        raise CloudflareError(
            f"Cloudflare Access: {len(guarding)} applications guard {domain} ({names}); the deploy "
            "keeps one: delete the others in the dashboard, then rerun"
        )
    if guarding:
        app = guarding[0]
        others = sorted(_domains(app) - {domain})
        if app.get("type") != APP_TYPE or others:
            what = f"is of type {app.get('type')}" if not others else f"also guards {others}"
            raise CloudflareError(
                f"Cloudflare Access: application {app.get('name')} ({app.get('id')}) guards "
                f"{domain} but {what}; the deploy changes only a self-hosted application of that "
                "name alone: give the name an application of its own, or set access to off"
            )
        return app, "adopt"
    named = [dict(app) for app in apps if app.get("name") == app_name]
    if named and named[0].get("type") == APP_TYPE and len(_domains(named[0])) <= 1:
        return named[0], "update"
    return None, "create"


def plan_access(
    client: Cloudflare,
    account_id: str,
    domain: str,
    token: ServiceTokenRef,
    app_name: str,
) -> AccessPlan:
    """Read the token, the applications and the policies, then decide; reads only."""
    domain = _norm(domain)
    named = find_service_token(client, account_id, token)
    try:
        apps = _list(client, _path(account_id, "apps"))
    except cloudflare.APIError as error:
        raise _api_error("reading the Access applications", error, reach=ACCESS_REACH) from None
    app, app_kind = _find_app(apps, domain, app_name)
    policies: list[dict[str, Any]] = []
    if app is not None:
        try:
            policies = _list(client, _path(account_id, f"apps/{app['id']}/policies"))
        except cloudflare.APIError as error:
            raise _api_error(
                f"reading the policies of Access application {app.get('name')}",
                error,
                reach=ACCESS_REACH,
            ) from None
        reusable = [p for p in policies if p.get("reusable")]
        if reusable:
            raise CloudflareError(
                f"Cloudflare Access: application {app.get('name')} for {domain} uses reusable "
                f"policies ({', '.join(str(p.get('name')) for p in reusable)}), which the API "
                "does not mix with the application's own; unlink them, then rerun"
            )
    wanted = desired_policy(named)
    kept = next((p for p in policies if p.get("name") == POLICY_NAME), None)
    if kept is None and len(policies) == 1:
        kept = policies[0]  # the one policy of an adopted application: fixed, not duplicated
    if kept is None:
        policy_kind: Literal["create", "update", "noop"] = "create"
    elif _rules(kept) == _rules(wanted):
        policy_kind = "noop"
    else:
        policy_kind = "update"
    extra = tuple(p for p in policies if p is not kept)
    return AccessPlan(domain, app_name, named, app, app_kind, kept, policy_kind, extra)


# -- writing --------------------------------------------------------------------------------------


def _create_app(client: Cloudflare, account_id: str, plan: AccessPlan) -> dict[str, Any]:
    """POST the application. A 409 "already exists" is read again: the SDK retries a POST whose
    first answer was lost, and the application may be the one just made."""
    try:
        return _call(client, "POST", _path(account_id, "apps"), plan.wanted_app) or {}
    except cloudflare.APIStatusError as error:
        if _APP_EXISTS in {e.code for e in error.errors}:
            apps = _list(client, _path(account_id, "apps"))
            app, kind = _find_app(apps, plan.domain, plan.app_name)
            if app is not None and kind == "adopt":
                return app
        raise


def apply_access(client: Cloudflare, access: CloudflareAccess, plan: AccessPlan) -> list[str]:
    """Application first, then its policy, then the removal of what else it admitted: the name is
    never more open than before. Returns the changes made; a failure lists those already made."""
    account_id = access.account_id
    done: list[str] = []
    lines = iter(plan.changes)
    app = plan.app
    try:
        if plan.app_kind == "create":
            app = _create_app(client, account_id, plan)
            done.append(next(lines))
        elif plan.app_kind == "update":
            assert app is not None
            _call(client, "PUT", _path(account_id, f"apps/{app['id']}"), plan.wanted_app)
            done.append(next(lines))
        assert app is not None and app.get("id")
        policies = _path(account_id, f"apps/{app['id']}/policies")
        if plan.policy_kind == "create":
            _call(client, "POST", policies, desired_policy(plan.token, plan.precedence))
            done.append(next(lines))
        elif plan.policy_kind == "update":
            assert plan.policy is not None
            body = desired_policy(plan.token, plan.precedence)
            _call(client, "PUT", f"{policies}/{plan.policy['id']}", body)
            done.append(next(lines))
        for policy in plan.extra:
            _call(client, "DELETE", f"{policies}/{policy['id']}")
            done.append(next(lines))
    except cloudflare.APIError as error:
        made = "; ".join(done) if done else "none"
        failed = next(lines, "a change")
        raise CloudflareError(
            f"{_api_error(failed, error, reach=ACCESS_REACH)} (changes already made: {made})"
        ) from None
    return done
