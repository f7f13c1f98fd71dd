"""
Facts about a host's ``cloudflared`` connector: the installed version and whether it is connected.

Readiness is read from the connector's own metrics server (``/ready``), the same endpoint a
Kubernetes readiness probe uses: it answers 200 with the number of live edge connections, or 503
while none is up. That tells a connected connector from one that merely runs.
"""

from __future__ import annotations

import json
import re
from contextlib import suppress
from typing import TypedDict

from pyinfra.api import FactBase, QuoteString, StringCommand
from pyinfra.api.exceptions import FactProcessError
from typing_extensions import override

# `cloudflared --version` prints e.g. "cloudflared version 2025.8.1 (built 2025-08-21-1535 UTC)".
VERSION_RE = re.compile(r"\bcloudflared version (\S+)")

# A marker line after the body carries the HTTP status, so body and status come back together.
STATUS_MARKER = "##cloudflared-ready-http-status "

ADDRESS_RE = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$")


class CloudflaredReadiness(TypedDict):
    status: int
    ready_connections: int
    connector_id: str | None


class CloudflaredVersion(FactBase[str | None]):
    """
    Returns the installed cloudflared version (``"2025.8.1"``), or ``None`` when it is absent.
    """

    @override
    def requires_command(self) -> str:
        return "cloudflared"

    @override
    def command(self) -> str:
        return "cloudflared --version"

    @override
    def process(self, output: list[str]) -> str | None:
        match = VERSION_RE.search("\n".join(output))
        if not match:
            # Something answers to `cloudflared` but is not it: fail loudly rather than report
            # "absent" and let a deploy write over an unknown binary.
            raise FactProcessError(f"not cloudflared --version output: {output[:1]!r}")
        return match.group(1)


class CloudflaredReady(FactBase[CloudflaredReadiness | None]):
    """
    Returns the connector's ``/ready`` answer, or ``None`` when nothing answers on the address.

    + metrics_address: the connector's ``metrics:`` address, ``host:port`` (e.g. ``127.0.0.1:2200``)

    ``status`` is the HTTP status (200 connected, 503 no edge connection); ``ready_connections``
    and ``connector_id`` come from the JSON body and are ``0``/``None`` when the body lacks them.

    .. code:: python

        {
            "status": 200,
            "ready_connections": 4,
            "connector_id": "6b3c1c2e-3f4a-4e43-9d1c-1d5b0f3d8a11",
        }
    """

    @override
    def requires_command(self, metrics_address: str) -> str:
        return "curl"

    @override
    def command(self, metrics_address: str) -> StringCommand:
        if not ADDRESS_RE.match(metrics_address):
            raise ValueError(f"metrics_address must be host:port, got {metrics_address!r}")
        # `|| true`: a refused connection is an answer ("not listening"), not a failed fact.
        return StringCommand(
            "curl",
            "-s",
            "--max-time",
            "5",
            "-w",
            QuoteString(rf"\n{STATUS_MARKER}%{{http_code}}\n"),
            QuoteString(f"http://{metrics_address}/ready"),
            "||",
            "true",
        )

    @override
    def process(self, output: list[str]) -> CloudflaredReadiness | None:
        status: int | None = None
        body: list[str] = []
        for line in output:
            if line.startswith(STATUS_MARKER):
                status = int(line[len(STATUS_MARKER) :].strip() or 0)
            else:
                body.append(line)
        if not status:  # curl reports 000 when it could not connect
            return None

        data: object = None
        with suppress(ValueError):
            data = json.loads("\n".join(body))
        if not isinstance(data, dict):
            data = {}
        connections = data.get("readyConnections")
        connector_id = data.get("connectorId")
        return CloudflaredReadiness(
            status=status,
            ready_connections=connections if isinstance(connections, int) else 0,
            connector_id=connector_id if isinstance(connector_id, str) else None,
        )
