"""What the bench's reference deploy (lab/reference_deploy.py) runs: the site's declared
state as calls of pyinfra's own built-in operations, the deploy an operator would otherwise
write.

It is built at run time from the same declarations deploys/site.py reads (`declared`), so
it never drifts from them, and it is data (`reference_ops`: operation name and keyword
arguments), so a test can check that it covers every declared path, package, account, unit
and binary once, with the same owner and mode, and nothing else.

The settings each operation type gets are the ones our operations apply:
packages are installed without recommends and never upgraded (`managed.packages`); an
account gets the shell, home and kind (login or system) `managed.account` gives a new one,
and its home's owner is not enforced; the operators' keys are added to their authorized_keys
(0600, in a 0700 ~/.ssh), others kept; directories and files get the declared owner and
mode, binaries the pinned SHA-256 and the declared mode; a unit is kept enabled and running,
or stopped and disabled where the site stops it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from io import BytesIO

from pyinfra.operations import apt, files, server, systemd

from deploys import base, gpu_host, k3s
from deploys.gpu_host import cloudflared_node
from oceanid.model import HostPlan, Site
from operations.managed import DesiredState

LOGIN_SHELL = "/bin/bash"  # `managed.account`'s shell for a new login account
SYSTEM_SHELL = "/usr/sbin/nologin"  # and for a new system (service) account
OPERATIONS = {
    "apt.packages": apt.packages,
    "server.user": server.user,
    "server.user_authorized_keys": server.user_authorized_keys,
    "files.directory": files.directory,
    "files.put": files.put,
    "files.download": files.download,
    "systemd.service": systemd.service,
}


def declared(plan: HostPlan, site: Site) -> list[DesiredState]:
    """This host's desired states, declared as deploys/site.py declares them (nothing is read)."""
    states = [base.declare(plan)]
    if plan.gpu is not None:
        states.append(gpu_host.declare(plan).desired)
    node = k3s.declare(plan, site)
    if node is not None:
        states += node.states()
    return states


def host_ops(plan: HostPlan, states: list[DesiredState], arch: str | None):
    """`reference_ops` for this host: its operators' account and keys, and the units the
    site keeps stopped here (the tunnel connector, while the cluster runs that tunnel)."""
    stopped = set()
    if plan.gpu is not None and cloudflared_node.in_cluster(plan):
        stopped.add(cloudflared_node.UNIT)
    return reference_ops(
        states,
        arch,
        login=plan.settings.admin_user,
        keys=plan.settings.admin_ssh_keys,
        stopped=stopped,
    )


def reference_ops(
    states: list[DesiredState],
    arch: str | None,
    *,
    login: str | None = None,
    keys: Sequence[str] = (),
    stopped: Collection[str] = (),
) -> list[tuple[str, dict]]:
    """
    The built-in operations that manage what `states` declare, as (operation, kwargs).

    + states: the host's desired states, from `declared`
    + arch: the host's Debian architecture (`dpkg --print-architecture`), for the pins
    + login: the operators' login account (`managed.account`'s default); every other
      declared account is a system account (`system=True`, as Triton's)
    + keys: the operators' SSH keys, merged into `login`'s authorized_keys
    + stopped: declared units kept stopped and disabled

    Per desired state: its packages, accounts, directories, files, binaries, then units. What a
    desired state only reads (`read`, `trees`, `probes`) is not state to manage and is left out;
    the operators' SSH keys, which the base merges into their authorized_keys at deploy
    time, are pyinfra's `server.user_authorized_keys`. A file's content is passed as a
    BytesIO, never as text an operation's name or a log line could carry.
    """
    ops: list[tuple[str, dict]] = []
    for desired in states:
        role = desired.name
        if desired.packages:
            ops.append(
                (
                    "apt.packages",
                    {
                        "name": f"{role}: packages {', '.join(desired.packages)} installed",
                        "packages": list(desired.packages),
                        "no_recommends": True,
                    },
                )
            )
        for user in desired.users:
            is_login = user == login
            ops.append(
                (
                    "server.user",
                    {
                        "name": f"{role}: account {user} exists",
                        "user": user,
                        "shell": LOGIN_SHELL if is_login else SYSTEM_SHELL,
                        "create_home": is_login,
                        "system": not is_login,
                        "ensure_home": False,
                    },
                )
            )
            if is_login and keys:
                ops.append(
                    (
                        "server.user_authorized_keys",
                        {
                            "name": f"{role}: the operators' SSH keys in {user}'s authorized_keys",
                            "user": user,
                            "public_keys": list(keys),
                            # where deploys/base keeps them: the account's home is /home/<user>
                            "authorized_key_directory": f"/home/{user}/.ssh",
                        },
                    )
                )
        for directory in desired.directories:
            ops.append(
                (
                    "files.directory",
                    {
                        "name": f"{role}: directory {directory.path}",
                        "path": directory.path,
                        "user": directory.user,
                        "group": directory.group,
                        "mode": directory.mode,
                    },
                )
            )
        for file in desired.files:
            secret = " (secret)" if file.secret else ""
            ops.append(
                (
                    "files.put",
                    {
                        "name": f"{role}: file {file.path}{secret}",
                        "src": BytesIO(file.content),
                        "dest": file.path,
                        "user": file.user,
                        "group": file.group,
                        "mode": file.mode,
                    },
                )
            )
        for binary in desired.binaries:
            url, sha256 = binary.pin(arch)
            ops.append(
                (
                    "files.download",
                    {
                        "name": f"{role}: {binary.path} {binary.version} (pinned SHA-256)",
                        "src": url,
                        "dest": binary.path,
                        "sha256sum": sha256,
                        "mode": binary.mode,
                    },
                )
            )
        for unit in desired.units:
            running = unit not in stopped
            ops.append(
                (
                    "systemd.service",
                    {
                        "name": f"{role}: {unit} "
                        + ("enabled and running" if running else "stopped and disabled"),
                        "service": unit,
                        "running": running,
                        "enabled": running,
                    },
                )
            )
    return ops
