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
from typing import Any, TypedDict, TypeVar

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError
from typing_extensions import override

# `k3s --version` prints e.g. "k3s version v1.33.4+k3s1 (148243c4)" then "go version go1.24.5".
VERSION_RE = re.compile(r"^k3s version (v\S+)")

# Printed instead of the JSON when kubectl gets no answer from the API (server stopped, starting).
API_UNAVAILABLE_MARKER = "##k3s-api-unavailable"
OUR_ANNOTATIONS = "oceanid.cluster/"

T = TypeVar("T")


class K3sApiFact(FactBase[T]):
    """What the server's API answers to ``k3s kubectl get KUBECTL_GET``, parsed by `parse`;
    ``None`` when the API does not answer (k3s absent, stopped, starting).

    A stopped API is a state to report, not a failed host: kubectl's error goes to stderr, the
    marker to stdout. Each subclass's KUBECTL_GET bounds the wait (``--request-timeout``) for
    a server that accepts but does not answer.
    """

    KUBECTL_GET = ""

    @override
    def requires_command(self) -> str:
        return "k3s"

    @override
    def command(self) -> str:
        return f"k3s kubectl get {self.KUBECTL_GET} || echo '{API_UNAVAILABLE_MARKER}'"

    @override
    def process(self, output: list[str]) -> T | None:
        if output == [API_UNAVAILABLE_MARKER]:
            return None
        return self.parse(output)

    def parse(self, output: list[str]) -> T:
        raise NotImplementedError


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


class K3sNodes(K3sApiFact[list[K3sNode]]):
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

    KUBECTL_GET = "nodes -o json --request-timeout=10s"

    @override
    def parse(self, output: list[str]) -> list[K3sNode]:
        try:
            document = json.loads("\n".join(output))
            return [_node(item) for item in document["items"]]
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise FactProcessError(
                f"not `kubectl get nodes -o json` output ({error!r}): {output[:1]!r}"
            ) from error


SERVER_TOKEN = "/var/lib/rancher/k3s/server/token"
# What k3s writes beside it: with `agent-token` set, the agent token (`K10<CA hash>::node:<secret>`,
# a file of its own, 0600); without, a symlink to `token` (k3s pkg/server/server.go printTokens).
SERVER_AGENT_TOKEN = "/var/lib/rancher/k3s/server/agent-token"
TOKEN_FILE = "/etc/rancher/k3s/token"  # a node's own copy (deploys/k3s/config.py TOKEN_FILE)
# A server's agent secret, config.yaml's `agent-token-file` (deploys/k3s/config.py AGENT_TOKEN_FILE)
AGENT_TOKEN_FILE = "/etc/rancher/k3s/agent-token"
UNITS = ("k3s.service", "k3s-agent.service")
# A full agent token, as k3s writes it to server/agent-token (clientaccess FormatTokenBytes)
AGENT_TOKEN_RE = re.compile(r"K10[0-9a-f]{64}::node:\S+")
# A server's datastore (k3s's data dir): kine's SQLite file, or embedded etcd's folder (k3s-io/k3s
# pkg/cluster/managed.go assignManagedDriver: an etcd found on disk is used; with cluster-init and
# none, k3s starts etcd, and converts a SQLite datastore it finds there to it).
DATASTORE_DIR = "/var/lib/rancher/k3s/server/db"


def token_secret(token: str) -> str:
    """The secret of a k3s token: what follows ``K10<CA hash>::<user>:`` in the full form (the
    server's ``::server:``, an agent token's ``::node:``), else all of it, as k3s's
    clientaccess parseToken reads a token that does not start with ``K10``."""
    token = token.strip()
    if token.startswith("K10") and "::" in token:
        credentials = token.split("::", 1)[1]
        user, colon, secret = credentials.partition(":")
        return secret if colon else credentials
    return token


def _sha256_of_secret(path: str, kind: str) -> str:
    """Shell: a line `<kind> <form> <sha256 of its secret>` for `path`, `<kind> -` when it is
    missing or empty. The form is `node` (a full agent token), `server` (a full server token)
    or `bare`; the secret is hashed on the host and never printed."""
    return (
        f"if [ -s {path} ]; then t=$(head -n1 {path} | tr -d '\\r\\n'); "
        'case "$t" in K10?*::node:?*) f=node;; K10?*::server:?*) f=server;; *) f=bare;; esac; '
        'case "$t" in K10*::*:*) t=${t#*::*:};; esac; '
        f'echo "{kind} $f $(printf %s "$t" | sha256sum | cut -d\' \' -f1)"; '
        f"else echo '{kind} -'; fi"
    )


class K3sInstall(FactBase[dict[str, Any]]):
    """
    Returns what is installed of k3s on a host, read in one command whether k3s is there or not:
    its version, its units' states, whether a server has a cluster token, as the SHA-256 of the
    token's secret (`token_secret`), and the node's own token files: the kind of token each
    holds and the SHA-256 of its secret. No token ever leaves the host.

    .. code:: python

        {
            "version": "v1.33.4+k3s1",  # or None: not installed
            "units": {"k3s.service": "active", "k3s-agent.service": "inactive"},
            "token_sha256": "9f86d0...",  # or None: no server/token (no cluster here yet)
            "token_file": True,  # the node's own token file (config.yaml's token-file) is there
            # what it holds: "node" (a full agent token, K10<CA hash>::node:<secret>), "server"
            # (a full server token), "bare" (a secret alone), or None (no file)
            "token_file_form": "node",
            "token_file_sha256": "2c26b4...",  # of its secret, or None
            "agent_token_file_sha256": "fcde2b...",  # a server's agent-token-file, or None
            # a server's datastore in its data dir (server/db): kine's SQLite file state.db,
            # embedded etcd's folder etcd/ (both False on an agent, or before k3s first ran)
            "sqlite_datastore": False,
            "etcd_datastore": True,
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
            f"{_sha256_of_secret(TOKEN_FILE, 'token-file')}; "
            f"{_sha256_of_secret(AGENT_TOKEN_FILE, 'agent-token-file')}; "
            f'echo "datastore $([ -e {DATASTORE_DIR}/state.db ] && echo sqlite || echo -)'
            f' $([ -d {DATASTORE_DIR}/etcd ] && echo etcd || echo -)"'
        )

    @override
    def process(self, output: list[str]) -> dict[str, Any]:
        result: dict[str, Any] = {
            "version": None,
            "units": {},
            "token_sha256": None,
            "token_file": False,
            "token_file_form": None,
            "token_file_sha256": None,
            "agent_token_file_sha256": None,
            "sqlite_datastore": False,
            "etcd_datastore": False,
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
            elif kind == "token-file" and rest.strip() != "-":
                form, _, digest = rest.strip().partition(" ")
                result["token_file"] = True
                result["token_file_form"] = form
                result["token_file_sha256"] = digest or None
            elif kind == "agent-token-file" and rest.strip() != "-":
                result["agent_token_file_sha256"] = rest.strip().partition(" ")[2] or None
            elif kind == "datastore":
                found = rest.split()
                result["sqlite_datastore"] = "sqlite" in found
                result["etcd_datastore"] = "etcd" in found
        return result


# The Addons k3s's deploy controller keeps in kube-system, one per auto-deploy file (k3s-io/k3s
# pkg/deploy/controller.go): "name checksum" a line.
ADDONS_JSONPATH = '{range .items[*]}{.metadata.name}{" "}{.spec.checksum}{"\\n"}{end}'
ADDON_LINE = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?( [0-9a-f]{64})?")


class K3sAddons(K3sApiFact[dict[str, str]]):
    """
    Returns the Addons k3s keeps for its auto-deploy manifests, as name -> ``spec.checksum``
    (the SHA-256 of the content it last applied; "" before its first successful apply), or
    ``None`` when the API does not answer (k3s absent, stopped, starting).

    .. code:: python

        {"oceanid-label-studio": "9f86d0...", "runtimes": "4e07a1...", "coredns": "..."}
    """

    KUBECTL_GET = (
        f"addons.k3s.cattle.io -n kube-system --request-timeout=10s -o jsonpath='{ADDONS_JSONPATH}'"
    )

    @override
    def parse(self, output: list[str]) -> dict[str, str]:
        found = {}
        for line in filter(None, (line.strip() for line in output)):
            if not ADDON_LINE.fullmatch(line):
                raise FactProcessError(f"not an Addon's name and checksum: {line[:80]!r}")
            name, _, checksum = line.partition(" ")
            found[name] = checksum
        return found
