"""The base every role needs: the operators' account, its sudo rule, base packages.

Files the base wrote and no longer declares are swept; the account's authorized_keys is
shared with its owner, so it is never removed. In it the deploy adds the keys of
`admin_ssh_keys` and removes those it declared before and declares no more; a key it never
declared (one an operator added by hand) is left alone. What it declared is recorded on the
host (`keys_record`), one `type base64` per key: a key is known by its key material, so
a hand edit of its line (comment, options, order) does not make the deploy lose track of it,
and no marker in the file can be edited away. A declared key that was already there is
the deploy's from then on (it is in `admin_ssh_keys`): removing it from there removes it.

The sudoers rule is checked by `visudo -c` before it is installed: a broken file in
/etc/sudoers.d locks every operator out of sudo.
"""

from __future__ import annotations

import re

from oceanid.model import HostPlan
from operations import managed
from operations.managed import RECORD_DIR, DesiredState, ManagedDirectory, ManagedFile

HEADER = "# Managed by oceanid-deploys (deploys/base); local edits are overwritten.\n"
# A key in an authorized_keys line (after any options): its type and its base64 material,
# which starts with the length of the type's name (so "AAAA").
KEY = re.compile(
    r"(?:^|\s)((?:ssh|ecdsa|sk-ssh|sk-ecdsa)-\S+)\s+(AAAA[A-Za-z0-9+/]*={0,3})(?=\s|$)"
)


def keys_record(user: str) -> str:
    """Where the host records the keys the deploy declared in `user`'s authorized_keys."""
    return f"{RECORD_DIR}/authorized-keys.{user}"


def key_of(line: str) -> str | None:
    """`type base64` of the key on an authorized_keys line; None for a comment or blank."""
    found = None if line.lstrip().startswith("#") else KEY.search(line)
    return f"{found[1]} {found[2]}" if found else None


def declare(plan: HostPlan) -> DesiredState:
    """The base's DesiredState, declared whole, for the host's one read."""
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
    # read even with no keys declared: the keys declared before may have to go
    read = [f"{home}/.ssh/authorized_keys", keys_record(user)]
    if settings.admin_ssh_keys:
        # the record of the declared keys (`keys_record`) lives in RECORD_DIR, which a fresh
        # host does not have before the files are written
        directories.append(ManagedDirectory(RECORD_DIR, "0755"))
        directories.append(ManagedDirectory(f"{home}/.ssh", "0700", user, user))
    return DesiredState(
        name="base",
        files=files,
        directories=directories,
        packages=list(settings.base_packages),
        users=[user],
        read=read,
    )


def authorized_keys(plan: HostPlan, base: DesiredState) -> list[ManagedFile]:
    """The account's authorized_keys and the record of the keys declared, as they must be.

    Keys declared before (in the record) and declared no more are removed, every line that
    holds one; declared keys that are missing are added; every other line stays as it is.
    The file comes before the record, so a run stopped between them removes the same keys
    next time. With no keys declared and none recorded, neither file is touched; with none
    declared any more, the record is not declared, and `sweep` removes it after the file.
    """
    settings = plan.settings
    user = settings.admin_user
    path = f"/home/{user}/.ssh/authorized_keys"
    contents = base.state()["contents"]
    current = (contents.get(path) or b"").decode(errors="replace")
    record = (contents.get(keys_record(user)) or b"").decode(errors="replace")
    declared = {key_of(key): key.strip() for key in settings.admin_ssh_keys}
    gone = {line.strip() for line in record.splitlines() if line.strip()} - set(declared)
    lines = [line for line in current.splitlines() if line.strip()]
    kept = [line for line in lines if key_of(line) not in gone]
    present = {key_of(line) for line in kept}
    kept += [key for name, key in declared.items() if name not in present]
    files = []
    if declared or len(kept) != len(lines):
        content = ("\n".join(kept) + "\n").encode() if kept else b""
        files.append(ManagedFile(path, content, "0600", user, user, shared=True))
    if declared:
        listed = "".join(f"{name}\n" for name in sorted(declared))
        files.append(ManagedFile(keys_record(user), listed.encode()))
    return files


def deploy(plan: HostPlan, base: DesiredState) -> None:
    """The base, from this host's `declare` (read with the host's other roles)."""
    base.files += authorized_keys(plan, base)
    managed.packages(name="Base packages", desired=base)
    managed.account(
        name=f"Operators' account {plan.settings.admin_user}",
        desired=base,
        user=plan.settings.admin_user,
    )
    managed.directories(name="Base directories", desired=base)
    managed.files(name="Sudo rule and SSH keys", desired=base)
    managed.sweep(name="Base files no longer wanted", desired=base)
