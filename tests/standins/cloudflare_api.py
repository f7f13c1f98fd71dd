"""A stand-in for the Cloudflare v4 API: DNS records and cloudflared tunnels. NOT Cloudflare.

Nothing reachable from the lab or CI is Cloudflare, so the deploy's Cloudflare code is driven
through the real ``cloudflare`` SDK against this server instead. It speaks the documented v4
envelope (``success``, ``errors``, ``messages``, ``result``, ``result_info``) and checks what the
real API checks, so that a bug the real API would reject is rejected here too:

- ``Authorization: Bearer <token>``: missing header 400/9106, malformed 400/6003, wrong token
  403/10000 "Authentication error";
- a zone or account ID that is well formed (32 hex) but not one the token can reach: 403/10000
  "Authentication error", the same answer as a wrong token (the API does not say which); a
  malformed ID or unknown route: 400 with 7003 "Could not route to ..." and 7000 "No route for that
  URI"; unknown record 404/81044; unknown tunnel 404/1003;
- record validity: type, name inside the zone, A/AAAA/CNAME content (9005/9006/9007), TTL (9021),
  proxying only for A/AAAA/CNAME (9004), comment length (9313); with ``validation_error_chain`` in
  the seed these come wrapped, as the API sent them until late 2024: 1004 "DNS Validation Error"
  with the cause in ``error_chain``;
- names shared with a CNAME: a CNAME where an A, AAAA or CNAME exists 400/81053, an A or AAAA where
  a CNAME exists 400/81054, an identical record 400/81058; a CNAME beside TXT, MX and other types
  is accepted, as Cloudflare accepts it;
- page/per_page pagination with ``total_pages``; a page past the end is empty (the SDK pages
  until it sees an empty page);
- tunnels: a deleted tunnel is still answered, with ``deleted_at`` set (list filter
  ``is_deleted``);
- tunnel configurations: ingress must be non-empty and end in a catch-all rule (400/1056), PUT
  replaces the whole config, bumps ``version`` and defaults ``warp-routing``; with
  ``config_defaults`` (seed) or ``--config-defaults`` each ingress rule is read back with
  cloudflared's default ``originRequest`` values filled in, values that were never sent;
- Access (Zero Trust): applications, their own policies and service tokens under
  ``/accounts/<id>/access/`` (paths and bodies from the SDK's ``zero_trust/access`` resources and
  types): a self-hosted application needs a ``type`` and a ``domain`` inside one of the account's
  zones (400/12130 ``access.api.error.invalid_request: <why>``), a second application on one
  domain is 409/11010, an unknown application or policy 404/12135; a policy needs a name, a
  decision and at least one include rule, a ``service_token`` rule an existing token, and
  precedences are unique within an application (12130); a service token's client secret is
  answered only on create (the state keeps its SHA-256, never the secret);
- injected faults (``faults`` in the seed or ``POST /__standin__/faults``), e.g. HTTP 429 with code
  971 and ``Retry-After``, so retry handling can be tested; a fault with ``block_s`` then refuses
  every request for that many seconds (429, ``Retry-After`` the time left), as the API blocks a
  client for five minutes once it passes the rate limit.

Run it for the lab::

    python -m tests.standins.cloudflare_api --host 127.0.0.1 --port 8788 \\
        --seed lab/cloudflare-seed.yaml --state .lab/cloudflare-state.json \\
        --token-file .lab/cf-token

``--port 0`` picks a free port; the first line on stdout is ``listening on <base-url>``, where the
base URL ends in ``/client/v4`` like the real one. Seed file (JSON or YAML)::

    account_id: 3f1a...            # 32 hex
    token: "..."                   # optional; --token-file wins
    zones:
      - {id: 9c2e... (32 hex), name: boathou.se,
         records: [{type: A, name: www.boathou.se, content: 203.0.113.7, proxied: true}]}
    tunnels:
      - {id: <uuid>, name: oceanid-cluster, config_src: cloudflare,
         config: {ingress: [{service: "http_status:404"}]},      # optional
         connectors: [{conns: 4, version: "2025.8.1"}],            # optional: connected replicas
         ever_connected: false, status: degraded,                  # optional overrides
         deleted: false}                                           # optional: soft-deleted
    access_service_tokens:           # optional: tokens made earlier in the dashboard
      - {name: oceanid-gpu, client_id: "<32 hex>.access", client_secret: "...",
         enabled: true, expires_at: null}
    access_apps:                     # optional: applications already there
      - {name: gpu, domain: gpu.boathou.se, type: self_hosted,
         policies: [{name: all, decision: bypass, include: [{everyone: {}}]}]}
    faults:
      - {method: POST, path: /dns_records, status: 429, code: 971, retry_after: 1, times: 1,
         skip: 0, after_apply: false, block_s: 0}
    validation_error_chain: false  # optional: wrap validation errors in 1004 + error_chain
    config_defaults: false         # optional: read configs back with default originRequest

``--state FILE`` holds the live state as JSON (never the token), rewritten after every change; when
it exists at start it is loaded instead of the seed (``--reset`` starts from the seed again).
Control endpoints (same bearer token): ``GET /__standin__/state``, ``GET /__standin__/requests``,
``POST /__standin__/faults`` (a fault object), ``PUT /__standin__/tunnels/<id>/connectors``
(``{"connectors": [...]}``: connect or, with an empty list, disconnect cloudflared replicas).
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import ipaddress
import json
import re
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

API_PREFIX = "/client/v4"
CONTROL_PREFIX = "/__standin__"
DNS_PER_PAGE_DEFAULT = 100
DNS_PER_PAGE_MAX = 5_000_000
TUNNEL_PER_PAGE_DEFAULT = 1000
RECORD_TYPES = {
    "A", "AAAA", "CAA", "CERT", "CNAME", "DNSKEY", "DS", "HTTPS", "LOC", "MX", "NAPTR", "NS",
    "OPENPGPKEY", "PTR", "SMIMEA", "SRV", "SSHFP", "SVCB", "TLSA", "TXT", "URI",
}  # fmt: skip
PROXIABLE = {"A", "AAAA", "CNAME"}
ADDRESS = {"A", "AAAA"}
_OBJECT_ID = re.compile(r"^[0-9a-f]{32}$")
SAME_NAME_DOCS = (
    "For more details, refer to "
    "<https://developers.cloudflare.com/dns/manage-dns-records/troubleshooting/records-with-same-name/>."
)
# cloudflared's documented origin request defaults, as the API adds them to a rule read back.
ORIGIN_REQUEST_DEFAULTS = {
    "connectTimeout": 30,
    "tlsTimeout": 10,
    "tcpKeepAlive": 30,
    "noHappyEyeballs": False,
    "keepAliveConnections": 100,
    "keepAliveTimeout": 90,
    "httpHostHeader": "",
    "originServerName": "",
    "noTLSVerify": False,
    "disableChunkedEncoding": False,
    "http2Origin": False,
}
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?)(\.[a-z0-9_-]{1,63})+$"
)
DNS_LIST_QUERY = {
    "page", "per_page", "name", "name.exact", "type", "content", "content.exact", "comment.exact",
    "order", "direction", "match", "proxied",
}  # fmt: skip

# Access (Zero Trust): cloudflare/types/zero_trust/access/application_type.py and decision.py.
ACCESS_APP_TYPES = (
    "self_hosted", "saas", "ssh", "vnc", "app_launcher", "warp", "biso", "bookmark", "dash_sso",
    "infrastructure", "rdp", "mcp", "mcp_portal", "proxy_endpoint",
)  # fmt: skip
# The types whose create body requires a `domain` (application_create_params: SelfHosted-,
# BrowserSSH-, BrowserVNC- and BrowserRDPApplication).
ACCESS_DOMAIN_TYPES = ("self_hosted", "ssh", "vnc", "rdp")
ACCESS_DECISIONS = ("allow", "deny", "non_identity", "bypass")
# What an application reads back with when the body left it out.
ACCESS_APP_DEFAULTS = {
    "session_duration": "24h",
    "app_launcher_visible": True,
    "service_auth_401_redirect": False,
    "auto_redirect_to_identity": False,
    "allowed_idps": [],
    "tags": [],
}
ACCESS_PER_PAGE_DEFAULT = 25
ACCESS_PER_PAGE_MAX = 1000

Json = dict[str, Any]


class ApiError(Exception):
    """An error answer: HTTP status plus v4 ``errors`` entries."""

    def __init__(
        self, status: int, *errors: tuple[int, str], headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(errors[0][1] if errors else str(status))
        self.status = status
        self.errors: list[Json] = [{"code": code, "message": message} for code, message in errors]
        self.headers = headers or {}

    def wrapped(self) -> ApiError:
        """The same cause inside 1004 "DNS Validation Error", the older way the API sent it."""
        error = ApiError(self.status, (1004, "DNS Validation Error"), headers=self.headers)
        error.errors[0]["error_chain"] = self.errors
        return error


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _no_route(path: str) -> ApiError:
    return ApiError(
        400,
        (7003, f"Could not route to {path}, perhaps your object identifier is invalid?"),
        (7000, "No route for that URI"),
    )


def _unreachable(object_id: str, path: str) -> ApiError:
    """A malformed ID has no route; a well-formed one the token cannot reach (or that does not
    exist) is refused as an authentication error, the same answer as a wrong token."""
    if not _OBJECT_ID.match(object_id):
        return _no_route(path)
    return ApiError(403, (10000, "Authentication error"))


def _norm_name(name: str, zone: str) -> str:
    """Lower-case, drop the trailing dot and place the name inside the zone, as Cloudflare does."""
    name = name.strip().lower().rstrip(".")
    if name in ("@", ""):
        return zone
    if name == zone or name.endswith("." + zone):
        return name
    return f"{name}.{zone}"


class StandinState:
    """The stand-in's whole world, guarded by one lock and optionally persisted as JSON."""

    def __init__(self, data: Json, token: str, state_file: Path | None = None) -> None:
        self.lock = threading.RLock()
        self.data = data
        self.token = token
        self.state_file = state_file
        self.requests: list[Json] = []
        self.blocked_until = 0.0  # monotonic time; a fault with ``block_s`` sets it
        self.data.setdefault("faults", [])
        self.data.setdefault("zones", {})
        self.data.setdefault("tunnels", {})

    @classmethod
    def from_seed(
        cls, seed: Json, token: str | None = None, state_file: Path | None = None
    ) -> StandinState:
        """Build the state from the seed format described in the module docstring."""
        token = token or seed.get("token")
        if not token:
            raise ValueError("the stand-in needs an API token (seed 'token' or --token-file)")
        data: Json = {
            "account_id": seed.get("account_id") or secrets.token_hex(16),
            "zones": {},
            "tunnels": {},
            "faults": list(seed.get("faults", [])),
            "validation_error_chain": bool(seed.get("validation_error_chain", False)),
            "config_defaults": bool(seed.get("config_defaults", False)),
        }
        for zone in seed.get("zones", []):
            zone_id = zone.get("id") or secrets.token_hex(16)
            data["zones"][zone_id] = {"name": zone["name"].lower().rstrip("."), "records": []}
        state = cls(data, token, state_file)
        for zone_id, zone in zip(data["zones"], seed.get("zones", []), strict=True):
            for record in zone.get("records", []):
                state.create_record(zone_id, dict(record))
        for tunnel in seed.get("tunnels", []):
            tunnel_id = tunnel.get("id") or str(uuid.uuid4())
            data["tunnels"][tunnel_id] = {
                "name": tunnel.get("name", tunnel_id),
                "config_src": tunnel.get("config_src", "local"),
                "config": tunnel.get("config"),
                "config_version": 1 if tunnel.get("config") else 0,
                "connectors": [],
                "ever_connected": bool(tunnel.get("ever_connected", False)),
                "status": tunnel.get("status"),
                "created_at": _now(),
                "deleted_at": _now() if tunnel.get("deleted") else None,
            }
            state.set_connectors(tunnel_id, tunnel.get("connectors", []))
        for token in seed.get("access_service_tokens", []):
            body = {k: v for k, v in token.items() if k not in ("client_id", "client_secret")}
            state.create_service_token(body, token.get("client_id"), token.get("client_secret"))
        for app in seed.get("access_apps", []):
            made = state.create_access_app({k: v for k, v in app.items() if k != "policies"})
            for policy in app.get("policies", []):
                state.create_access_policy(made["id"], policy)
        return state

    def save(self) -> None:
        if self.state_file is None:
            return
        tmp = self.state_file.with_suffix(self.state_file.suffix + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True))
        tmp.replace(self.state_file)

    # -- faults ---------------------------------------------------------------------------------

    def take_fault(self, method: str, path: str) -> tuple[ApiError, bool] | None:
        """Consume the first injected fault matching this request, if any.

        A fault matches on ``method`` and a ``path`` substring; it lets ``skip`` matching requests
        through first, then fires ``times`` times. With ``after_apply`` the request is carried out
        and only its answer is replaced by the error, like a response lost on the way back.
        Returns the error and the ``after_apply`` flag.
        """
        for fault in self.data["faults"]:
            if fault.get("method", method).upper() != method or fault.get("path", "") not in path:
                continue
            if fault.get("skip", 0) > 0:
                fault["skip"] -= 1
                continue
            if fault.get("times", 1) <= 0:
                continue
            fault["times"] = fault.get("times", 1) - 1
            headers = {}
            if "retry_after" in fault:
                headers["Retry-After"] = str(fault["retry_after"])
            status = int(fault.get("status", 429))
            default = "Please wait and consider throttling your request speed"
            error = ApiError(
                status,
                (int(fault.get("code", 971)), fault.get("message", default)),
                headers=headers,
            )
            if fault.get("block_s"):
                self.blocked_until = time.monotonic() + float(fault["block_s"])
            return error, bool(fault.get("after_apply", False))
        return None

    def blocked(self) -> ApiError | None:
        """While a rate-limit block lasts, every request is refused with the time left."""
        left = self.blocked_until - time.monotonic()
        if left <= 0:
            return None
        return ApiError(
            429,
            (971, "Please wait and consider throttling your request speed"),
            headers={"Retry-After": str(int(left) + 1)},
        )

    # -- DNS ------------------------------------------------------------------------------------

    def zone(self, zone_id: str, path: str) -> Json:
        zone = self.data["zones"].get(zone_id)
        if zone is None:
            raise _unreachable(zone_id, path)
        return zone

    def _validate_record(self, zone: Json, body: Json) -> Json:
        """Check a record body the way the API does; return the normalised record fields."""
        try:
            return self._check_record(zone, body)
        except ApiError as error:
            if self.data.get("validation_error_chain") and error.errors[0]["code"] != 1004:
                raise error.wrapped() from None
            raise

    def _check_record(self, zone: Json, body: Json) -> Json:
        rtype = str(body.get("type") or "").upper()
        if not rtype or not body.get("name") or body.get("content") in (None, ""):
            raise ApiError(400, (1004, "DNS Validation Error"))
        if rtype not in RECORD_TYPES:
            raise ApiError(400, (1004, "DNS Validation Error"))
        name = _norm_name(str(body["name"]), zone["name"])
        if not _HOSTNAME.match(name):
            raise ApiError(400, (9000, "DNS name is invalid."))
        content = str(body["content"])
        if rtype == "A":
            try:
                ipaddress.IPv4Address(content)
            except ValueError:
                raise ApiError(
                    400, (9005, "Content for A record must be a valid IPv4 address.")
                ) from None
        elif rtype == "AAAA":
            try:
                ipaddress.IPv6Address(content)
            except ValueError:
                raise ApiError(
                    400, (9006, "Content for AAAA record must be a valid IPv6 address.")
                ) from None
        elif rtype == "CNAME":
            content = content.lower().rstrip(".")
            if not _HOSTNAME.match(content) or content == name:
                raise ApiError(400, (9007, "Content for CNAME record is invalid."))
        proxied = bool(body.get("proxied", False))
        if proxied and rtype not in PROXIABLE:
            raise ApiError(400, (9004, "This record type cannot be proxied."))
        ttl = body.get("ttl", 1)
        if (
            not isinstance(ttl, int)
            or isinstance(ttl, bool)
            or not (ttl == 1 or 60 <= ttl <= 86400)
        ):
            raise ApiError(
                400,
                (9021, "Invalid TTL. Must be between 60 and 86400 seconds, or 1 for Automatic."),
            )
        comment = body.get("comment")
        if comment is not None and len(str(comment)) > 100:
            raise ApiError(
                400, (9313, "DNS record comment exceeds the maximum length of 100 characters.")
            )
        return {
            "type": rtype,
            "name": name,
            "content": content,
            "proxied": proxied,
            "proxiable": rtype in PROXIABLE,
            # Cloudflare answers ttl 1 (automatic) for every proxied record.
            "ttl": 1 if proxied else ttl,
            "comment": comment,
            "tags": list(body.get("tags") or []),
            "settings": dict(body.get("settings") or {}),
        }

    def _check_clash(self, zone: Json, record: Json, ignore_id: str | None = None) -> None:
        """CNAME rules as Cloudflare enforces them: only A, AAAA and CNAME clash with a CNAME."""
        for other in zone["records"]:
            if other["id"] == ignore_id or other["name"] != record["name"]:
                continue
            if record["type"] == "CNAME" and other["type"] in ADDRESS | {"CNAME"}:
                raise ApiError(
                    400,
                    (81053, "An A, AAAA, or CNAME record with that host already exists. "
                            + SAME_NAME_DOCS),
                )  # fmt: skip
            if record["type"] in ADDRESS and other["type"] == "CNAME":
                raise ApiError(
                    400, (81054, "A CNAME record with that host already exists. " + SAME_NAME_DOCS)
                )
            if other["type"] == record["type"] and other["content"] == record["content"]:
                raise ApiError(400, (81058, "An identical record already exists."))

    def create_record(self, zone_id: str, body: Json, path: str = "") -> Json:
        zone = self.zone(zone_id, path)
        record = self._validate_record(zone, body)
        self._check_clash(zone, record)
        stamp = _now()
        record.update(
            id=secrets.token_hex(16), created_on=stamp, modified_on=stamp, meta={}, zone_id=zone_id
        )
        zone["records"].append(record)
        return record

    def find_record(self, zone_id: str, record_id: str, path: str) -> Json:
        for record in self.zone(zone_id, path)["records"]:
            if record["id"] == record_id:
                return record
        raise ApiError(404, (81044, "Record does not exist."))

    def replace_record(
        self, zone_id: str, record_id: str, body: Json, path: str, merge: bool
    ) -> Json:
        zone = self.zone(zone_id, path)
        current = self.find_record(zone_id, record_id, path)
        if merge:  # PATCH: unspecified fields keep their value
            kept = ("type", "name", "content", "proxied", "ttl", "comment", "tags", "settings")
            body = {**{key: current[key] for key in kept}, **body}
        record = self._validate_record(zone, body)
        self._check_clash(zone, record, ignore_id=record_id)
        current.update(record, modified_on=_now())
        return current

    def delete_record(self, zone_id: str, record_id: str, path: str) -> Json:
        record = self.find_record(zone_id, record_id, path)
        self.zone(zone_id, path)["records"].remove(record)
        return {"id": record_id}

    # -- tunnels --------------------------------------------------------------------------------

    def account(self, account_id: str, path: str) -> None:
        if account_id != self.data["account_id"]:
            raise _unreachable(account_id, path)

    def tunnel(self, account_id: str, tunnel_id: str, path: str) -> Json:
        self.account(account_id, path)
        tunnel = self.data["tunnels"].get(tunnel_id)
        if tunnel is None:
            raise ApiError(404, (1003, "Tunnel not found"))
        return tunnel

    def set_connectors(self, tunnel_id: str, connectors: list[Json]) -> None:
        tunnel = self.data["tunnels"][tunnel_id]
        clients = []
        for spec in connectors:
            client_id = spec.get("id") or str(uuid.uuid4())
            version = spec.get("version", "2025.8.1")
            conns = [
                {
                    "id": str(uuid.uuid4()),
                    "uuid": str(uuid.uuid4()),
                    "colo_name": ("fra08", "ams01", "fra10", "ams06")[i % 4],
                    "is_pending_reconnect": False,
                    "origin_ip": "203.0.113.10",
                    "opened_at": _now(),
                    "client_id": client_id,
                    "client_version": version,
                }
                for i in range(int(spec.get("conns", 4)))
            ]
            clients.append(
                {
                    "id": client_id,
                    "arch": spec.get("arch", "linux_amd64"),
                    "version": version,
                    "config_version": tunnel["config_version"],
                    "run_at": _now(),
                    "features": ["allow_remote_config", "serialized_headers"],
                    "conns": conns,
                }
            )
        tunnel["connectors"] = clients
        if any(c["conns"] for c in clients):
            tunnel["ever_connected"] = True

    def tunnel_json(self, tunnel_id: str) -> Json:
        tunnel = self.data["tunnels"][tunnel_id]
        connected = any(c["conns"] for c in tunnel["connectors"])
        status = tunnel.get("status") or (
            "healthy" if connected else "down" if tunnel["ever_connected"] else "inactive"
        )
        return {
            "id": tunnel_id,
            "account_tag": self.data["account_id"],
            "name": tunnel["name"],
            "tun_type": "cfd_tunnel",
            "config_src": tunnel["config_src"],
            "remote_config": tunnel["config_src"] == "cloudflare",
            "status": status,
            "created_at": tunnel["created_at"],
            "deleted_at": tunnel.get("deleted_at"),
            "conns_active_at": tunnel["created_at"] if connected else None,
            "conns_inactive_at": None if connected else tunnel["created_at"],
            "metadata": {},
            "connections": [conn for c in tunnel["connectors"] for conn in c["conns"]],
        }

    def config_json(self, tunnel_id: str) -> Json:
        tunnel = self.data["tunnels"][tunnel_id]
        config = copy.deepcopy(tunnel["config"])
        if config and self.data.get("config_defaults"):
            for rule in config.get("ingress") or []:
                rule["originRequest"] = {**ORIGIN_REQUEST_DEFAULTS, **rule.get("originRequest", {})}
        return {
            "tunnel_id": tunnel_id,
            "version": tunnel["config_version"],
            "config": config,
            "source": tunnel["config_src"],
            "created_at": tunnel["created_at"],
        }

    def put_config(self, tunnel_id: str, body: Json) -> Json:
        config = body.get("config")
        if not isinstance(config, dict):
            raise ApiError(400, (1056, "Bad Configuration: config is required"))
        ingress = config.get("ingress")
        if not isinstance(ingress, list) or not ingress:
            raise ApiError(
                400,
                (1056, "Bad Configuration: Validation failed: "
                       "The config file doesn't contain any ingress rules"),
            )  # fmt: skip
        for index, rule in enumerate(ingress):
            if not isinstance(rule, dict) or not rule.get("service"):
                raise ApiError(400, (1056, f"Bad Configuration: rule #{index + 1} has no service"))
            last = index == len(ingress) - 1
            if not last and not rule.get("hostname") and not rule.get("path"):
                raise ApiError(
                    400,
                    (1056, f"Bad Configuration: Validation failed: Rule #{index + 1} matches "
                           "every hostname, so the rules which follow it will never be triggered"),
                )  # fmt: skip
            if last and (rule.get("hostname") or rule.get("path")):
                raise ApiError(
                    400,
                    (1056, "Bad Configuration: Validation failed: The last ingress rule must "
                           "match all URLs (i.e. it should not have a hostname or path filter)"),
                )  # fmt: skip
        config = copy.deepcopy(config)
        config.setdefault("warp-routing", {"enabled": False})
        tunnel = self.data["tunnels"][tunnel_id]
        tunnel["config"] = config
        tunnel["config_version"] += 1
        return self.config_json(tunnel_id)

    # -- Access (Zero Trust) ----------------------------------------------------------------------
    # Paths and shapes as the SDK has them (cloudflare 5.9): resources/zero_trust/access/
    # applications/applications.py (`/accounts/{id}/access/apps`, PUT replaces), applications/
    # policies.py (`/access/apps/{app_id}/policies`), service_tokens.py (`/access/service_tokens`);
    # bodies from types/zero_trust/access/application_create_params.py (SelfHostedApplication:
    # `domain`, `type` required), applications/policy_create_params.py, decision.py,
    # application_type.py, service_token.py and service_token_create_response.py (the client secret
    # is answered once, on create). Error answers as the API was seen to send them in public
    # reports: 400/12130 "access.api.error.invalid_request: <why>" (e.g. "app type is missing or
    # invalid", "domain does not belong to zone", "policy precedences must be unique"), 404/12135
    # "access.api.error.not_found", 409/11010 "access.api.error.application_already_exists"
    # (DockFlare issue #217). Where no report gave the words, the message after the colon is the
    # stand-in's own; the status and code are the API's.

    def _access(self) -> Json:
        return self.data.setdefault("access", {"apps": {}, "policies": {}, "service_tokens": {}})

    def access_app(self, app_id: str) -> Json:
        app = self._access()["apps"].get(app_id)
        if app is None:
            raise ApiError(404, (12135, "access.api.error.not_found"))
        return app

    def _check_app(self, body: Json, ignore_id: str | None = None) -> Json:
        kind = body.get("type")
        if kind not in ACCESS_APP_TYPES:
            raise _invalid("app type is missing or invalid")
        app: Json = {"type": kind, "name": body.get("name")}
        if kind in ACCESS_DOMAIN_TYPES:
            domain = str(body.get("domain") or "").strip().lower().rstrip(".")
            if not domain:
                raise _invalid(f"domain is required for a {kind} application")
            host = domain.split("/", 1)[0]
            zones = {zone["name"] for zone in self.data["zones"].values()}
            if not any(host == zone or host.endswith("." + zone) for zone in zones):
                raise _invalid("domain does not belong to zone")
            for other_id, other in self._access()["apps"].items():
                if other_id != ignore_id and other.get("domain") == domain:
                    raise ApiError(409, (11010, "access.api.error.application_already_exists"))
            app.update(
                domain=domain,
                self_hosted_domains=[domain],
                destinations=[{"type": "public", "uri": domain}],
            )
            app["name"] = app["name"] or domain
        for key, default in ACCESS_APP_DEFAULTS.items():
            app[key] = body.get(key, default)
        return app

    def create_access_app(self, body: Json) -> Json:
        app = self._check_app(body)
        stamp = _now()
        app.update(id=str(uuid.uuid4()), aud=secrets.token_hex(32), created_at=stamp,
                   updated_at=stamp)  # fmt: skip
        self._access()["apps"][app["id"]] = app
        self._access()["policies"][app["id"]] = []
        return self.access_app_json(app["id"])

    def replace_access_app(self, app_id: str, body: Json) -> Json:
        current = self.access_app(app_id)
        app = self._check_app(body, ignore_id=app_id)
        keep = {key: current[key] for key in ("id", "aud", "created_at")}
        current.clear()
        current.update(app, **keep, updated_at=_now())
        return self.access_app_json(app_id)

    def delete_access_app(self, app_id: str) -> Json:
        self.access_app(app_id)
        del self._access()["apps"][app_id]
        self._access()["policies"].pop(app_id, None)
        return {"id": app_id}

    def access_app_json(self, app_id: str) -> Json:
        """An application as the API reads it back: its own policies inline."""
        app = copy.deepcopy(self.access_app(app_id))
        app["policies"] = copy.deepcopy(self._access()["policies"].get(app_id, []))
        return app

    def _check_policy(self, app_id: str, body: Json, ignore_id: str | None = None) -> Json:
        if not str(body.get("name") or "").strip():
            raise _invalid("name is required")
        if body.get("decision") not in ACCESS_DECISIONS:
            raise _invalid("decision must be one of " + ", ".join(ACCESS_DECISIONS))
        rules: Json = {}
        for part in ("include", "exclude", "require"):
            value = body.get(part, [])
            if value is None:
                value = []
            if not isinstance(value, list) or (part == "include" and not value):
                raise _invalid(f"{part} must be a list of rules" + (
                    ", at least one" if part == "include" else ""))  # fmt: skip
            for rule in value:
                self._check_rule(rule)
            rules[part] = copy.deepcopy(value)
        siblings = [p for p in self._access()["policies"][app_id] if p["id"] != ignore_id]
        precedence = body.get("precedence")
        if precedence is None:
            precedence = 1 + max((p["precedence"] for p in siblings), default=0)
        if not isinstance(precedence, int) or isinstance(precedence, bool) or precedence < 1:
            raise _invalid("precedence must be a positive integer")
        if any(p["precedence"] == precedence for p in siblings):
            raise _invalid("policy precedences must be unique")
        return {"name": body["name"], "decision": body["decision"], **rules,
                "precedence": precedence}  # fmt: skip

    def _check_rule(self, rule: Any) -> None:
        """One selector per rule (``applications/access_rule.py``); a service token rule must
        name a token of the account (``applications/service_token_rule.py``)."""
        if not isinstance(rule, dict) or len(rule) != 1:
            raise _invalid("each rule must hold exactly one selector")
        ((selector, value),) = rule.items()
        if selector == "service_token":
            token_id = value.get("token_id") if isinstance(value, dict) else None
            if token_id not in self._access()["service_tokens"]:
                raise _invalid("service_token.token_id is not a service token of this account")

    def access_policies(self, app_id: str) -> list[Json]:
        self.access_app(app_id)
        return self._access()["policies"][app_id]

    def access_policy(self, app_id: str, policy_id: str) -> Json:
        for policy in self.access_policies(app_id):
            if policy["id"] == policy_id:
                return policy
        raise ApiError(404, (12135, "access.api.error.not_found"))

    def create_access_policy(self, app_id: str, body: Json) -> Json:
        self.access_app(app_id)
        policy = self._check_policy(app_id, body)
        stamp = _now()
        policy.update(id=str(uuid.uuid4()), created_at=stamp, updated_at=stamp)
        self._access()["policies"][app_id].append(policy)
        return copy.deepcopy(policy)

    def replace_access_policy(self, app_id: str, policy_id: str, body: Json) -> Json:
        current = self.access_policy(app_id, policy_id)
        policy = self._check_policy(app_id, body, ignore_id=policy_id)
        current.update(policy, updated_at=_now())
        return copy.deepcopy(current)

    def delete_access_policy(self, app_id: str, policy_id: str) -> Json:
        policy = self.access_policy(app_id, policy_id)
        self._access()["policies"][app_id].remove(policy)
        return {"id": policy_id}

    def create_service_token(self, body: Json, client_id: str | None = None,
                             client_secret: str | None = None) -> Json:  # fmt: skip
        """Make a token; only this answer holds its secret (the state keeps a SHA-256 of it).
        ``client_id``/``client_secret`` are for seeding a token made earlier in the dashboard."""
        if not str(body.get("name") or "").strip():
            raise _invalid("name is required")
        secret = client_secret or secrets.token_hex(32)
        stamp = _now()
        token = {
            "id": body.get("id") or str(uuid.uuid4()),
            "name": body["name"],
            "client_id": client_id or f"{secrets.token_hex(16)}.access",
            "duration": body.get("duration", "8760h"),
            "enabled": bool(body.get("enabled", True)),
            "expires_at": body.get("expires_at"),
            "created_at": stamp,
            "updated_at": stamp,
            "client_secret_sha256": hashlib.sha256(secret.encode()).hexdigest(),
        }
        self._access()["service_tokens"][token["id"]] = token
        return {**self.service_token_json(token["id"]), "client_secret": secret}

    def service_token_json(self, token_id: str) -> Json:
        token = self._access()["service_tokens"].get(token_id)
        if token is None:
            raise ApiError(404, (12135, "access.api.error.not_found"))
        return {k: v for k, v in token.items() if k != "client_secret_sha256"}


def _page(items: list[Json], query: dict[str, str], default: int, maximum: int) -> tuple:
    try:
        page = int(query.get("page", 1))
        per_page = int(query.get("per_page", default))
    except ValueError:
        raise ApiError(400, (1004, "page and per_page must be integers")) from None
    if page < 1 or per_page < 1 or per_page > maximum:
        raise ApiError(400, (1004, f"per_page must be between 1 and {maximum}"))
    total_pages = max(1, -(-len(items) // per_page))
    chunk = items[(page - 1) * per_page : page * per_page]
    info = {
        "page": page,
        "per_page": per_page,
        "count": len(chunk),
        "total_count": len(items),
        "total_pages": total_pages,
    }
    return chunk, info


Route = Callable[["StandinState", "re.Match[str]", dict[str, str], Json, str], Any]


class Handler(BaseHTTPRequestHandler):
    """Routes v4 paths onto :class:`StandinState`; every answer is a v4 envelope."""

    server_version = "cloudflare-api-standin/1"
    state: StandinState  # set on the subclass made by make_server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _send(self, status: int, payload: Json, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _authenticate(self) -> None:
        header = self.headers.get("Authorization")
        if header is None:
            raise ApiError(400, (9106, "Missing X-Auth-Key, X-Auth-Email or Authorization headers"))
        scheme, _, token = header.partition(" ")
        if scheme != "Bearer" or not token.strip():
            error = ApiError(400, (6003, "Invalid request headers"))
            error.errors[0]["error_chain"] = [
                {"code": 6111, "message": "Invalid format for Authorization header"}
            ]
            raise error
        if not secrets.compare_digest(token.strip(), self.state.token):
            raise ApiError(403, (10000, "Authentication error"))

    def _body(self) -> Json:
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return {}
        try:
            body = json.loads(self.rfile.read(length))
        except json.JSONDecodeError:
            raise ApiError(400, (9207, "Request body is invalid.")) from None
        if not isinstance(body, dict):
            raise ApiError(400, (9207, "Request body is invalid."))
        return body

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        path = url.path[len(API_PREFIX) :] if url.path.startswith(API_PREFIX) else url.path
        path = path.rstrip("/") or "/"
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        state = self.state
        try:
            body = self._body() if method in ("POST", "PUT", "PATCH") else {}
            self._authenticate()
            with state.lock:
                state.requests.append({"method": method, "path": path, "query": query})
                control = path.startswith(CONTROL_PREFIX)
                blocked = None if control else state.blocked()
                if blocked is not None:
                    raise blocked
                fault = None if control else state.take_fault(method, path)
                if fault is not None and not fault[1]:
                    raise fault[0]
                for route_method, pattern, handler in ROUTES:
                    match = pattern.fullmatch(path)
                    if match and route_method == method:
                        result = handler(state, match, query, body, API_PREFIX + path)
                        if method != "GET":
                            state.save()
                        break
                else:
                    raise _no_route(API_PREFIX + path)
                if fault is not None:
                    raise fault[0]
        except ApiError as error:
            payload = {"success": False, "errors": error.errors, "messages": [], "result": None}
            self._send(error.status, payload, error.headers)
            return
        if isinstance(result, tuple):
            result, info = result
            payload = {"success": True, "errors": [], "messages": [], "result": result}
            payload["result_info"] = info
        else:
            payload = {"success": True, "errors": [], "messages": [], "result": result}
        self._send(HTTPStatus.OK, payload)


# -- routes -------------------------------------------------------------------------------------


def _zone_get(s: StandinState, m: re.Match[str], q: dict, b: Json, path: str) -> Json:
    zone = s.zone(m["zone"], path)
    return {"id": m["zone"], "name": zone["name"], "status": "active", "type": "full"}


def _records_list(s: StandinState, m: re.Match[str], q: dict, b: Json, path: str) -> tuple:
    zone = s.zone(m["zone"], path)
    unknown = set(q) - DNS_LIST_QUERY
    if unknown:  # refuse rather than silently answer unfiltered
        raise ApiError(400, (99998, f"stand-in: list filter {sorted(unknown)} is not emulated"))
    if q.get("match", "all") != "all":
        raise ApiError(400, (99998, "stand-in: match=any is not emulated"))
    items = zone["records"]
    name = q.get("name.exact", q.get("name"))
    if name is not None:
        items = [r for r in items if r["name"] == _norm_name(name, zone["name"])]
    if "type" in q:
        items = [r for r in items if r["type"] == q["type"].upper()]
    content = q.get("content.exact", q.get("content"))
    if content is not None:
        items = [r for r in items if r["content"].lower() == content.lower()]
    if "comment.exact" in q:
        items = [r for r in items if r["comment"] == q["comment.exact"]]
    if "proxied" in q:
        items = [r for r in items if r["proxied"] == (q["proxied"] == "true")]
    return _page(list(items), q, DNS_PER_PAGE_DEFAULT, DNS_PER_PAGE_MAX)


def _record_create(s: StandinState, m: re.Match[str], q: dict, b: Json, path: str) -> Json:
    return s.create_record(m["zone"], b, path)


def _record_get(s: StandinState, m: re.Match[str], q: dict, b: Json, path: str) -> Json:
    return s.find_record(m["zone"], m["record"], path)


def _record_put(s: StandinState, m: re.Match[str], q: dict, b: Json, path: str) -> Json:
    return s.replace_record(m["zone"], m["record"], b, path, merge=False)


def _record_patch(s: StandinState, m: re.Match[str], q: dict, b: Json, path: str) -> Json:
    return s.replace_record(m["zone"], m["record"], b, path, merge=True)


def _record_delete(s: StandinState, m: re.Match[str], q: dict, b: Json, path: str) -> Json:
    return s.delete_record(m["zone"], m["record"], path)


def _tunnels_list(s: StandinState, m: re.Match[str], q: dict, b: Json, path: str) -> tuple:
    s.account(m["account"], path)
    items = [s.tunnel_json(tid) for tid in s.data["tunnels"]]
    if "is_deleted" in q:
        deleted = q["is_deleted"] == "true"
        items = [t for t in items if (t["deleted_at"] is not None) == deleted]
    if "name" in q:
        items = [t for t in items if t["name"] == q["name"]]
    if "uuid" in q:
        items = [t for t in items if t["id"] == q["uuid"]]
    query = {k: v for k, v in q.items() if k in ("page", "per_page")}
    return _page(items, query, TUNNEL_PER_PAGE_DEFAULT, TUNNEL_PER_PAGE_DEFAULT)


def _tunnel_create(s: StandinState, m: re.Match[str], q: dict, b: Json, path: str) -> Json:
    """``POST /accounts/{id}/cfd_tunnel`` as the SDK sends it (cloudflare 5.9,
    ``resources/zero_trust/tunnels/cloudflared/cloudflared.py`` ``create``; body
    ``types/zero_trust/tunnels/cloudflared_create_params.py``: ``name`` required,
    ``config_src`` ``local`` or ``cloudflare``, ``tunnel_secret`` base64 of at least 32 bytes,
    else the API makes one). A live tunnel's name is taken: the API refuses a second one
    (cloudflared's ``tunnel create`` reports "tunnel with name already exists")."""
    s.account(m["account"], path)
    name = b.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ApiError(400, (1001, "name is required"))
    config_src = b.get("config_src", "local")
    if config_src not in ("local", "cloudflare"):
        raise ApiError(400, (1001, "config_src must be local or cloudflare"))
    secret = b.get("tunnel_secret")
    if secret is None:
        secret = base64.b64encode(secrets.token_bytes(32)).decode()
    else:
        try:
            raw = base64.b64decode(str(secret), validate=True)
        except ValueError:
            raw = b""
        if len(raw) < 32:
            raise ApiError(400, (1001, "tunnel_secret must be at least 32 bytes, base64"))
    live = [t for t in s.data["tunnels"].values() if not t.get("deleted_at")]
    if any(t["name"] == name for t in live):
        raise ApiError(409, (1013, "tunnel with name already exists"))
    tunnel_id = str(uuid.uuid4())
    s.data["tunnels"][tunnel_id] = {
        "name": name,
        "config_src": config_src,
        "config": None,
        "config_version": 0,
        "connectors": [],
        "ever_connected": False,
        "status": None,
        "created_at": _now(),
        "deleted_at": None,
        "secret": secret,
    }
    return s.tunnel_json(tunnel_id)


def _tunnel_token(s: StandinState, m: re.Match[str], q: dict, b: Json, path: str) -> str:
    """``GET …/cfd_tunnel/{id}/token`` (``resources/zero_trust/tunnels/cloudflared/token.py``:
    the result is a string): the connector token cloudflared runs with, base64 of JSON
    ``{"a": account tag, "t": tunnel ID, "s": tunnel secret}`` (cloudflared
    ``connection.TunnelToken``)."""
    tunnel = s.tunnel(m["account"], m["tunnel"], path)
    if tunnel.get("secret") is None:  # a seeded tunnel: its secret was never this API's
        tunnel["secret"] = base64.b64encode(secrets.token_bytes(32)).decode()
    payload = {"a": s.data["account_id"], "t": m["tunnel"], "s": tunnel["secret"]}
    return base64.b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode()


def _tunnel_get(s: StandinState, m: re.Match[str], q: dict, b: Json, path: str) -> Json:
    s.tunnel(m["account"], m["tunnel"], path)
    return s.tunnel_json(m["tunnel"])


def _tunnel_connections(s: StandinState, m: re.Match[str], q: dict, b: Json, path: str) -> list:
    return copy.deepcopy(s.tunnel(m["account"], m["tunnel"], path)["connectors"])


def _config_get(s: StandinState, m: re.Match[str], q: dict, b: Json, path: str) -> Json:
    s.tunnel(m["account"], m["tunnel"], path)
    return s.config_json(m["tunnel"])


def _config_put(s: StandinState, m: re.Match[str], q: dict, b: Json, path: str) -> Json:
    s.tunnel(m["account"], m["tunnel"], path)
    return s.put_config(m["tunnel"], b)


def _control_state(s: StandinState, m: re.Match[str], q: dict, b: Json, path: str) -> Json:
    return copy.deepcopy(s.data)


def _control_requests(s: StandinState, m: re.Match[str], q: dict, b: Json, path: str) -> list:
    return list(s.requests)


def _control_fault(s: StandinState, m: re.Match[str], q: dict, b: Json, path: str) -> Json:
    s.data["faults"].append(b)
    return b


def _control_connectors(s: StandinState, m: re.Match[str], q: dict, b: Json, path: str) -> Json:
    if m["tunnel"] not in s.data["tunnels"]:
        raise ApiError(404, (1003, "Tunnel not found"))
    s.set_connectors(m["tunnel"], list(b.get("connectors", [])))
    return s.tunnel_json(m["tunnel"])


# -- Access routes --------------------------------------------------------------------------------


def _invalid(why: str) -> ApiError:
    return ApiError(400, (12130, f"access.api.error.invalid_request: {why}"))


def _access_list(items: list[Json], q: dict, known: set[str]) -> tuple:
    unknown = set(q) - known - {"page", "per_page"}
    if unknown:  # refuse rather than silently answer unfiltered
        raise ApiError(400, (99998, f"stand-in: list filter {sorted(unknown)} is not emulated"))
    query = {k: v for k, v in q.items() if k in ("page", "per_page")}
    return _page(items, query, ACCESS_PER_PAGE_DEFAULT, ACCESS_PER_PAGE_MAX)


def _matches(value: Any, want: str, exact: bool) -> bool:
    value, want = str(value or "").lower(), want.lower()
    return value == want if exact else want in value


def _apps_list(s: StandinState, m: re.Match[str], q: dict, b: Json, path: str) -> tuple:
    s.account(m["account"], path)
    items = [s.access_app_json(app_id) for app_id in s._access()["apps"]]
    exact = q.get("exact") == "true"  # application_list_params: exact match of name/domain
    for key in ("domain", "name"):
        if key in q:
            items = [a for a in items if _matches(a.get(key), q[key], exact)]
    return _access_list(items, q, {"domain", "name", "exact"})


def _app_create(s: StandinState, m: re.Match[str], q: dict, b: Json, path: str) -> Json:
    s.account(m["account"], path)
    return s.create_access_app(b)


def _app_get(s: StandinState, m: re.Match[str], q: dict, b: Json, path: str) -> Json:
    s.account(m["account"], path)
    return s.access_app_json(m["app"])


def _app_put(s: StandinState, m: re.Match[str], q: dict, b: Json, path: str) -> Json:
    s.account(m["account"], path)
    return s.replace_access_app(m["app"], b)


def _app_delete(s: StandinState, m: re.Match[str], q: dict, b: Json, path: str) -> Json:
    s.account(m["account"], path)
    return s.delete_access_app(m["app"])


def _policies_list(s: StandinState, m: re.Match[str], q: dict, b: Json, path: str) -> tuple:
    s.account(m["account"], path)
    return _access_list(copy.deepcopy(s.access_policies(m["app"])), q, set())


def _policy_create(s: StandinState, m: re.Match[str], q: dict, b: Json, path: str) -> Json:
    s.account(m["account"], path)
    return s.create_access_policy(m["app"], b)


def _policy_get(s: StandinState, m: re.Match[str], q: dict, b: Json, path: str) -> Json:
    s.account(m["account"], path)
    return copy.deepcopy(s.access_policy(m["app"], m["policy"]))


def _policy_put(s: StandinState, m: re.Match[str], q: dict, b: Json, path: str) -> Json:
    s.account(m["account"], path)
    return s.replace_access_policy(m["app"], m["policy"], b)


def _policy_delete(s: StandinState, m: re.Match[str], q: dict, b: Json, path: str) -> Json:
    s.account(m["account"], path)
    return s.delete_access_policy(m["app"], m["policy"])


def _tokens_list(s: StandinState, m: re.Match[str], q: dict, b: Json, path: str) -> tuple:
    s.account(m["account"], path)
    items = [s.service_token_json(token_id) for token_id in s._access()["service_tokens"]]
    if "name" in q:
        items = [t for t in items if t["name"] == q["name"]]
    return _access_list(items, q, {"name"})


def _token_create(s: StandinState, m: re.Match[str], q: dict, b: Json, path: str) -> Json:
    s.account(m["account"], path)
    return s.create_service_token({k: v for k, v in b.items() if k in ("name", "duration")})


def _token_get(s: StandinState, m: re.Match[str], q: dict, b: Json, path: str) -> Json:
    s.account(m["account"], path)
    return s.service_token_json(m["token"])


_ID = r"[^/]+"
_ZONE = rf"/zones/(?P<zone>{_ID})"
_TUNNEL = rf"/accounts/(?P<account>{_ID})/cfd_tunnel/(?P<tunnel>{_ID})"
_ACCESS = rf"/accounts/(?P<account>{_ID})/access"
_APP = _ACCESS + rf"/apps/(?P<app>{_ID})"
ROUTES: list[tuple[str, re.Pattern[str], Route]] = [
    (method, re.compile(pattern), handler)
    for method, pattern, handler in [
        ("GET", _ZONE, _zone_get),
        ("GET", _ZONE + "/dns_records", _records_list),
        ("POST", _ZONE + "/dns_records", _record_create),
        ("GET", _ZONE + rf"/dns_records/(?P<record>{_ID})", _record_get),
        ("PUT", _ZONE + rf"/dns_records/(?P<record>{_ID})", _record_put),
        ("PATCH", _ZONE + rf"/dns_records/(?P<record>{_ID})", _record_patch),
        ("DELETE", _ZONE + rf"/dns_records/(?P<record>{_ID})", _record_delete),
        ("GET", rf"/accounts/(?P<account>{_ID})/cfd_tunnel", _tunnels_list),
        ("POST", rf"/accounts/(?P<account>{_ID})/cfd_tunnel", _tunnel_create),
        ("GET", _TUNNEL + "/token", _tunnel_token),
        ("GET", _TUNNEL, _tunnel_get),
        ("GET", _TUNNEL + "/connections", _tunnel_connections),
        ("GET", _TUNNEL + "/configurations", _config_get),
        ("PUT", _TUNNEL + "/configurations", _config_put),
        ("GET", _ACCESS + "/apps", _apps_list),
        ("POST", _ACCESS + "/apps", _app_create),
        ("GET", _APP, _app_get),
        ("PUT", _APP, _app_put),
        ("DELETE", _APP, _app_delete),
        ("GET", _APP + "/policies", _policies_list),
        ("POST", _APP + "/policies", _policy_create),
        ("GET", _APP + rf"/policies/(?P<policy>{_ID})", _policy_get),
        ("PUT", _APP + rf"/policies/(?P<policy>{_ID})", _policy_put),
        ("DELETE", _APP + rf"/policies/(?P<policy>{_ID})", _policy_delete),
        ("GET", _ACCESS + "/service_tokens", _tokens_list),
        ("POST", _ACCESS + "/service_tokens", _token_create),
        ("GET", _ACCESS + rf"/service_tokens/(?P<token>{_ID})", _token_get),
        ("GET", CONTROL_PREFIX + "/state", _control_state),
        ("GET", CONTROL_PREFIX + "/requests", _control_requests),
        ("POST", CONTROL_PREFIX + "/faults", _control_fault),
        ("PUT", CONTROL_PREFIX + rf"/tunnels/(?P<tunnel>{_ID})/connectors", _control_connectors),
    ]
]


def make_server(state: StandinState, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """Bind the stand-in (``port=0``: any free port); the caller runs ``serve_forever``."""
    handler = type("BoundHandler", (Handler,), {"state": state})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def base_url(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}{API_PREFIX}"


def load_seed(path: Path) -> Json:
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        return yaml.safe_load(text) or {}
    return json.loads(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Cloudflare v4 API stand-in (DNS records, cloudflared tunnels). Not Cloudflare."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", type=Path, help="JSON or YAML seed file")
    parser.add_argument("--state", type=Path, help="JSON file holding the live state")
    parser.add_argument("--token-file", type=Path, help="file whose content is the API token")
    parser.add_argument("--reset", action="store_true", help="ignore an existing --state file")
    parser.add_argument(
        "--config-defaults",
        action="store_true",
        help="read tunnel configs back with default originRequest values, as the API does",
    )
    args = parser.parse_args(argv)

    token = args.token_file.read_text().strip() if args.token_file else None
    if args.state and args.state.exists() and not args.reset:
        data = json.loads(args.state.read_text())
        state = StandinState(data, token or data.get("token", ""), args.state)
        if not state.token:
            parser.error("--token-file is required")
    else:
        seed = load_seed(args.seed) if args.seed else {}
        try:
            state = StandinState.from_seed(seed, token, args.state)
        except ValueError as error:
            parser.error(str(error))
    if args.config_defaults:
        state.data["config_defaults"] = True
    state.save()
    server = make_server(state, args.host, args.port)
    print(f"listening on {base_url(server)}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
