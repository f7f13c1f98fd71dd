"""Well-formed, fake secrets for the lab, one of each tunnel credential shape.

The cluster tunnel gets a raw connector token, calypso's node tunnel a base64
credentials.json wrapped at 76 columns (as `base64` prints it), so every shape that
reaches production is exercised by every `make lab`. Generated once and kept, so tunnel
IDs stay stable between runs; written 0600 like any secret.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import textwrap
import uuid

import yaml

from lab import s3
from lab.topology import S3_URL, SCALE_HOSTS, SECRETS_FILE, scale_number

LAB_BASE_DOMAIN = "boathou.se"  # group_data/all.py's base_domain, which the lab keeps


def _token(account: str, tunnel: str, secret: str) -> str:
    payload = json.dumps({"a": account, "t": tunnel, "s": secret}, separators=(",", ":"))
    return base64.b64encode(payload.encode()).decode()


def _credentials_json(account: str, tunnel: str, secret: str) -> str:
    return json.dumps({"AccountTag": account, "TunnelSecret": secret, "TunnelID": tunnel})


def generate() -> dict[str, str]:
    account = secrets.token_hex(16)
    cluster, node, node2, node3 = (str(uuid.uuid4()) for _ in range(4))

    def secret() -> str:
        return base64.b64encode(secrets.token_bytes(32)).decode()

    wrapped = "\n".join(
        textwrap.wrap(
            base64.b64encode(_credentials_json(account, node, secret()).encode()).decode(), 76
        )
    )
    # each bench-scale host's node tunnel (lab/bench_scale.py): a connector token, as calypso3's
    scale = {}
    for lab_host in SCALE_HOSTS:
        number, tunnel = scale_number(lab_host), str(uuid.uuid4())
        scale[f"cloudflareNode{number}TunnelId"] = tunnel
        scale[f"cloudflareNode{number}TunnelToken"] = _token(account, tunnel, secret())
    return scale | {
        "cloudflareAccountId": account,
        "cloudflareZoneId": secrets.token_hex(16),
        "cloudflareApiToken": secrets.token_urlsafe(30),
        "cloudflareTunnelId": cluster,
        "cloudflareTunnelToken": _token(account, cluster, secret()),
        "cloudflareNodeTunnelId": node,
        "cloudflareNodeTunnelToken": wrapped + "\n",
        "cloudflareNode2TunnelId": node2,
        "cloudflareNode2TunnelToken": _credentials_json(account, node2, secret()),
        "cloudflareNode3TunnelId": node3,
        "cloudflareNode3TunnelToken": _token(account, node3, secret()),
        # the guide's keys, as production holds them (oceanid/preflight.py checks both)
        "cloudflareNodeTunnelHostname": LAB_BASE_DOMAIN,
        "cloudflareNodeTunnelTarget": f"{node}.cfargotunnel.com",
        # the ML-backend adapter's basic auth (deploys/gpu_host/ml_backend, design.md §7)
        "mlBackendUser": "label-studio",
        "mlBackendPassword": secrets.token_urlsafe(24),
        "k3s_token": "K10" + secrets.token_hex(24) + "::server:" + secrets.token_hex(16),
        "labelStudioDbUrl": f"postgresql://labelstudio:{secrets.token_urlsafe(12)}@db:5432/ls",
        "labelStudioApiToken": secrets.token_hex(20),
        "labelStudioAdminEmail": "admin@boathou.se",
        "labelStudioAdminPassword": secrets.token_urlsafe(16),
        "hfAccessToken": "hf_" + secrets.token_urlsafe(24),
        # the Cloudflare Access service token calypso3's name admits (made in the dashboard in
        # production; the lab seeds it into the API stand-in, lab/services.py)
        "cloudflareAccessClientId": secrets.token_hex(16) + ".access",
        "cloudflareAccessClientSecret": secrets.token_hex(32),
        # the backups' object store: moto's S3 server on the bridge (lab/s3.py), as R2 is
        "backupS3Endpoint": S3_URL,
        "backupS3Bucket": s3.BUCKET,
        "backupS3AccessKeyId": secrets.token_hex(16),
        "backupS3SecretAccessKey": secrets.token_hex(32),
    }


def derived(values: dict[str, str]) -> dict[str, str]:
    """The keys that follow from others (not secrets): calypso's CNAME target is its tunnel's."""
    return {
        "cloudflareNodeTunnelHostname": LAB_BASE_DOMAIN,
        "cloudflareNodeTunnelTarget": f"{values['cloudflareNodeTunnelId']}.cfargotunnel.com",
        # where the lab's object store listens (lab/s3.py), not a secret either
        "backupS3Endpoint": S3_URL,
        "backupS3Bucket": s3.BUCKET,
    }


def ensure() -> dict[str, str]:
    """The lab's secrets: the file's values kept (tunnel IDs stay stable, and the hosts'
    credentials with them), a key the lab now uses and the file lacks added, and the keys
    derived from others brought in line; rewritten only when something was added or fixed."""
    existing: dict[str, str] = {}
    if SECRETS_FILE.exists():
        existing = yaml.safe_load(SECRETS_FILE.read_text()) or {}
    values = generate() | existing
    values |= derived(values)
    if values == existing:
        return existing
    SECRETS_FILE.parent.mkdir(parents=True, exist_ok=True)
    tmp = SECRETS_FILE.with_suffix(".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        yaml.safe_dump(values, out, sort_keys=True)
    tmp.replace(SECRETS_FILE)
    return values
