"""The base every role needs: the operators' account, its sudo rule, base packages.

Files the base wrote and no longer declares are swept; the account's authorized_keys is
shared with its owner (keys are only added), so it is never removed.

The sudoers rule is checked by `visudo -c` before it is installed: a broken file in
/etc/sudoers.d locks every operator out of sudo.
"""

from __future__ import annotations

from oceanid.preflight import HostPlan
from operations import managed
from operations.managed import ManagedDirectory, ManagedFile, Manifest

HEADER = "# Managed by oceanid-deploys (deploys/base); local edits are overwritten.\n"


def manifest(plan: HostPlan) -> Manifest:
    settings = plan.settings
    user = settings.admin_user
    home = f"/home/{user}"
    files = [
        ManagedFile(
            f"/etc/sudoers.d/{user}",
            (HEADER + f"{user} ALL=(ALL:ALL) NOPASSWD: ALL\n").encode(),
            mode="0440",
            validate="visudo -cq -f {path}",
        )
    ]
    directories = []
    read = []
    if settings.admin_ssh_keys:
        directories.append(ManagedDirectory(f"{home}/.ssh", "0700", user, user))
        read.append(f"{home}/.ssh/authorized_keys")
    return Manifest(
        name="base",
        files=files,
        directories=directories,
        packages=list(settings.base_packages),
        users=[user],
        read=read,
    )


def authorized_keys(plan: HostPlan, base: Manifest) -> ManagedFile | None:
    """The operators' keys added to whatever keys the account already has."""
    settings = plan.settings
    if not settings.admin_ssh_keys:
        return None
    path = f"/home/{settings.admin_user}/.ssh/authorized_keys"
    current = (base.state()["contents"].get(path) or b"").decode()
    lines = [line for line in current.splitlines() if line.strip()]
    present = {" ".join(line.split()[:2]) for line in lines}
    for key in settings.admin_ssh_keys:
        if " ".join(key.split()[:2]) not in present:
            lines.append(key.strip())
    user = settings.admin_user
    content = ("\n".join(lines) + "\n").encode()
    return ManagedFile(path, content, "0600", user, user, shared=True)


def deploy(plan: HostPlan, base: Manifest | None = None) -> Manifest:
    """The base, from `base` (this host's `manifest`, when the site declared it first)."""
    base = base or manifest(plan)
    keys = authorized_keys(plan, base)
    if keys is not None:
        base.files.append(keys)
    managed.packages(name="Base packages", manifest=base)
    managed.account(
        name=f"Operators' account {plan.settings.admin_user}",
        manifest=base,
        user=plan.settings.admin_user,
    )
    managed.directories(name="Base directories", manifest=base)
    managed.files(name="Sudo rule and SSH keys", manifest=base)
    managed.sweep(name="Base files no longer wanted", manifest=base)
    return base
