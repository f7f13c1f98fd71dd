"""
Facts about k3s: the installed version, and the nodes as the server's API sees them.

Both are read from k3s itself (``k3s --version``, ``k3s kubectl``) rather than from files the
deploy wrote, so they report what runs, including a binary or a node someone changed by hand.
Node labels and taints come from one ``get nodes -o json`` for the whole cluster: reconciling
them must not cost one command per node or per label.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypedDict

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError
from typing_extensions import override

# `k3s --version` prints e.g. "k3s version v1.33.4+k3s1 (148243c4)" then "go version go1.24.5".
VERSION_RE = re.compile(r"^k3s version (v\S+)")

# Printed instead of the JSON when kubectl gets no answer from the API (server stopped, starting).
API_UNAVAILABLE_MARKER = "##k3s-api-unavailable"
OUR_ANNOTATIONS = "oceanid.cluster/"


class K3sTaint(TypedDict):
    key: str
    value: str | None
    effect: str


class K3sNode(TypedDict):
    name: str
    ready: bool
    labels: dict[str, str]
    annotations: dict[str, str]
    taints: list[K3sTaint]
    kubelet_version: str | None


class K3sVersion(FactBase[str | None]):
    """
    Returns the installed k3s version (``"v1.33.4+k3s1"``), or ``None`` when k3s is absent.
    """

    @override
    def requires_command(self) -> str:
        return "k3s"

    @override
    def command(self) -> str:
        return "k3s --version"

    @override
    def process(self, output: list[str]) -> str | None:
        match = VERSION_RE.match(output[0]) if output else None
        if not match:
            # Something answers to `k3s` but is not it: fail loudly rather than report "absent"
            # and let a deploy write over an unknown binary.
            raise FactProcessError(f"not k3s --version output: {output[:1]!r}")
        return match.group(1)


def _taint(raw: dict[str, Any]) -> K3sTaint:
    value = raw.get("value")
    return K3sTaint(key=raw["key"], value=value or None, effect=raw["effect"])


def _node(raw: dict[str, Any]) -> K3sNode:
    metadata, spec, status = raw["metadata"], raw.get("spec", {}), raw.get("status", {})
    ready = any(
        condition.get("type") == "Ready" and condition.get("status") == "True"
        for condition in status.get("conditions", [])
    )
    return K3sNode(
        name=metadata["name"],
        ready=ready,
        labels=dict(metadata.get("labels", {})),
        annotations={  # only the deploy's own (what it set): k3s's are long and many
            key: value
            for key, value in metadata.get("annotations", {}).items()
            if key.startswith(OUR_ANNOTATIONS)
        },
        taints=[_taint(taint) for taint in spec.get("taints", [])],
        kubelet_version=status.get("nodeInfo", {}).get("kubeletVersion"),
    )


class K3sNodes(FactBase[list[K3sNode] | None]):
    """
    Returns the cluster's nodes as the API on this (server) host sees them, or ``None`` when k3s
    is absent or its API does not answer.

    ``ready`` is the node's ``Ready`` condition (a node without one is not ready); a taint's
    ``value`` is ``None`` when it has none (``key:NoSchedule``).

    .. code:: python

        [
            {
                "name": "calypso",
                "ready": True,
                "labels": {"oceanid.cluster/tunnel-enabled": "true", ...},
                "annotations": {"oceanid.cluster/managed-labels": "...", ...},  # ours only
                "taints": [
                    {"key": "workload-type", "value": "gpu-compute", "effect": "NoSchedule"},
                ],
                "kubelet_version": "v1.33.4+k3s1",
            },
        ]
    """

    @override
    def requires_command(self) -> str:
        return "k3s"

    @override
    def command(self) -> str:
        # A stopped API is a state to report, not a failed host: kubectl's error goes to stderr,
        # the marker to stdout. The timeout bounds a server that accepts but does not answer.
        return (
            "k3s kubectl get nodes -o json --request-timeout=10s"
            f" || echo '{API_UNAVAILABLE_MARKER}'"
        )

    @override
    def process(self, output: list[str]) -> list[K3sNode] | None:
        if output == [API_UNAVAILABLE_MARKER]:
            return None
        try:
            document = json.loads("\n".join(output))
            return [_node(item) for item in document["items"]]
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise FactProcessError(
                f"not `kubectl get nodes -o json` output ({error!r}): {output[:1]!r}"
            ) from error


SERVER_TOKEN = "/var/lib/rancher/k3s/server/token"
TOKEN_FILE = "/etc/rancher/k3s/token"  # a node's own copy (deploys/k3s/config.py TOKEN_FILE)
UNITS = ("k3s.service", "k3s-agent.service")


def token_secret(token: str) -> str:
    """The secret of a k3s token: what follows ``::server:`` in the full form
    (``K10<CA hash>::server:<secret>``, what k3s writes to server/token), else all of it."""
    token = token.strip()
    return token.split("::server:", 1)[1] if "::server:" in token else token


class K3sInstall(FactBase[dict[str, Any]]):
    """
    Returns what is installed of k3s on a host, read in one command whether k3s is there or not:
    its version, its units' states, and whether a server has a cluster token, as the SHA-256
    of the token's secret (`token_secret`): the token itself never leaves the host.

    .. code:: python

        {
            "version": "v1.33.4+k3s1",  # or None: not installed
            "units": {"k3s.service": "active", "k3s-agent.service": "inactive"},
            "token_sha256": "9f86d0...",  # or None: no server/token (no cluster here yet)
            "token_file": True,  # the node's own token file (config.yaml's token-file) is there
        }
    """

    @override
    def command(self) -> str:
        units = " ".join(UNITS)
        # sed: the first line, less its `K10<hash>::server:` prefix when it has one
        return (
            "export LC_ALL=C; "
            'v=$(k3s --version 2>/dev/null | head -n1); echo "version ${v:--}"; '
            f'for u in {units}; do echo "unit $u $(systemctl is-active $u 2>/dev/null)"; done; '
            f"if [ -f {SERVER_TOKEN} ]; then echo \"token $(sed '1s/^.*::server://;q' "
            f"{SERVER_TOKEN} | tr -d '\\n' | sha256sum | cut -d' ' -f1)\"; "
            "else echo 'token -'; fi; "
            f"if [ -s {TOKEN_FILE} ]; then echo 'token-file yes'; else echo 'token-file -'; fi"
        )

    @override
    def process(self, output: list[str]) -> dict[str, Any]:
        result: dict[str, Any] = {
            "version": None,
            "units": {},
            "token_sha256": None,
            "token_file": False,
        }
        for line in output:
            kind, _, rest = line.partition(" ")
            if kind == "version" and rest != "-":
                match = VERSION_RE.match(rest)
                if not match:
                    raise FactProcessError(f"not k3s --version output: {rest!r}")
                result["version"] = match.group(1)
            elif kind == "unit":
                name, _, active = rest.partition(" ")
                result["units"][name] = active.strip() or "unknown"
            elif kind == "token" and rest != "-":
                result["token_sha256"] = rest.strip()
            elif kind == "token-file":
                result["token_file"] = rest.strip() == "yes"
        return result
