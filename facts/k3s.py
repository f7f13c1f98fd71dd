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


class K3sTaint(TypedDict):
    key: str
    value: str | None
    effect: str


class K3sNode(TypedDict):
    name: str
    ready: bool
    labels: dict[str, str]
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
