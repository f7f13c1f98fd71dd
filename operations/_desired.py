"""What a role declares it manages on a host (`DesiredState`), and that state read once.

A role builds one `DesiredState` (its files, binaries, directories, packages, accounts, the
paths and probes it only reads); `state()` reads all of it on the current host in one
command (`facts.managed.ManagedState`), once per pyinfra run (`STATE_CACHE`), and takes the
host's deploy lock in the same command (operations._lock). A deploy file that declares every
role's state first reads them all in one command (`read_together`). The operations over it
are in operations.managed, which re-exports what a role needs from here.

Each role records on the host the paths it wrote (`DesiredState.record_path`, read in the
same fact), so `unwanted` can say what it wrote and no longer declares. A file or binary
that a unit reads (`DesiredState.reads`) owes the unit a restart when it is replaced
(`OWED_DIR`, `owing`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

from pyinfra import host, state
from pyinfra.api import OperationValueError

from facts.managed import (
    ManagedState,
    ManagedStates,
    PathState,
    empty_state,
    script,
    script_together,
)
from operations._diff import SALT, diff_text
from operations._lock import lock_args, locked
from operations.failure import fail_host

RECORD_DIR = "/var/lib/oceanid"
# Markers of restarts owed: `<unit>` is written in the command that replaces a file the unit
# reads, before the rename, and removed by the unit's next successful (re)start.
OWED_DIR = f"{RECORD_DIR}/owed"


@dataclass(frozen=True)
class ManagedFile:
    """A file the deploy owns outright. `secret` files never have their content shown.

    A `shared` file is one the deploy merges into (an account's authorized_keys): it is
    not recorded, so `sweep` never removes it when the deploy stops managing it.
    """

    path: str
    content: bytes = field(repr=False)
    mode: str = "0644"
    user: str = "root"
    group: str = "root"
    secret: bool = False
    validate: str | None = None  # a command run on the new file before it replaces the old
    shared: bool = False
    # for a secret file: (name, first line, end line) of each value, so --diff can name the
    # keys whose lines change (read back only as salted hashes), never their values
    line_keys: tuple[tuple[str, int, int], ...] = ()

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
class DesiredState:
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
    # name -> shell command whose output the role needs (another fact's command): read in
    # the same round trip as the rest, as `probe(name)`, not as one more fact
    probes: dict[str, str] = field(default_factory=dict)
    # unit -> the paths it reads, as `services.unit` declares them: a file or binary replaced
    # here leaves a marker for each of its units until that unit has restarted (`owing`)
    restarts: dict[str, list[str]] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.name

    def reads(self, unit: str, paths: list[str]) -> None:
        """Declare that `unit` reads `paths`: replacing one of them owes `unit` a restart."""
        self.restarts[unit] = list(dict.fromkeys([*self.restarts.get(unit, []), *paths]))

    def owing(self, path: str) -> list[str]:
        """The units that reading `path` makes owe a restart when it is replaced."""
        return sorted(unit for unit, paths in self.restarts.items() if path in paths)

    @property
    def record_path(self) -> str:
        """Where this role records the paths it manages on the host (not secret)."""
        slug = re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")
        return f"{RECORD_DIR}/{slug}.paths"

    def declared(self) -> dict[str, list[str]]:
        """The paths this role manages, as its record lists them (no shared files)."""
        files = {f.path for f in self.files if not f.shared}
        return {
            "files": sorted(files | {b.path for b in self.binaries}),
            "directories": sorted({d.path for d in self.directories}),
        }

    def fact_args(self) -> dict[str, tuple[str, ...]]:
        paths = [d.path for d in self.directories]
        paths += [f.path for f in self.files] + [b.path for b in self.binaries]
        return {
            "files": tuple(dict.fromkeys(paths + list(self.read))),
            "packages": tuple(self.packages),
            "users": tuple(self.users),
            "read": tuple(self.read),
            "units": tuple(self.units),
            "trees": tuple(self.trees),
        }

    def script_args(self) -> dict:
        """What the fact's script reads besides `fact_args`: the record of a role that
        writes paths, and with --diff the old text of the files it owns."""
        args: dict = {"lock": lock_args()}
        if self.units:
            args["owed"] = OWED_DIR
        if self.files or self.directories or self.binaries:
            args["record"] = self.record_path
        if self.probes:
            args["probes"] = tuple(sorted(self.probes.items()))
        if state.config.DIFF:
            args["peek"] = tuple(
                f.path
                for f in self.files
                if not f.secret and f.path not in self.read and diff_text(f.content) is not None
            )
            lines = tuple(f.path for f in self.files if f.secret and f.line_keys)
            if lines:
                args["lines"] = lines
                args["salt"] = SALT
        return args

    def _reading(self) -> tuple[tuple, dict, dict]:
        """(what its state is cached under, the fact's arguments, the script's other ones)."""
        args = self.fact_args()
        extra = self.script_args()
        return (host.name, self.name, repr(sorted({**args, **extra}.items()))), args, extra

    def state(self) -> dict:
        """The role's state on the current host, read once per pyinfra run (or together with
        the host's other roles, by `read_together`).

        A fact that fails (the command failed, its output was cut short) is one red line
        naming the host and the role; the host is failed while planning, and the role's
        operations refuse to run on it (`unreadable`), never acting on a state not read.
        """
        key, args, extra = self._reading()
        if key not in STATE_CACHE:
            stdin = script(**args, **extra)
            value = host.get_fact(ManagedState, _stdin=stdin, _ignore_errors=True, **args)
            if value is None:
                fail_host(self.unreadable_message())
                value = {**empty_state(), "unreadable": True}
            STATE_CACHE[key] = locked(value)
        return STATE_CACHE[key]

    def probe(self, name: str) -> list[str]:
        """The output lines of the probe `name` (none where the state could not be read)."""
        return self.state().get("probes", {}).get(name, [])

    def unreadable(self) -> bool:
        return bool(self.state().get("unreadable"))

    def unreadable_message(self) -> str:
        refusal = STATE_CACHE.get(self._reading()[0], {}).get("refusal")
        if refusal:  # the host is another run's (`locked`)
            return refusal
        return (
            f"{host.name}: could not read the state of {self.name} (the command's output is "
            "above); nothing of it was changed on this host"
        )

    def unwanted(self) -> list[str]:
        """The paths the host's record lists that this role no longer declares.

        Files first, then directories deepest first, so removing them in order works. A
        path the record does not list is never here: what this role did not write, it
        does not remove.
        """
        recorded = record_paths(self.state().get("record"))
        declared = self.declared()
        wanted = set(declared["files"]) | set(declared["directories"])
        wanted |= {f.path for f in self.files}
        files = [p for p in recorded["files"] if p not in wanted]
        directories = [p for p in recorded["directories"] if p not in wanted]
        directories.sort(key=lambda p: (-p.count("/"), p))
        return sorted(files) + directories

    def will_change(self, paths: list[str]) -> bool:
        """Whether the operations over this state will change any of `paths`.

        Decided from the state read before anything runs, so a restart shown by `--dry` is
        the restart that happens, and a service restarts only when what it reads changes.
        """
        if self.unreadable():
            return False
        current = self.state()["paths"]
        for managed in self.files:
            if managed.path in paths:
                now = current.get(managed.path)
                if now is None or now.sha256 != managed.sha256:
                    return True
                if attributes_differ(now, managed.mode, managed.user, managed.group):
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


#: Each role's state on each host, read once per pyinfra run (a test's run clears it).
STATE_CACHE: dict[tuple, dict] = {}


def read_together(*states: DesiredState) -> None:
    """Read these roles' states on the current host in one command, for their `state()`.

    A deploy file that declares every role's state first, then calls this, reads the
    host in one round trip instead of one per role, one after the other. A state changed
    afterwards (another file declared) is read again by its own `state()`, never stale.
    """
    todo: dict[tuple, tuple[DesiredState, dict]] = {}
    for desired in states:
        key, args, extra = desired._reading()
        if key not in STATE_CACHE:
            todo.setdefault(key, (desired, {**args, **extra}))
    if len(todo) < 2:
        for desired, _ in todo.values():
            desired.state()
        return
    roles = [args for _, args in todo.values()]
    digest = hashlib.sha256(repr(list(todo)).encode()).hexdigest()
    values = host.get_fact(
        ManagedStates,
        _stdin=script_together(roles),
        _ignore_errors=True,
        roles=tuple(desired.name for desired, _ in todo.values()),
        digest=digest,
    )
    if values is None or len(values) != len(todo):
        names = ", ".join(desired.name for desired, _ in todo.values())
        fail_host(
            f"{host.name}: could not read the state of {names} (the command's output is "
            "above); nothing of them was changed on this host"
        )
        values = [{**empty_state(), "unreadable": True} for _ in todo]
    for key, value in zip(todo, values, strict=True):
        STATE_CACHE[key] = locked(value)


def record_paths(content: bytes | None) -> dict[str, list[str]]:
    """The paths a record lists; none when there is no record or it cannot be read (an
    unreadable record removes nothing)."""
    empty: dict[str, list[str]] = {"files": [], "directories": []}
    try:
        data = json.loads(content) if content else {}
    except ValueError:
        return empty
    if not isinstance(data, dict):
        return empty
    lists = {key: data.get(key) for key in empty}
    return {
        key: [p for p in value if isinstance(p, str) and p.startswith("/")]
        if isinstance(value, list)
        else []
        for key, value in lists.items()
    }


def differs(managed: ManagedFile, current: PathState) -> bool:
    """Whether the file on the host is not `managed`: its content, owner or mode."""
    return current.sha256 != managed.sha256 or attributes_differ(
        current, managed.mode, managed.user, managed.group
    )


def attributes_differ(current: PathState, mode: str, user: str, group: str) -> bool:
    """Whether a path's owner or mode on the host is not the one declared."""
    return (current.mode, current.user, current.group) != (mode.zfill(4), user, group)


def changes(desired: DesiredState, wanted: list, kind: str, differs) -> tuple[list, str | None]:
    """Each of `wanted` (files or directories) whose state differs (`differs(managed, current)`),
    with its current state; or, where a path holds something other than a `kind`, only the
    refusal (the deploy never replaces a directory by a file, nor the reverse)."""
    current_paths = desired.state()["paths"]
    plan = []
    for managed in wanted:
        current = current_paths.get(managed.path)
        if current is not None and current.kind != kind:
            return [], (
                f"{managed.path} exists but is a {current.kind}, not a {kind}; "
                "move it away, the deploy will not replace it"
            )
        if current is None or differs(managed, current):
            plan.append((managed, current))
    return plan, None


def directory_differs(managed: ManagedDirectory, current: PathState) -> bool:
    return attributes_differ(current, managed.mode, managed.user, managed.group)
