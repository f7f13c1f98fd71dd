"""The two services the lab runs on its bridge address: the registry proxy and the mirror.

The proxy (tinyproxy) lets lab hosts reach the package registries and nothing else; the
mirror is Python's own static HTTP server over .lab/mirror.
"""

from __future__ import annotations

import socket
import sys
import time

from lab import processes
from lab.topology import (
    GATEWAY,
    LAB_DIR,
    MIRROR_DIR,
    MIRROR_PORT,
    PREFIXLEN,
    PROXY_PORT,
    REGISTRY_HOSTS,
    SUBNET,
)

PROXY, MIRROR = "proxy", "mirror"


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


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((GATEWAY, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {GATEWAY}:{port}")


def start() -> None:
    processes.start(PROXY, ["tinyproxy", "-d", "-c", _proxy_config()])
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
    _wait_port(PROXY_PORT)
    _wait_port(MIRROR_PORT)


def stop() -> None:
    processes.stop(PROXY)
    processes.stop(MIRROR)
