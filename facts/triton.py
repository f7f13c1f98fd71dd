"""
Facts about a Triton Inference Server on the host, read over its HTTP/REST (KServe v2) API.

Liveness, readiness and the model repository index are fetched in one shell command, so the fact
costs one round-trip. Each ``curl`` writes a marker line with its HTTP status; a refused
connection writes status ``000``, which is how "nothing listens" is told from "Triton answers but
is not ready".
"""

from __future__ import annotations

import json
from typing import TypedDict

from pyinfra.api import FactBase, QuoteString, StringCommand
from pyinfra.api.exceptions import FactProcessError
from typing_extensions import override

MARKER = "##triton "


class TritonModel(TypedDict):
    name: str
    version: str | None
    state: str | None
    reason: str | None


class TritonStatus(TypedDict):
    live: bool
    ready: bool
    models: list[TritonModel]


def _probe(url: str, label: str, *, post_json: bool = False) -> list[object]:
    bits: list[object] = ["curl", "-s", "--max-time", "10"]
    if post_json:
        bits += ["-X", "POST", "-H", QuoteString("Content-Type: application/json")]
        bits += ["-d", QuoteString("{}")]
        bits += ["-w", QuoteString(rf"\n{MARKER}{label} %{{http_code}}\n")]
    else:
        bits += ["-o", "/dev/null", "-w", QuoteString(rf"{MARKER}{label} %{{http_code}}\n")]
    bits += [QuoteString(url), ";"]
    return bits


class TritonState(FactBase[TritonStatus | None]):
    """
    Returns Triton's liveness, readiness and model index, or ``None`` when nothing listens.

    + http_port: Triton's HTTP port on the host's loopback (``--http-port``, 8000 by default)

    ``models`` is ``POST /v2/repository/index``: every model in the repository, each with its
    ``state`` (``READY``, ``UNAVAILABLE``, ``LOADING``... or ``None`` when never loaded) and, for a
    model that failed, the ``reason``.

    .. code:: python

        {
            "live": True,
            "ready": True,
            "models": [
                {"name": "embedder", "version": "1", "state": "READY", "reason": None},
            ],
        }
    """

    @override
    def requires_command(self, http_port: int = 8000) -> str:
        return "curl"

    @override
    def command(self, http_port: int = 8000) -> StringCommand:
        if type(http_port) is not int or not 0 < http_port < 65536:
            raise ValueError(f"http_port must be a TCP port number, got {http_port!r}")
        base = f"http://127.0.0.1:{http_port}/v2"
        return StringCommand(
            *_probe(f"{base}/health/live", "live"),
            *_probe(f"{base}/health/ready", "ready"),
            *_probe(f"{base}/repository/index", "index", post_json=True),
            "true",
        )

    @override
    def process(self, output: list[str]) -> TritonStatus | None:
        codes: dict[str, str] = {}
        body: list[str] = []
        for line in output:
            if line.startswith(MARKER):
                label, _, code = line[len(MARKER) :].partition(" ")
                codes[label] = code.strip()
            else:
                body.append(line)

        if codes.get("live", "000") == "000":
            return None

        models: list[TritonModel] = []
        if codes.get("index") == "200":
            try:
                index = json.loads("\n".join(body))
            except ValueError as error:
                raise FactProcessError(f"Triton's repository index is not JSON: {error}") from None
            models = [_model(entry) for entry in index if isinstance(entry, dict)]

        return TritonStatus(
            live=codes.get("live") == "200",
            ready=codes.get("ready") == "200",
            models=models,
        )


def _model(entry: dict[str, object]) -> TritonModel:
    def text(key: str) -> str | None:
        value = entry.get(key)
        return str(value) if value not in (None, "") else None

    return TritonModel(
        name=str(entry.get("name", "")),
        version=text("version"),
        state=text("state"),
        reason=text("reason"),
    )
