"""`/etc/rancher/k3s/config.yaml` for a server or an agent, built as data and dumped with PyYAML.

The old stack kept every flag in the unit and passed `node-role.kubernetes.io/*` labels that
the kubelet refuses. Here the unit only says `k3s server` or `k3s agent`; everything else is
in this file, so a change shows in `--dry --diff` as a change of one file; only the node's
labels and taints are beside it, in config.yaml.d (`node_labels`: their change restarts
nothing). The token is never in it: `token-file` names the 0600 file that holds it.

k3s reads the file with a YAML 1.1 parser, where an unquoted `0600` is an octal number (384);
PyYAML's dumper resolves scalars the same way and therefore quotes the mode string.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal
from urllib.parse import urlsplit

import yaml

from oceanid.node_labels import check_label, check_taint

CONFIG = "/etc/rancher/k3s/config.yaml"
TOKEN_FILE = "/etc/rancher/k3s/token"
# A server's agent secret (`agent-token-file`): what agents join with, never servers.
AGENT_TOKEN_FILE = "/etc/rancher/k3s/agent-token"
# k3s reads config.yaml, then config.yaml.d/*.yaml in name order (pkg/configfilearg); the node's
# labels and taints live in a file of their own there, which is not among k3s's restart inputs
# (`node_labels`).
DROP_IN_DIR = "/etc/rancher/k3s/config.yaml.d"
LABELS_FILE = f"{DROP_IN_DIR}/50-oceanid-node-labels.yaml"
# A server's etcd snapshots to the backups' object store: the S3 keys live only in this 0600
# file, never on k3s's command line or in config.yaml (`etcd_snapshots`).
ETCD_S3_FILE = f"{DROP_IN_DIR}/50-etcd-s3.yaml"
ETCD_S3_FOLDER = "k3s-etcd"
HEADER = "# Managed by oceanid-deploys (deploys/k3s); local edits are overwritten.\n"

# Bundled components the cluster does not use: Cloudflare tunnels bring traffic in, not
# k3s's ingress controller or its host-port load balancer.
DISABLED_COMPONENTS = ("traefik", "servicelb")
# The labels and taints' grammar and the kubelet's rule live with the settings that check them
# (oceanid/node_labels.py); this file only writes what they let through.


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


def node_labels(labels: Mapping[str, str] | None, taints: Sequence[str] = ()) -> dict:
    """
    The `node-label` and `node-taint` keys for one node (its LABELS_FILE), checked.

    + labels: node labels the kubelet accepts at registration (`registration_labels`)
    + taints: node taints, ``key[=value]:Effect``

    What k3s does with them (k3s-io/k3s pkg/agent/run.go, the pinned v1.33): `node-label` is
    patched onto the node each time k3s starts (`configureNode` -> `updateMutableLabels`, which
    adds or overwrites, never removes); `node-taint` becomes the kubelet's
    `--register-with-taints`, applied only when the node first registers. Both are in the file
    so a node that registers (again) gets them from the start; a change of them restarts
    nothing, since the API step (`operations.k3s.node_labels`) sets the running node itself.
    """
    labels = dict(labels or {})
    for key, value in labels.items():
        check_label(key, value)
    for taint in taints:
        check_taint(taint)
    document: dict = {}
    if labels:
        document["node-label"] = [f"{key}={value}" for key, value in sorted(labels.items())]
    if taints:
        document["node-taint"] = list(taints)
    return document


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
    node_external_ip: str | None = None,
    flannel_iface: str | None = None,
    flannel_backend: str | None = None,
    labels: Mapping[str, str] | None = None,
    taints: Sequence[str] = (),
    token_file: str | None = TOKEN_FILE,
    agent_token_file: str | None = None,
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
    + node_external_ip: a public address the node has besides node_ip (k3s adds it to the
      node's addresses and, on a server, to the API's certificate)
    + flannel_iface: the interface pod traffic between nodes uses, when not the default
    + flannel_backend: how pod traffic crosses between nodes (``wireguard-native``: encrypted);
      a server key only: agents take the backend from the server when they start
    + labels: node labels; k3s patches them onto the node each time it starts (`node_labels`)
    + taints: node taints, ``key[=value]:Effect``; applied when the node first registers
    + token_file: the 0600 file holding the cluster token; None on a first server without
      a token of ours (k3s then generates one, which later nodes are given)
    + agent_token_file: a server's 0600 file holding the agent secret (``agent-token-file``):
      k3s then admits agents with it and no longer with the server token
    + cluster_init: the first server starts the embedded etcd cluster
    + join: a later server joins the cluster through this endpoint (``server:``)
    """
    host = endpoint_host(endpoint)
    registration = node_labels(labels, taints)

    document: dict = {}
    if role == "server":
        document["write-kubeconfig-mode"] = "0600"
        document["tls-san"] = list(dict.fromkeys([node_name, address, host, "127.0.0.1"]))
        document["disable"] = list(DISABLED_COMPONENTS)
        # Secrets encrypted at rest in the datastore (pkg/cli/cmds/server.go's bool flag;
        # k3s makes the AES-CBC key, keeping `identity` to read what was stored before).
        document["secrets-encryption"] = True
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
    if agent_token_file is not None:
        if role != "server":
            raise ValueError("agent-token-file is a k3s server key; agents have no such flag")
        document["agent-token-file"] = agent_token_file
    document["node-name"] = node_name
    if node_ip:
        document["node-ip"] = node_ip
    if node_external_ip:
        document["node-external-ip"] = node_external_ip
    if flannel_iface:
        document["flannel-iface"] = flannel_iface
    if flannel_backend is not None:
        if role != "server":
            raise ValueError("flannel-backend is a k3s server key; agents take it from the server")
        document["flannel-backend"] = flannel_backend
    document.update(registration)
    return document


def etcd_snapshots(
    *, endpoint: str, bucket: str, access_key: str, secret_key: str, schedule: str, retention: int
) -> dict:
    """
    ETCD_S3_FILE's keys: k3s's own scheduled etcd snapshots, each uploaded to the store.

    + endpoint: the store's URL (ESC backupS3Endpoint), `https://host[:port]`; k3s takes the
      host alone (`etcd-s3-endpoint`, default s3.amazonaws.com) and plain HTTP only with
      `etcd-s3-insecure`
    + bucket, access_key, secret_key: ESC backupS3Bucket, backupS3AccessKeyId,
      backupS3SecretAccessKey
    + schedule: `etcd-snapshot-schedule-cron` (k3s's default 0 */12 * * *)
    + retention: `etcd-snapshot-retention`, the snapshots kept, locally and in the store

    The names are k3s's flags (pkg/cli/cmds/server.go: etcd-snapshot-schedule-cron,
    etcd-snapshot-retention, etcd-s3, etcd-s3-endpoint, etcd-s3-access-key,
    etcd-s3-secret-key, etcd-s3-bucket, etcd-s3-region, etcd-s3-folder, etcd-s3-insecure);
    each is a server flag, which an agent refuses. The region is R2's `auto`.
    """
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("backupS3Endpoint: must be an http(s) URL such as https://host")
    document: dict = {
        "etcd-snapshot-schedule-cron": schedule,
        "etcd-snapshot-retention": retention,
        "etcd-s3": True,
        "etcd-s3-endpoint": parts.netloc,
        "etcd-s3-bucket": bucket,
        "etcd-s3-region": "auto",
        "etcd-s3-folder": ETCD_S3_FOLDER,
        "etcd-s3-access-key": access_key,
        "etcd-s3-secret-key": secret_key,
    }
    if parts.scheme == "http":
        document["etcd-s3-insecure"] = True
    return document


def dump(document: dict) -> str:
    """The file's text: the header, then the document in block style, keys in our order."""
    return HEADER + yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


def agent_note(flannel_backend: str) -> str:
    """A comment line for an agent's config.yaml naming the servers' flannel backend.

    An agent has no flannel-backend key: it takes the server's when it starts (k3s
    pkg/agent/config/config.go, ``FlannelBackend: controlConfig.FlannelBackend``), so after a
    change on the servers an agent would keep the old backend until it restarts. With the
    backend named here, the change changes the agent's file too, which restarts it.
    """
    return f"# flannel-backend (set on the servers, read from them at start): {flannel_backend}\n"
