"""`make kubeconfig`: the server's kubeconfig, rewritten for the SSH tunnel, in cluster/.

k3s writes `/etc/rancher/k3s/k3s.yaml` (0600, root) for its own API at https://127.0.0.1:6443
with one cluster, context and user all named `default`. The operator reaches the API through
`make tunnel` (127.0.0.1:16443), so the copy points there and its names become `oceanid`, which
keeps it apart from other clusters' `default` when kubeconfigs are merged. The server's
certificate names 127.0.0.1 (k3s always adds it; config.yaml's tls-san lists it too).

The file holds the cluster admin's client key: it is read over SSH into memory, written 0600
beside its final name and renamed, and never printed.

    python -m deploys.k3s.kubeconfig [--inventory INVENTORY] [HOST] [--server URL] [--output PATH]

The server is reached as pyinfra reaches it: its ssh_hostname, user, port, key and SSH config
from the inventory (default inventory.py; `make kubeconfig INVENTORY=inventories/lab.py`),
through oceanid.sshtarget; HOST defaults to the inventory's first k3s server.

Environment: SSH, the ssh command and any options (default `ssh`), as for the tunnel script.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from oceanid.sshtarget import TargetError, target

SERVER_KUBECONFIG = "/etc/rancher/k3s/k3s.yaml"
TUNNEL_SERVER = "https://127.0.0.1:16443"
NAME = "oceanid"
REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "cluster" / "kubeconfig.yaml"


class KubeconfigError(Exception):
    """The server's kubeconfig could not be read or is not the shape k3s writes."""


def _single(document: dict, key: str) -> dict:
    entries = document.get(key)
    if not isinstance(entries, list) or len(entries) != 1 or not isinstance(entries[0], dict):
        raise KubeconfigError(
            f"the server's kubeconfig must have exactly one entry in {key!r}, as k3s writes it"
        )
    return entries[0]


def for_tunnel(text: str, server: str = TUNNEL_SERVER, name: str = NAME) -> dict:
    """
    k3s's kubeconfig with its one cluster, context and user renamed and the server replaced.

    + text: the server's k3s.yaml
    + server: the API URL the operator's machine uses
    + name: the cluster's, context's and user's new name (and the current context)
    """
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise KubeconfigError(f"the server's kubeconfig is not YAML: {error}") from None
    if not isinstance(document, dict) or document.get("kind") != "Config":
        raise KubeconfigError("the server's kubeconfig is not a kubeconfig (kind: Config)")
    cluster, context, user = (_single(document, key) for key in ("clusters", "contexts", "users"))
    if not isinstance(cluster.get("cluster"), dict) or not isinstance(context.get("context"), dict):
        raise KubeconfigError("the server's kubeconfig has a cluster or context without its body")
    cluster["name"] = context["name"] = user["name"] = name
    cluster["cluster"]["server"] = server
    context["context"].update(cluster=name, user=name)
    document["current-context"] = name
    return document


def fetch(host: str, ssh: str, destination: list[str] | None = None) -> str:
    """The server's k3s.yaml, read as root over SSH; the text stays in memory.
    `destination`: OpenSSH's options and destination for `host` (oceanid.sshtarget), default
    `host` itself."""
    command = [*shlex.split(ssh), *(destination or [host]), "sudo", "-n", "cat", SERVER_KUBECONFIG]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise KubeconfigError(
            f"could not read {SERVER_KUBECONFIG} on {host} ({reason}); is k3s installed there "
            "and may your SSH user run sudo without a password?"
        )
    return result.stdout


def write_private(path: Path, text: str) -> None:
    """Write 0600 beside `path`, then rename: the key is never in a readable or partial file."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(partial, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make kubeconfig", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--inventory",
        help="reach the server as pyinfra does with this inventory (make's INVENTORY)",
    )
    parser.add_argument("host", nargs="?", help="a k3s server (default: the inventory's first)")
    parser.add_argument("--server", default=TUNNEL_SERVER, help="the API URL to write")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="where to write it")
    args = parser.parse_args(argv)
    try:
        destination = target(args.inventory, args.host) if args.inventory else None
        host = args.host or (destination[-1] if destination else "tethys")
        text = fetch(host, os.environ.get("SSH", "ssh"), destination)
        document = for_tunnel(text, args.server)
    except (KubeconfigError, TargetError) as error:
        print(f"kubeconfig: {error}", file=sys.stderr)
        return 1
    write_private(args.output, yaml.safe_dump(document, sort_keys=False))
    print(
        f"wrote {args.output} (0600): context {NAME!r}, server {args.server}; open the tunnel "
        f"with `make tunnel` (the same INVENTORY), then: KUBECONFIG={args.output} kubectl get nodes"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
