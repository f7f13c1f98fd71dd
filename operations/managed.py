"""Operations over a role's declared state (`DesiredState`), read once per host.

Every operation here compares what the role declares with its state, read in one command
for the whole host (`DesiredState.state`, `read_together`), and yields commands only for what
differs: `files`, `directories`, `packages`, `account`, `binaries`, then `sweep`, which
removes what the role wrote and no longer declares (a tunnel's `<id>.json` after a switch
to a token) and rewrites its record. A state that could not be read, or a host another run
holds, is refused, never guessed at. Each operation plans every change and reports it
(`--diff`) before it yields its first command: pyinfra's change detection looks at that one.

Beside them, private to this package: the declared state, its read and the host's record
(`_desired`), the deploy lock taken in that read (`_lock`), what `--diff` says (`_diff`), and
the commands that put a file or binary in place (`_shell`). Roles import the declared
state's types from here (`__all__`) with the operations, so they never reach into a private
module, and one import line gives a role both what it declares and what acts on it.
"""

from __future__ import annotations

import json

from pyinfra import host
from pyinfra.api import OperationValueError, QuoteString, StringCommand, operation

from operations import _diff, _shell
from operations._desired import (
    RECORD_DIR,
    DesiredState,
    ManagedBinary,
    ManagedDirectory,
    ManagedFile,
    changes,
    differs,
    directory_differs,
    read_together,
    record_paths,
)
from operations.failure import first_time, refuse

__all__ = [
    "RECORD_DIR",
    "DesiredState",
    "ManagedBinary",
    "ManagedDirectory",
    "ManagedFile",
    "account",
    "binaries",
    "directories",
    "files",
    "packages",
    "read_together",
    "sweep",
]


@operation()
def files(desired: DesiredState, paths: list[str] | None = None):
    """
    Make the role's files (or the named ones) exactly what it declares.

    + desired: the role's DesiredState, whose state was read in one fact
    + paths: only these of its files (default: all)

    Content is compared by SHA-256; owner and mode are fixed in place when only they
    differ. A file with `validate` is checked (e.g. `visudo -cf {path}`) before it
    replaces the old one, which is left untouched if the check fails. Every change is
    planned (and, with --diff, shown) before the first command.
    """
    if desired.unreadable():
        yield from refuse(desired.unreadable_message())
        return
    wanted = desired.files if paths is None else [desired.file(p) for p in paths]
    plan, refusal = changes(desired, wanted, "file", differs)
    if refusal:
        yield from refuse(refusal)
        return
    if not plan:
        host.noop(f"{len(wanted)} file(s) of {desired} are up to date")
        return
    for managed, current in plan:
        _diff.report(desired, managed, current)
    for managed, current in plan:
        owes = desired.owing(managed.path)
        if current is None or current.sha256 != managed.sha256:
            yield from _shell.replace_commands(managed, owes)
        else:
            owner = f"{managed.user}:{managed.group}"
            yield StringCommand(*_shell.owe(owes), "chown", owner, QuoteString(managed.path))
            yield StringCommand("chmod", managed.mode, QuoteString(managed.path))


@operation()
def directories(desired: DesiredState):
    """
    Make the role's directories exist with their owner and mode.

    + desired: the role's DesiredState
    """
    if desired.unreadable():
        yield from refuse(desired.unreadable_message())
        return
    plan, refusal = changes(desired, desired.directories, "directory", directory_differs)
    if refusal:
        yield from refuse(refusal)
        return
    if not plan:
        host.noop(f"{len(desired.directories)} director(ies) of {desired} are in place")
        return
    owner = "{0.user}:{0.group} {1}"
    for managed, current in plan:
        wanted = owner.format(managed, managed.mode.zfill(4))
        if current is None:
            _diff.log_once(managed.path, f"{managed.path}: directory created ({wanted})")
        else:
            was = owner.format(current, current.mode)
            _diff.log_once(managed.path, f"{managed.path}: owner and mode {was} become {wanted}")
    for managed, current in plan:
        if current is None:
            yield StringCommand(
                "install",
                "-d",
                "-m",
                managed.mode,
                "-o",
                managed.user,
                "-g",
                managed.group,
                QuoteString(managed.path),
            )
        else:
            yield StringCommand(
                "chown", f"{managed.user}:{managed.group}", QuoteString(managed.path)
            )
            yield StringCommand("chmod", managed.mode, QuoteString(managed.path))


@operation()
def packages(desired: DesiredState, names: list[str] | None = None):
    """
    Install the role's Debian packages that are missing (never upgrades or removes).

    + desired: the role's DesiredState
    + names: only these of its packages (default: all)
    """
    if desired.unreadable():
        yield from refuse(desired.unreadable_message())
        return
    installed = desired.state()["packages"]
    wanted = desired.packages if names is None else names
    missing = [name for name in wanted if not installed.get(name)]
    if not missing:
        host.noop(f"{len(wanted)} package(s) of {desired} are installed")
        return
    env = "DEBIAN_FRONTEND=noninteractive"
    yield StringCommand(env, "apt-get", "update", "-qq")
    yield StringCommand(env, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing)


@operation()
def account(desired: DesiredState, user: str, shell: str = "/bin/bash", system: bool = False):
    """
    Make sure an account exists (never removed or modified once there).

    + desired: the role's DesiredState (its users include `user`)
    + user: the account name
    + shell: the login shell for a new login account
    + system: a system account for a service: no home, no login shell
    """
    if user not in desired.users:
        raise OperationValueError(f"{user} is not in manifest {desired}")
    if desired.unreadable():
        yield from refuse(desired.unreadable_message())
        return
    current = desired.state()["users"].get(user)
    if current is None and system:
        yield StringCommand(
            "useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            user,
        )
    elif current is None:
        yield StringCommand("useradd", "--create-home", "--shell", shell, user)
    else:
        host.noop(f"account {user} exists (uid {current.uid}, home {current.home})")


@operation()
def binaries(desired: DesiredState, keep_previous: bool = False):
    """
    Install the role's pinned binaries whose SHA-256 differs from the pin.

    + desired: the role's DesiredState
    + keep_previous: keep the replaced binary beside it as ``<path>.previous`` (a hard link,
      made just before the rename), so a service that is unhealthy on the new one can be
      put back on it (`services.binary_service`)

    The download lands beside the target and is checked before it is used; on a mismatch
    it is deleted, the installed binary stays as it was, and the run fails naming both
    hashes. Replacing is a rename, so a running service never sees a partial file.
    """
    if desired.unreadable():
        yield from refuse(desired.unreadable_message())
        return
    current = desired.state()["paths"]
    arch = desired.state()["arch"]
    plan = []
    for binary in desired.binaries:
        url, sha256 = binary.pin(arch)
        now = current.get(binary.path)
        if now is None or now.sha256 != sha256:
            plan.append((binary, url, sha256, "install"))
        elif now.mode != binary.mode.zfill(4):
            plan.append((binary, url, sha256, "chmod"))
    if not plan:
        host.noop(f"{len(desired.binaries)} binar(ies) of {desired} match their pins")
        return
    for binary, url, sha256, action in plan:
        if action == "chmod":
            _diff.log_once(binary.path, f"{binary.path}: mode becomes {binary.mode.zfill(4)}")
        else:
            _diff.log_once(
                binary.path,
                f"{binary.path}: {binary.version} for {arch} installed from {url} "
                f"(SHA-256 {sha256[:16]}...)",
            )
    for binary, url, sha256, action in plan:
        if action == "chmod":
            yield StringCommand("chmod", binary.mode, QuoteString(binary.path))
        else:
            owes = desired.owing(binary.path)
            yield from _shell.download_commands(
                binary, url, sha256, keep_previous=keep_previous, owes=owes
            )


@operation()
def sweep(desired: DesiredState):
    """
    Remove what this role wrote and no longer wants, then record what it manages now.

    + desired: the role's DesiredState (run after its files, directories and binaries)

    Only paths in the host's record (`DesiredState.record_path`) that the role no longer
    declares are removed (`DesiredState.unwanted`): a credential of an old shape, a retired
    model's files. Directories go only when empty. The record is rewritten last, so a
    run that fails before it removes the same paths next time.
    """
    if desired.unreadable():
        yield from refuse(desired.unreadable_message())
        return
    unwanted = desired.unwanted()
    directories = set(record_paths(desired.state().get("record"))["directories"])
    gone_files = [p for p in unwanted if p not in directories]
    gone_directories = [p for p in unwanted if p in directories]
    record = ManagedFile(
        desired.record_path,
        (json.dumps(desired.declared(), indent=1, sort_keys=True) + "\n").encode(),
    )
    current = desired.state().get("record")
    if not unwanted and current == record.content:
        host.noop(f"nothing {desired} wrote is unwanted; its record is up to date")
        return
    for path in gone_files:
        if first_time("sweep", path):
            host.log(f"{path}: no longer wanted, removed")
    for path in gone_directories:
        if first_time("sweep", path):
            host.log(f"{path}: directory no longer wanted, removed if empty")
    for run in _shell.chunks(gone_files):
        yield StringCommand("rm", "-f", "--", *(QuoteString(p) for p in run))
    for run in _shell.chunks(gone_directories):
        words: list = []
        for path in run:  # deepest first, each only if it is (still) a directory
            words += ["if", "[", "-d", QuoteString(path), "];", "then", "rmdir"]
            words += ["--ignore-fail-on-non-empty", "--", QuoteString(path), ";", "fi;"]
        yield StringCommand(*words)
    if current != record.content:
        yield StringCommand("install", "-d", "-m", "0755", RECORD_DIR)
        yield from _shell.replace_commands(record)
