"""Operations over a role's declared state, read once through `facts.managed.ManagedState`.

A role builds one `Manifest` (its files, directories, packages, accounts); every
operation here compares the manifest with the state read in that single fact and
yields commands only for what differs. Files are replaced atomically: uploaded into a
private (0700) staging folder in the SSH user's home, copied beside the target with a
077 umask, validated, given their owner and mode, then renamed over the target, so no
reader ever sees a half-written or briefly world-readable file.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass, field
from io import BytesIO

from pyinfra import host, logger, state
from pyinfra.api import (
    FileUploadCommand,
    OperationValueError,
    QuoteString,
    StringCommand,
    operation,
)
from pyinfra.operations.util.files import generate_color_diff

from facts.managed import ManagedState, PathState
from operations.failure import refuse

STAGING = ".oceanid-staging"


@dataclass(frozen=True)
class ManagedFile:
    """A file the deploy owns outright. `secret` files never have their content shown."""

    path: str
    content: bytes = field(repr=False)
    mode: str = "0644"
    user: str = "root"
    group: str = "root"
    secret: bool = False
    validate: str | None = None  # a command run on the new file before it replaces the old

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    def __str__(self) -> str:
        return self.path


@dataclass(frozen=True)
class ManagedDirectory:
    path: str
    mode: str = "0755"
    user: str = "root"
    group: str = "root"

    def __str__(self) -> str:
        return self.path


@dataclass(frozen=True)
class ManagedBinary:
    """A pinned download: fetched beside its target, verified by SHA-256, then renamed.

    `url` is a template with `{version}` and `{arch}`; `sha256` maps Debian architectures
    to the pinned hash, resolved against the host's architecture from the role's fact.
    """

    path: str
    url: str
    version: str
    sha256: dict[str, str]
    mode: str = "0755"

    def __str__(self) -> str:
        return self.path

    def pin(self, arch: str | None) -> tuple[str, str]:
        """(url, sha256) for `arch`; an architecture without a pin is an error."""
        if arch not in self.sha256:
            raise OperationValueError(
                f"{self.path}: no SHA-256 pinned for architecture {arch}; "
                f"pinned: {', '.join(sorted(self.sha256))}"
            )
        return self.url.format(version=self.version, arch=arch), self.sha256[arch]


@dataclass
class Manifest:
    """Everything one role manages on a host, so its state is read in one command."""

    name: str
    files: list[ManagedFile] = field(default_factory=list)
    binaries: list[ManagedBinary] = field(default_factory=list)
    directories: list[ManagedDirectory] = field(default_factory=list)
    packages: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    read: list[str] = field(default_factory=list)
    units: list[str] = field(default_factory=list)
    trees: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return self.name

    def fact_args(self) -> dict[str, tuple[str, ...]]:
        read = list(self.read)
        if state.config.DIFF:  # --diff shows real diffs: read the old content of what we own
            read += [f.path for f in self.files if not f.secret and f.path not in read]
        return {
            "files": tuple(
                dict.fromkeys(
                    [d.path for d in self.directories]
                    + [f.path for f in self.files]
                    + [b.path for b in self.binaries]
                    + read
                )
            ),
            "packages": tuple(self.packages),
            "users": tuple(self.users),
            "read": tuple(read),
            "units": tuple(self.units),
            "trees": tuple(self.trees),
        }

    def state(self) -> dict:
        """The role's state on the current host, read once per pyinfra run."""
        args = self.fact_args()
        key = (host.name, self.name, repr(sorted(args.items())))
        if key not in _STATE_CACHE:
            _STATE_CACHE[key] = host.get_fact(ManagedState, **args)
        return _STATE_CACHE[key]

    def will_change(self, paths: list[str]) -> bool:
        """Whether the operations over this manifest will change any of `paths`.

        Decided from the state read before anything runs, so a restart shown by `--dry` is
        the restart that happens, and a service restarts only when what it reads changes.
        """
        current = self.state()["paths"]
        for managed in self.files:
            if managed.path in paths:
                now = current.get(managed.path)
                if now is None or now.sha256 != managed.sha256:
                    return True
                if _attributes_differ(now, managed.mode, managed.user, managed.group):
                    return True
        for binary in self.binaries:
            if binary.path in paths:
                now = current.get(binary.path)
                _, sha256 = binary.pin(self.state()["arch"])
                if now is None or now.sha256 != sha256 or now.mode != binary.mode.zfill(4):
                    return True
        return False

    def file(self, path: str) -> ManagedFile:
        for managed in self.files:
            if managed.path == path:
                return managed
        raise OperationValueError(f"{path} is not in manifest {self.name}")


_STATE_CACHE: dict[tuple, dict] = {}


def _attributes_differ(current: PathState, mode: str, user: str, group: str) -> bool:
    return (current.mode, current.user, current.group) != (mode.zfill(4), user, group)


def _show_diff(managed: ManagedFile, manifest: Manifest, current: PathState | None) -> None:
    if not state.config.DIFF:
        return
    if managed.secret:
        host.log(
            f"{managed.path}: secret content {'changes' if current else 'created'} (not shown)"
        )
        return
    old = manifest.state()["contents"].get(managed.path) or b""
    host.log(f"{managed.path}: {'changes' if current else 'created'}")
    for line in generate_color_diff(
        old.decode(errors="replace").splitlines(),
        managed.content.decode(errors="replace").splitlines(),
    ):
        logger.info(f"{host.print_prefix}  {line}")


def _replace_commands(managed: ManagedFile):
    staged = f"{STAGING}/{managed.sha256[:16]}"
    new = f"{managed.path}.oceanid-new"
    yield StringCommand("mkdir", "-p", "-m", "0700", STAGING, _sudo=False)
    yield FileUploadCommand(BytesIO(managed.content), staged, _sudo=False)
    steps = [
        StringCommand("umask", "077"),
        StringCommand("cp", staged, QuoteString(new)),
    ]
    if managed.validate:
        steps.append(StringCommand(managed.validate.format(path=shlex.quote(new))))
    steps += [
        StringCommand("chown", f"{managed.user}:{managed.group}", QuoteString(new)),
        StringCommand("chmod", managed.mode, QuoteString(new)),
        StringCommand("mv", "-f", QuoteString(new), QuoteString(managed.path)),
    ]
    joined: list = []
    for step in steps:
        if joined:
            joined.append("&&")
        joined.append(step)
    yield StringCommand(
        "(",
        *joined,
        ")",
        "||",
        "{",
        "rm",
        "-f",
        QuoteString(new),
        ";",
        "rm",
        "-f",
        staged,
        ";",
        "exit",
        "1",
        ";",
        "}",
    )
    yield StringCommand("rm", "-f", staged, _sudo=False)


@operation()
def files(manifest: Manifest, paths: list[str] | None = None):
    """
    Make the manifest's files (or the named ones) exactly what the manifest says.

    + manifest: the role's Manifest, whose state was read in one fact
    + paths: only these of the manifest's files (default: all)

    Content is compared by SHA-256; owner and mode are fixed in place when only they
    differ. A file with `validate` is checked (e.g. `visudo -cf {path}`) before it
    replaces the old one, which is left untouched if the check fails.
    """
    wanted = manifest.files if paths is None else [manifest.file(p) for p in paths]
    current_paths = manifest.state()["paths"]
    unchanged = 0
    for managed in wanted:
        current = current_paths.get(managed.path)
        if current is not None and current.kind != "file":
            yield from refuse(
                f"{managed.path} exists but is a {current.kind}, not a file; "
                "move it away, the deploy will not replace it"
            )
            return
        if current is None or current.sha256 != managed.sha256:
            _show_diff(managed, manifest, current)
            yield from _replace_commands(managed)
        elif _attributes_differ(current, managed.mode, managed.user, managed.group):
            yield StringCommand(
                "chown", f"{managed.user}:{managed.group}", QuoteString(managed.path)
            )
            yield StringCommand("chmod", managed.mode, QuoteString(managed.path))
        else:
            unchanged += 1
    if unchanged == len(wanted):
        host.noop(f"{len(wanted)} file(s) of {manifest} are up to date")


@operation()
def directories(manifest: Manifest):
    """
    Make the manifest's directories exist with their owner and mode.

    + manifest: the role's Manifest
    """
    current_paths = manifest.state()["paths"]
    changed = False
    for managed in manifest.directories:
        current = current_paths.get(managed.path)
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
            changed = True
        elif current.kind != "directory":
            yield from refuse(
                f"{managed.path} exists but is a {current.kind}, not a directory; "
                "move it away, the deploy will not replace it"
            )
            return
        elif _attributes_differ(current, managed.mode, managed.user, managed.group):
            yield StringCommand(
                "chown", f"{managed.user}:{managed.group}", QuoteString(managed.path)
            )
            yield StringCommand("chmod", managed.mode, QuoteString(managed.path))
            changed = True
    if not changed:
        host.noop(f"{len(manifest.directories)} director(ies) of {manifest} are in place")


@operation()
def packages(manifest: Manifest, names: list[str] | None = None):
    """
    Install the manifest's Debian packages that are missing (never upgrades or removes).

    + manifest: the role's Manifest
    + names: only these of the manifest's packages (default: all)
    """
    installed = manifest.state()["packages"]
    wanted = manifest.packages if names is None else names
    missing = [name for name in wanted if not installed.get(name)]
    if not missing:
        host.noop(f"{len(wanted)} package(s) of {manifest} are installed")
        return
    env = "DEBIAN_FRONTEND=noninteractive"
    yield StringCommand(env, "apt-get", "update", "-qq")
    yield StringCommand(env, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing)


@operation()
def account(manifest: Manifest, user: str, shell: str = "/bin/bash", system: bool = False):
    """
    Make sure an account exists (never removed or modified once there).

    + manifest: the role's Manifest (its users include `user`)
    + user: the account name
    + shell: the login shell for a new login account
    + system: a system account for a service: no home, no login shell
    """
    if user not in manifest.users:
        raise OperationValueError(f"{user} is not in manifest {manifest}")
    current = manifest.state()["users"].get(user)
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
def binaries(manifest: Manifest):
    """
    Install the manifest's pinned binaries whose SHA-256 differs from the pin.

    + manifest: the role's Manifest

    The download lands beside the target and is checked before it is used; on a mismatch
    it is deleted, the installed binary stays as it was, and the run fails naming both
    hashes. Replacing is a rename, so a running service never sees a partial file.
    """
    current = manifest.state()["paths"]
    changed = False
    for binary in manifest.binaries:
        url, sha256 = binary.pin(manifest.state()["arch"])
        now = current.get(binary.path)
        if now is not None and now.sha256 == sha256:
            if now.mode != binary.mode.zfill(4):
                yield StringCommand("chmod", binary.mode, QuoteString(binary.path))
                changed = True
            continue
        changed = True
        new = QuoteString(f"{binary.path}.oceanid-new")
        yield StringCommand(
            "curl",
            "-fsSL",
            "--retry",
            "3",
            "--proto",
            "=https,http",
            "-o",
            new,
            QuoteString(url),
            "||",
            "{",
            "rm",
            "-f",
            new,
            ";",
            "echo",
            QuoteString(f"download failed: {url}"),
            ">&2",
            ";",
            "exit",
            "1",
            ";",
            "}",
        )
        yield StringCommand(
            "got=$(sha256sum",
            new,
            "|",
            "cut",
            "-d' '",
            "-f1);",
            "if",
            "[",
            '"$got"',
            "!=",
            sha256,
            "];",
            "then",
            "rm",
            "-f",
            new,
            ";",
            "echo",
            QuoteString(f"SHA-256 mismatch for {url}: expected {sha256},"),
            '"got $got; the installed binary was left in place"',
            ">&2;",
            "exit",
            "1;",
            "fi",
        )
        yield StringCommand(
            "chmod", binary.mode, new, "&&", "mv", "-f", new, QuoteString(binary.path)
        )
    if not changed:
        host.noop(f"{len(manifest.binaries)} binar(ies) of {manifest} match their pins")
