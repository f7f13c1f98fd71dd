"""`/etc/rancher/k3s/config.yaml` for a server or an agent, built as data and dumped with PyYAML.

The old stack kept every flag in the unit and passed `node-role.kubernetes.io/*` labels that
the kubelet refuses. Here the unit only says `k3s server` or `k3s agent`; everything else is
in this file, so a change shows in `--dry --diff` as a change of one file. The token is never
in it: `token-file` names the 0600 file that holds it.

k3s reads the file with a YAML 1.1 parser, where an unquoted `0600` is an octal number (384);
PyYAML's dumper resolves scalars the same way and therefore quotes the mode string.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Literal
from urllib.parse import urlsplit

import yaml

CONFIG = "/etc/rancher/k3s/config.yaml"
TOKEN_FILE = "/etc/rancher/k3s/token"
HEADER = "# Managed by oceanid-deploys (deploys/k3s); local edits are overwritten.\n"

# Bundled components the cluster does not use: Cloudflare tunnels bring traffic in, not
# k3s's ingress controller or its host-port load balancer.
DISABLED_COMPONENTS = ("traefik", "servicelb")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")

# The kubelet's own rule for --node-labels (what k3s's node-label becomes): in the
# kubernetes.io and k8s.io namespaces it sets only these labels and these prefixes. Anything
# else there (node-role.kubernetes.io/* above all) makes the kubelet refuse to start.
KUBELET_LABELS = frozenset(
    {
        "beta.kubernetes.io/arch",
        "beta.kubernetes.io/instance-type",
        "beta.kubernetes.io/os",
        "failure-domain.beta.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
        "kubernetes.io/arch",
        "kubernetes.io/hostname",
        "kubernetes.io/os",
        "node.kubernetes.io/instance-type",
        "topology.kubernetes.io/region",
        "topology.kubernetes.io/zone",
    }
)
KUBELET_LABEL_PREFIXES = ("kubelet.kubernetes.io", "node.kubernetes.io")

_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_PREFIX = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
KEY_RE = re.compile(rf"({_PREFIX}/)?{_NAME}")
VALUE_RE = re.compile(rf"({_NAME})?")
TAINT_RE = re.compile(r"(?P<key>[^=:]+)(=(?P<value>[^:]*))?:(?P<effect>\w+)")


def _check_key(key: str, what: str) -> None:
    prefix = key.rpartition("/")[0]
    if not KEY_RE.fullmatch(key) or len(prefix) > 253:
        raise ValueError(
            f"{what} key {key!r} is not a Kubernetes label key ([prefix/]name, name at most "
            "63 characters of letters, digits, '-', '_', '.')"
        )


def _check_value(value: str, what: str) -> None:
    if not VALUE_RE.fullmatch(value):
        raise ValueError(
            f"{what} value {value!r} is not a Kubernetes label value (at most 63 letters, "
            "digits, '-', '_', '.', starting and ending with a letter or digit)"
        )


def check_api_label(key: str, value: str) -> None:
    """Refuse a node label that is not valid Kubernetes (what the API itself refuses)."""
    _check_key(key, "node label")
    _check_value(value, f"node label {key}")


def registration_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """The labels the kubelet accepts at registration (`check_label`); the others, such as
    ``node-role.kubernetes.io/*``, are set only through the API after the node joined."""
    accepted = {}
    for key, value in labels.items():
        try:
            check_label(key, value)
        except ValueError:
            continue
        accepted[key] = value
    return accepted


def check_label(key: str, value: str) -> None:
    """Refuse a node label that is not valid Kubernetes or that the kubelet would refuse."""
    _check_key(key, "node label")
    _check_value(value, f"node label {key}")
    prefix = key.rpartition("/")[0]
    if prefix.startswith("node-role.kubernetes.io"):
        raise ValueError(
            f"node label {key!r}: the kubelet refuses node-role.kubernetes.io/* labels at "
            "registration; they are set on the node through the API after it joins"
        )
    restricted = any(
        prefix == domain or prefix.endswith(f".{domain}") for domain in ("kubernetes.io", "k8s.io")
    )
    allowed = key in KUBELET_LABELS or any(
        prefix == allowed or prefix.endswith(f".{allowed}") for allowed in KUBELET_LABEL_PREFIXES
    )
    if restricted and not allowed:
        raise ValueError(
            f"node label {key!r}: the kubelet refuses labels in the kubernetes.io and k8s.io "
            "namespaces except kubelet.kubernetes.io/*, node.kubernetes.io/* and its own list; "
            "use a prefix of our own such as oceanid.cluster/"
        )


def check_taint(taint: str) -> None:
    """Refuse a taint that is not ``key[=value]:Effect`` with one of Kubernetes' effects."""
    match = TAINT_RE.fullmatch(taint)
    if not match:
        raise ValueError(f"node taint {taint!r} must be key[=value]:Effect")
    _check_key(match["key"], "node taint")
    _check_value(match["value"] or "", f"node taint {match['key']}")
    if match["effect"] not in TAINT_EFFECTS:
        raise ValueError(
            f"node taint {taint!r}: the effect must be one of {', '.join(TAINT_EFFECTS)}"
        )


def endpoint_host(endpoint: str) -> str:
    """The host of the control-plane endpoint ``https://host:port``; refuses anything else."""
    parts = urlsplit(endpoint)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "https" or not parts.hostname or not port or parts.path not in ("", "/"):
        raise ValueError(
            f"control-plane endpoint {endpoint!r} must be https://HOST:PORT (the address agents "
            "and the kubeconfig reach the API by)"
        )
    return parts.hostname


def config(
    role: Literal["server", "agent"],
    *,
    node_name: str,
    address: str,
    endpoint: str,
    node_ip: str | None = None,
    flannel_iface: str | None = None,
    labels: Mapping[str, str] | None = None,
    taints: Sequence[str] = (),
    token_file: str | None = TOKEN_FILE,
    cluster_init: bool = False,
    join: str | None = None,
) -> dict:
    """
    The config.yaml document for one node.

    + role: ``server`` (control plane) or ``agent``
    + node_name: the node's name in the cluster (the inventory name)
    + address: the address the host is reached by (a server's API is reached by it too)
    + endpoint: the control-plane endpoint, ``https://HOST:PORT``: agents join through it and
      the server's certificate must name its host
    + node_ip: the address the node advertises to the cluster, when not the default route's
    + flannel_iface: the interface pod traffic between nodes uses, when not the default
    + labels: node labels; k3s applies them only when the node first registers
    + taints: node taints, ``key[=value]:Effect``; also applied at first registration only
    + token_file: the 0600 file holding the cluster token; None on a first server without
      a token of ours (k3s then generates one, which later nodes are given)
    + cluster_init: the first server starts the embedded etcd cluster
    + join: a later server joins the cluster through this endpoint (``server:``)
    """
    host = endpoint_host(endpoint)
    labels = dict(labels or {})
    for key, value in labels.items():
        check_label(key, value)
    for taint in taints:
        check_taint(taint)

    document: dict = {}
    if role == "server":
        document["write-kubeconfig-mode"] = "0600"
        document["tls-san"] = list(dict.fromkeys([node_name, address, host, "127.0.0.1"]))
        document["disable"] = list(DISABLED_COMPONENTS)
        if cluster_init:
            document["cluster-init"] = True
        elif join:
            document["server"] = join
    elif role == "agent":
        document["server"] = endpoint
    else:
        raise ValueError(f"k3s role must be 'server' or 'agent', got {role!r}")
    if token_file is not None:
        document["token-file"] = token_file
    document["node-name"] = node_name
    if node_ip:
        document["node-ip"] = node_ip
    if flannel_iface:
        document["flannel-iface"] = flannel_iface
    if labels:
        document["node-label"] = [f"{key}={value}" for key, value in sorted(labels.items())]
    if taints:
        document["node-taint"] = list(taints)
    return document


def dump(document: dict) -> str:
    """The file's text: the header, then the document in block style, keys in our order."""
    return HEADER + yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
