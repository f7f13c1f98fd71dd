"""The services the lab runs on its bridge address: the registry proxy, the package cache
and the mirror, and the Cloudflare API stand-in on loopback.

The proxy (tinyproxy) lets lab hosts reach the package registries and nothing else; the
package cache (lab/apt_cache.py) keeps every Debian package a lab host fetched in
.lab/cache/apt, across runs, so a package is downloaded from Debian once, however many hosts
install it, as a site with many GPU hosts would use a local mirror; the mirror is Python's own
static HTTP server over .lab/mirror (the artifacts, the images, and the wheelhouse); the file
server (lab/files.py) is an operator's, holding the documents Label Studio's tasks name.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import yaml

from lab import fake_secrets, files, processes, s3
from lab.topology import (
    APT_CACHE_DIR,
    APT_CACHE_PORT,
    FILES_PORT,
    GATEWAY,
    LAB_DIR,
    MIRROR_DIR,
    MIRROR_PORT,
    PREFIXLEN,
    PROXY_PORT,
    REGISTRY_HOSTS,
    REPO,
    S3_PORT,
    S3_URL,
    SCALE_HOSTS,
    SECRETS_FILE,
    SUBNET,
    scale_number,
)

PROXY, MIRROR, CLOUDFLARE, APT_CACHE = "proxy", "mirror", "cloudflare-api", "apt-cache"
S3 = "s3"
FILES = "files"  # an operator's file server (lab/files.py)
CLOUDFLARE_PORT = 18787
CLOUDFLARE_URL = f"http://127.0.0.1:{CLOUDFLARE_PORT}/client/v4"


def _cloudflare_seed() -> tuple[Path, Path]:
    """The stand-in's zone and tunnels, from the lab's secrets.

    `label.` already exists and matches (the deploy adopts it), an unrelated `www` record
    must survive every run, and calypso's node tunnel is remotely managed, so its ingress
    goes through the API.
    """
    values = yaml.safe_load(SECRETS_FILE.read_text())
    base = "boathou.se"
    cluster = values["cloudflareTunnelId"]

    def tunnel(key: str, name: str, source: str) -> dict:
        return {
            "id": values[key],
            "name": name,
            "config_src": source,
            "connectors": [{"conns": 4, "version": "2025.8.1"}],
        }

    seed = {
        "account_id": values["cloudflareAccountId"],
        "zones": [
            {
                "id": values["cloudflareZoneId"],
                "name": base,
                "records": [
                    {
                        "type": "CNAME",
                        "name": f"label.{base}",
                        "proxied": True,
                        "ttl": 1,
                        "content": f"{cluster}.cfargotunnel.com",
                    },
                    {"type": "A", "name": f"www.{base}", "content": "192.0.2.80", "proxied": True},
                ],
            }
        ],
        "tunnels": [
            tunnel("cloudflareTunnelId", "oceanid-cluster", "local"),
            tunnel("cloudflareNodeTunnelId", "calypso", "cloudflare"),
            tunnel("cloudflareNode2TunnelId", "calypso2", "local"),
            tunnel("cloudflareNode3TunnelId", "calypso3", "local"),
        ]
        + [
            tunnel(f"cloudflareNode{scale_number(h)}TunnelId", h.name, "local") for h in SCALE_HOSTS
        ],
        # calypso3's name is behind Access (`access: service_token`): its service token exists
        # already, as the operator makes it in the dashboard; the deploy only finds it.
        "access_service_tokens": [
            {
                "name": "oceanid-gpu",
                "client_id": values["cloudflareAccessClientId"],
                "client_secret": values["cloudflareAccessClientSecret"],
            }
        ],
    }
    seed_file, token_file = LAB_DIR / "cloudflare-seed.json", LAB_DIR / "cloudflare-token"
    for path, text in (
        (seed_file, json.dumps(seed, indent=2)),
        (token_file, values["cloudflareApiToken"]),
    ):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)
    return seed_file, token_file


def _proxy_config() -> str:
    allowed = LAB_DIR / "proxy-allowed"
    allowed.write_text("".join(f"^{h.replace('.', '[.]')}$\n" for h in REGISTRY_HOSTS))
    config = LAB_DIR / "tinyproxy.conf"
    config.write_text(
        "\n".join(
            [
                f"Port {PROXY_PORT}",
                f"Listen {GATEWAY}",
                "User nobody",
                "Group nogroup",
                "Timeout 600",
                "MaxClients 64",
                "LogLevel Warning",
                f"Allow {SUBNET}.0/{PREFIXLEN}",
                "ConnectPort 443",
                "ConnectPort 80",
                f'Filter "{allowed}"',
                "FilterType ere",
                "FilterDefaultDeny Yes",
                "FilterURLs Off",
                "DisableViaHeader Yes",
                "",
            ]
        )
    )
    return str(config)


def apt_cache_argv(address: str, port: int, cache: Path) -> list[str]:
    """The lab's Debian package cache (lab/apt_cache.py) on `address:port`."""
    return [
        sys.executable, "-m", "lab.apt_cache", "--listen", f"{address}:{port}",
        "--cache", str(cache),
    ]  # fmt: skip


def _wait_port(port: int, address: str = GATEWAY, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((address, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {address}:{port}")


def start() -> None:
    processes.start(PROXY, ["tinyproxy", "-d", "-c", _proxy_config()])
    processes.start(APT_CACHE, apt_cache_argv(GATEWAY, APT_CACHE_PORT, APT_CACHE_DIR), cwd=REPO)
    processes.start(
        MIRROR,
        [
            sys.executable,
            "-m",
            "http.server",
            "--bind",
            GATEWAY,
            "--directory",
            str(MIRROR_DIR),
            str(MIRROR_PORT),
        ],
    )
    seed, token = _cloudflare_seed()
    processes.start(
        CLOUDFLARE,
        [
            sys.executable,
            "-m",
            "tests.standins.cloudflare_api",
            "--host",
            "127.0.0.1",
            "--port",
            str(CLOUDFLARE_PORT),
            "--seed",
            str(seed),
            "--token-file",
            str(token),
            "--state",
            str(LAB_DIR / "cloudflare-state.json"),
            "--reset",
            # Read tunnel configs back with originRequest defaults, as the real API does: the
            # second deploy must still plan no ingress update.
            "--config-defaults",
        ],
        cwd=REPO,
    )
    _wait_port(PROXY_PORT)
    _wait_port(APT_CACHE_PORT)
    _wait_port(MIRROR_PORT)
    _wait_port(CLOUDFLARE_PORT, "127.0.0.1")
    files.populate()
    processes.start(FILES, files.argv())
    _wait_port(FILES_PORT)
    processes.start(S3, s3.argv(GATEWAY, S3_PORT), cwd=REPO)
    _wait_port(S3_PORT, timeout=30)
    values = fake_secrets.ensure()
    s3.create_bucket(
        S3_URL,
        values["backupS3Bucket"],
        values["backupS3AccessKeyId"],
        values["backupS3SecretAccessKey"],
    )


def stop() -> None:
    processes.stop(PROXY)
    processes.stop(APT_CACHE)
    processes.stop(MIRROR)
    processes.stop(CLOUDFLARE)
    processes.stop(S3)
    processes.stop(FILES)
