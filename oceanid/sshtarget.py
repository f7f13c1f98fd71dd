"""How pyinfra reaches a host of an inventory, as OpenSSH arguments: for the commands that run
`ssh` themselves (`make kubeconfig`, `make tunnel`), so they reach the host pyinfra reaches.

The inventory is loaded as the pyinfra CLI loads it (oceanid.preflight.load_inventory, its
group data included), and the host's connection data become the options pyinfra itself gives
OpenSSH when it calls it (``pyinfra/connectors/ssh.py``, the ``rsync`` connector method):
``-F ssh_config_file``, ``-o UserKnownHostsFile=``, ``-o StrictHostKeyChecking=``, ``-p
ssh_port``, ``-i ssh_key``, then ``[ssh_user@]ssh_hostname`` (the inventory name when there is
no ``ssh_hostname``). OpenSSH then reads the same SSH config pyinfra reads (the inventory's
``ssh_config_file``, else ``~/.ssh/config``) for what the data leave out: the lab's HostName,
User and IdentityFile, an operator's alias for `tethys`. No secret is in any of it: a key is a
path, and ``ssh_password`` is refused (OpenSSH takes no password argument, and one must never
be in a process's arguments).

    python -m oceanid.sshtarget INVENTORY [HOST]

prints the arguments, shell-quoted on one line (HOST: default the inventory's first k3s server).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shlex
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from oceanid.preflight import load_inventory
from oceanid.settings import short_name

SERVERS = "k3s_servers"


class TargetError(Exception):
    """The host is not in the inventory, or its data cannot be given to OpenSSH."""


def ssh_args(name: str, data: Mapping[str, Any]) -> list[str]:
    """
    OpenSSH's options and destination for a host with this pyinfra host data.

    + name: the host's name in the inventory (the destination when there is no ssh_hostname)
    + data: its pyinfra host data (``ssh_hostname``, ``ssh_user``, ``ssh_port``, ``ssh_key``,
      ``ssh_config_file``, ``ssh_known_hosts_file``, ``ssh_strict_host_key_checking``)
    """
    if data.get("ssh_password") or data.get("ssh_key_password"):
        raise TargetError(
            f"{name}: the inventory gives a password (ssh_password/ssh_key_password), which "
            "OpenSSH takes from no argument; use a key loaded in ssh-agent instead"
        )
    args: list[str] = []
    if data.get("ssh_config_file"):
        args += ["-F", str(data["ssh_config_file"])]
    if data.get("ssh_known_hosts_file"):
        args += ["-o", f"UserKnownHostsFile={data['ssh_known_hosts_file']}"]
    if data.get("ssh_strict_host_key_checking"):
        args += ["-o", f"StrictHostKeyChecking={data['ssh_strict_host_key_checking']}"]
    if data.get("ssh_port"):
        args += ["-p", str(int(data["ssh_port"]))]
    if data.get("ssh_key"):
        args += ["-i", str(data["ssh_key"])]
    hostname = str(data.get("ssh_hostname") or short_name(name))
    user = data.get("ssh_user")
    args.append(f"{user}@{hostname}" if user else hostname)
    return args


def target(inventory: str, host: str | None = None) -> list[str]:
    """`ssh_args` for `host` of the inventory file (default: its first k3s server)."""
    # pyinfra's inventory loading prints nothing we want on stdout (which carries the answer)
    with contextlib.redirect_stdout(io.StringIO()):
        hosts = list(load_inventory(inventory))
    if host is None:
        servers = [h for h in hosts if SERVERS in h.groups]
        if not servers:
            raise TargetError(f"{inventory} has no {SERVERS} group; name the host (HOST=...)")
        found = servers[0]
    else:
        matches = [h for h in hosts if host in (h.name, short_name(h.name))]
        if not matches:
            names = ", ".join(h.name for h in hosts) or "none"
            raise TargetError(
                f"no host {host!r} in {inventory} (its hosts: {names}); set HOST to one of them"
            )
        found = matches[0]
    return ssh_args(found.name, found.data.dict())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m oceanid.sshtarget", description=__doc__.split("\n")[0]
    )
    parser.add_argument("inventory", help="an inventory file (inventory.py, inventories/lab.py)")
    parser.add_argument("host", nargs="?", help="default: the inventory's first k3s server")
    args = parser.parse_args(argv)
    try:
        print(shlex.join(target(args.inventory, args.host)))
    except TargetError as error:
        print(f"ssh target: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
