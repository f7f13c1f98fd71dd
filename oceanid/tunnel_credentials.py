"""Recognise a Cloudflare tunnel credential in any of the shapes it reaches us in.

The stack we replace misread base64 wrapped at 76 columns and ran connectors whose
credential belonged to another tunnel ("Invalid tunnel secret" in production). So every
credential is parsed here, once, before any host is contacted: the shape is recognised,
the tunnel ID inside is compared with the configured one, and anything else is refused
with a message that names the key and never echoes the secret.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Literal

from oceanid.settings import has_control

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

EXPECTED_SHAPES = (
    "a connector token (base64 of JSON with keys a, t, s), base64 of a credentials.json "
    "(keys AccountTag, TunnelSecret, TunnelID; may be wrapped in lines), "
    "or the credentials.json text itself"
)

Shape = Literal["token", "credentials-base64", "credentials-json"]


class CredentialError(ValueError):
    """A credential that cannot be used; the message is safe to print (no secret in it)."""


@dataclass(frozen=True)
class TunnelCredential:
    """One tunnel's credential, normalised.

    `shape` says how it arrived; `kind` says how the connector should receive it: a token
    stays a token (`--token-file`), the two credentials.json shapes become a
    `credentials-file`. The secret is kept out of `repr` so it never lands in a log.
    """

    shape: Shape
    account_tag: str
    tunnel_id: str
    tunnel_secret: str = field(repr=False)

    @property
    def kind(self) -> Literal["token", "credentials-file"]:
        return "token" if self.shape == "token" else "credentials-file"

    def token(self) -> str:
        """The connector token as cloudflared's `--token-file` expects it."""
        payload = {"a": self.account_tag, "t": self.tunnel_id, "s": self.tunnel_secret}
        return base64.b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode()

    def credentials_json(self) -> str:
        """The credentials.json text cloudflared's `credentials-file:` expects."""
        payload = {
            "AccountTag": self.account_tag,
            "TunnelSecret": self.tunnel_secret,
            "TunnelID": self.tunnel_id,
        }
        return json.dumps(payload, indent=2) + "\n"

    def file_content(self) -> str:
        """What the connector's credential file holds, by the shape recognised."""
        return self.token() + "\n" if self.kind == "token" else self.credentials_json()


def _from_mapping(data: object, shape: Shape, key: str) -> TunnelCredential | None:
    if not isinstance(data, dict):
        return None
    if {"a", "t", "s"} <= data.keys():
        fields = (data["a"], data["t"], data["s"])
        shape = "token"
    elif {"AccountTag", "TunnelSecret", "TunnelID"} <= data.keys():
        fields = (data["AccountTag"], data["TunnelID"], data["TunnelSecret"])
    else:
        present = ", ".join(sorted(str(k) for k in data)) or "none"
        raise CredentialError(
            f"{key}: JSON credential has keys [{present}]; expected a, t, s "
            "(connector token) or AccountTag, TunnelSecret, TunnelID (credentials.json)"
        )
    if not all(isinstance(value, str) and value for value in fields):
        raise CredentialError(f"{key}: a credential field is empty or not a string")
    if any(has_control(value) for value in fields):  # they reach config.yaml and the token file
        raise CredentialError(f"{key}: a credential field holds a newline or a control character")
    account_tag, tunnel_id, secret = fields
    return TunnelCredential(shape, account_tag, tunnel_id.lower(), secret)


def _decode_base64(text: str) -> bytes | None:
    compact = re.sub(r"\s+", "", text)
    if not compact or not re.fullmatch(r"[A-Za-z0-9+/_=-]+", compact):
        return None
    compact += "=" * (-len(compact) % 4)
    altchars = b"-_" if ("-" in compact or "_" in compact) else None
    try:
        return base64.b64decode(compact, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        return None


def parse(value: str, *, key: str) -> TunnelCredential:
    """Recognise `value`'s shape; raise CredentialError naming `key` otherwise."""
    text = value.strip()
    if not text:
        raise CredentialError(f"{key}: empty; expected {EXPECTED_SHAPES}")
    if text[0] in "{[":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CredentialError(
                f"{key}: looks like JSON but does not parse (line {exc.lineno}, "
                f"column {exc.colno}); expected {EXPECTED_SHAPES}"
            ) from None
        credential = _from_mapping(data, "credentials-json", key)
    else:
        raw = _decode_base64(text)
        if raw is None:
            raise CredentialError(
                f"{key}: not base64 and not JSON ({len(text)} characters); "
                f"expected {EXPECTED_SHAPES}"
            )
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise CredentialError(
                f"{key}: base64 that does not decode to JSON; expected {EXPECTED_SHAPES}"
            ) from None
        credential = _from_mapping(data, "credentials-base64", key)
    if credential is None:
        raise CredentialError(f"{key}: JSON is not an object; expected {EXPECTED_SHAPES}")
    if not UUID_RE.fullmatch(credential.tunnel_id):
        raise CredentialError(f"{key}: the tunnel ID inside is not a UUID")
    return credential


def parse_for_tunnel(value: str, *, key: str, tunnel_id: str, id_key: str) -> TunnelCredential:
    """Parse and check that the credential belongs to the configured tunnel."""
    credential = parse(value, key=key)
    if credential.tunnel_id != tunnel_id.strip().lower():
        raise CredentialError(
            f"{key}: the credential is for tunnel {credential.tunnel_id}, but {id_key} is "
            f"{tunnel_id.strip()}; cloudflared would fail with 'Invalid tunnel secret'. "
            f"Store the credential of tunnel {tunnel_id.strip()} (or fix {id_key})"
        )
    return credential
