"""Operations over a role's declared state, read once through `facts.managed.ManagedState`.

A role builds one `DesiredState` (its files, directories, packages, accounts); every operation
here compares the manifest with the state read in that single fact and yields commands only
for what differs. A deploy file that declares every role's manifest first reads them all in
one command (`read_together`). Files are replaced atomically: uploaded into a private (0700)
staging folder of this run's own in the SSH user's home, copied beside the target with a 077
umask, validated, given their owner and mode, then renamed over the target, so no reader ever
sees a half-written or briefly world-readable file.

That same state read takes the host's deploy lock (`lock_args`, `_locked`): a second run on a
host fails at once, naming the first. A file or binary that a unit reads (`DesiredState.reads`) is
renamed into place in the same command that marks the unit as owing a restart (`OWED_DIR`);
the unit's restart clears the mark, so a run killed in between leaves the restart to the next.

Each operation plans every change first, reports it (`--diff`: every file's diff, a
secret file by name only), then yields its commands: pyinfra's change detection takes
only the first command of an operation, so a report made just before each file's
commands would show the first file only.

Each role records on the host the paths it wrote (`DesiredState.record_path`, read in the
same fact); `sweep` removes what the record lists and the manifest no longer declares,
so a file of an old shape (a tunnel's `<id>.json` after a switch to a token) is gone in
the same run.
"""

from __future__ import annotations

import functools
import getpass
import hashlib
import json
import os
import re
import secrets
import shlex
import socket
import sys
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

from facts.managed import (
    PEEK_LIMIT,
    ManagedState,
    ManagedStates,
    PathState,
    empty_state,
    script,
    script_together,
)
from operations.failure import fail_host, first_time, refuse

STAGING = ".oceanid-staging"
RECORD_DIR = "/var/lib/oceanid"
# Markers of restarts owed: `<unit>` is written in the command that replaces a file the unit
# reads, before the rename, and removed by the unit's next successful (re)start.
OWED_DIR = f"{RECORD_DIR}/owed"
STAGING_MINUTES = 60  # a run's staging folder untouched this long is a killed run's
# The deploy lock: on tmpfs, so a reboot (which ends every run's connection) clears it too.
LOCK = "/run/oceanid/deploy.lock"
# Where the unit tests put it instead, so their runs on this machine (`@local`, and pyinfra run
# inside the test process, whose lock lasts as long as that process) never meet each other's
# lock, nor a real deploy's; never set for a real deploy.
LOCK_ENV = "OCEANID_TEST_DEPLOY_LOCK"
# This pyinfra run: names its lock and its staging folder, so two runs never share either.
RUN_ID = secrets.token_hex(8)
# curl gives up on a server that does not answer within CONNECT_TIMEOUT seconds, or that sends
# less than SLOW_BYTES a second for SLOW_SECONDS: a big download that keeps moving is never cut.
CONNECT_TIMEOUT = 30
SLOW_BYTES = 1024
SLOW_SECONDS = 60
ARGUMENT_BYTES = 64 * 1024  # split long removals into commands of about this size
# Salts the per-line hashes of secret files read back for --diff (facts.managed `lines`):
# fresh each run, so a logged hash of a short line cannot be looked up in a table.
_SALT = secrets.token_hex(16)


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
        """The paths this manifest manages, as its record lists them (no shared files)."""
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
                if not f.secret and f.path not in self.read and _text(f.content) is not None
            )
            lines = tuple(f.path for f in self.files if f.secret and f.line_keys)
            if lines:
                args["lines"] = lines
                args["salt"] = _SALT
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
        if key not in _STATE_CACHE:
            stdin = script(**args, **extra)
            value = host.get_fact(ManagedState, _stdin=stdin, _ignore_errors=True, **args)
            if value is None:
                fail_host(self.unreadable_message())
                value = {**empty_state(), "unreadable": True}
            _STATE_CACHE[key] = _locked(value)
        return _STATE_CACHE[key]

    def probe(self, name: str) -> list[str]:
        """The output lines of the probe `name` (none where the state could not be read)."""
        return self.state().get("probes", {}).get(name, [])

    def unreadable(self) -> bool:
        return bool(self.state().get("unreadable"))

    def unreadable_message(self) -> str:
        refusal = _STATE_CACHE.get(self._reading()[0], {}).get("refusal")
        if refusal:  # the host is another run's (`_locked`)
            return refusal
        return (
            f"{host.name}: could not read the state of {self.name} (the command's output is "
            "above); nothing of it was changed on this host"
        )

    def unwanted(self) -> list[str]:
        """The paths the host's record lists that this manifest no longer declares.

        Files first, then directories deepest first, so removing them in order works. A
        path the record does not list is never here: what this role did not write, it
        does not remove.
        """
        recorded = _record_paths(self.state().get("record"))
        declared = self.declared()
        wanted = set(declared["files"]) | set(declared["directories"])
        wanted |= {f.path for f in self.files}
        files = [p for p in recorded["files"] if p not in wanted]
        directories = [p for p in recorded["directories"] if p not in wanted]
        directories.sort(key=lambda p: (-p.count("/"), p))
        return sorted(files) + directories

    def will_change(self, paths: list[str]) -> bool:
        """Whether the operations over this manifest will change any of `paths`.

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


def read_together(*manifests: DesiredState) -> None:
    """Read these roles' states on the current host in one command, for their `state()`.

    A deploy file that declares every role's manifest first, then calls this, reads the
    host in one round trip instead of one per role, one after the other. A manifest changed
    afterwards (another file declared) is read again by its own `state()`, never stale.
    """
    todo: dict[tuple, tuple[DesiredState, dict]] = {}
    for manifest in manifests:
        key, args, extra = manifest._reading()
        if key not in _STATE_CACHE:
            todo.setdefault(key, (manifest, {**args, **extra}))
    if len(todo) < 2:
        for manifest, _ in todo.values():
            manifest.state()
        return
    roles = [args for _, args in todo.values()]
    digest = hashlib.sha256(repr(list(todo)).encode()).hexdigest()
    values = host.get_fact(
        ManagedStates,
        _stdin=script_together(roles),
        _ignore_errors=True,
        roles=tuple(manifest.name for manifest, _ in todo.values()),
        digest=digest,
    )
    if values is None or len(values) != len(todo):
        names = ", ".join(manifest.name for manifest, _ in todo.values())
        fail_host(
            f"{host.name}: could not read the state of {names} (the command's output is "
            "above); nothing of them was changed on this host"
        )
        values = [{**empty_state(), "unreadable": True} for _ in todo]
    for key, value in zip(todo, values, strict=True):
        _STATE_CACHE[key] = _locked(value)


def dry_run() -> bool:
    """Whether this is `pyinfra --dry`. pyinfra's state does not hold the flag, and click's
    context is not seen where deploy files run (a greenlet each), so it is read from the
    command line, which the CLI takes it from (click knows no abbreviation of it)."""
    return "pyinfra" in sys.argv[0] and "--dry" in sys.argv[1:]


@functools.cache
def _operator() -> str:
    """user@machine of whoever runs this deploy, as the lock names them."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def lock_args() -> tuple[str, ...]:
    """The deploy lock's arguments to the state read (`facts.managed._body`'s `lock`).

    The lock is taken in the state read itself, so a converge that changes nothing still
    costs one command. Its holder is the process on the host that holds this run's
    connection (sshd's, for pyinfra's SSH connector): the lock lasts while that connection
    does and needs no release command; a run killed, or ended, frees it with its connection.
    A dry run only looks: it writes nothing on the host.
    """
    take = "0" if dry_run() else "1"
    return (os.environ.get(LOCK_ENV) or LOCK, take, _operator(), str(os.getpid()), RUN_ID)


def _locked(value: dict) -> dict:
    """`value`, a host's state; refused (every operation on it fails) when another run holds
    the host's deploy lock, which is said in one line naming that run and how to clear it.

    A lock whose holder is gone (`took-stale`) is taken without a word: every run that ends
    leaves its lock so, there being no release command to pay for."""
    lock = value.get("lock") or {}
    status, who = lock.get("status"), lock.get("holder") or {}
    pid = (who.get("holder") or "?").split(" ")[0]  # the holder's process on the host
    named = (
        f"{who.get('who', 'an unknown operator')} (pyinfra pid {who.get('pid', '?')}, run "
        f"{who.get('run', '?')}, since {who.get('since', '?')})"
    )
    if status == "held":
        message = (
            f"{host.name}: another deploy is running here: {named}; nothing was changed on "
            f"{host.name}. Wait for it to end. If that run is gone and its connection hangs on, "
            f"end it on the host (sudo kill {pid}) or remove the lock (sudo rm -f {LOCK})"
        )
        fail_host(message)
        return {**empty_state(), "unreadable": True, "refusal": message}
    if status == "seen" and first_time("lock", per_operation=False):
        host.log(f"another deploy is running here: {named}; this dry run may show its changes")
    if status == "unlockable" and first_time("lock", per_operation=False):
        host.log(
            f"could not take the deploy lock ({LOCK}): no lasting process holds this "
            "connection, or the lock could not be written; this run is not locked"
        )
    return value


def _record_paths(content: bytes | None) -> dict[str, list[str]]:
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


def _text(content: bytes) -> str | None:
    """`content` as text to diff, or None for a binary or large file (no diff shown)."""
    if len(content) > PEEK_LIMIT or b"\0" in content:
        return None
    try:
        return content.decode()
    except UnicodeDecodeError:
        return None


def _changes(managed: ManagedFile, current: PathState) -> bool:
    return current.sha256 != managed.sha256 or _attributes_differ(
        current, managed.mode, managed.user, managed.group
    )


def _attributes_differ(current: PathState, mode: str, user: str, group: str) -> bool:
    return (current.mode, current.user, current.group) != (mode.zfill(4), user, group)


def _report(manifest: DesiredState, managed: ManagedFile, current: PathState | None) -> None:
    """With --diff, say what happens to `managed` (once per run, host and operation)."""
    if not state.config.DIFF or not first_time("plan", managed.path):
        return
    if current is not None and current.sha256 == managed.sha256:
        host.log(
            f"{managed.path}: owner and mode {current.user}:{current.group} {current.mode} "
            f"become {managed.user}:{managed.group} {managed.mode.zfill(4)}"
        )
        return
    verb = "changes" if current else "created"
    if managed.secret:
        old_hashes = manifest.state().get("line_hashes", {}).get(managed.path)
        keys = "" if current is None else secret_changes(managed, old_hashes)
        host.log(f"{managed.path}: secret content {verb} (not shown){keys}")
        return
    found = manifest.state()
    old = found["contents"].get(managed.path, found.get("peeks", {}).get(managed.path))
    old_text = "" if current is None else (None if old is None else _text(old))
    new_text = _text(managed.content)
    if old_text is None or new_text is None:
        host.log(f"{managed.path}: binary or large file {verb}")
        return
    host.log(f"{managed.path}: {verb}")
    for line in generate_color_diff(old_text.splitlines(), new_text.splitlines()):
        logger.info(f"{host.print_prefix}  {line}")


def _line_hash(line: str) -> str:
    return hashlib.sha256(f"{_SALT}\n{line}".encode()).hexdigest()


def secret_changes(managed: ManagedFile, old_hashes: list[str] | None) -> str:
    """`; keys: a changes, b changes` for the values of `managed` whose lines differ from
    the old file's (known only by salted line hashes): names, never a value."""
    if old_hashes is None or not managed.line_keys:
        return ""
    text = managed.content.decode()  # lines as the shell's `read` splits them: at \n only
    new = [_line_hash(line) for line in text.removesuffix("\n").split("\n")]
    old = set(old_hashes)
    changed = {index for index, digest in enumerate(new) if digest not in old}
    names = [key for key, first, end in managed.line_keys if changed & set(range(first, end))]
    words = [f"{name} changes" for name in names]
    gone = len(set(old_hashes) - set(new))
    if gone and not names:
        words.append(f"{gone} old line(s) gone (a key removed or renamed)")
    return f"; keys: {', '.join(words)}" if words else ""


def _log_once(what: str, message: str) -> None:
    """With --diff, name one planned change (once per run, host and operation)."""
    if state.config.DIFF and first_time("plan", what):
        host.log(message)


def _owe(units: list[str]) -> list:
    """Words that leave an owed-restart marker for each of `units` (`OWED_DIR`), joined by
    `&&` and ending in one, to go before the rename that replaces what they read."""
    if not units:
        return []
    markers = [QuoteString(f"{OWED_DIR}/{unit}") for unit in units]
    return ["mkdir", "-p", OWED_DIR, "&&", "touch", *markers, "&&"]


def _replace_commands(managed: ManagedFile, owes: tuple[str, ...] | list[str] = ()):
    """Stage, copy beside, check, own and rename; `owes`: units that read the file, marked
    as owing a restart in the same command as the rename (before it)."""
    run = f"{STAGING}/{RUN_ID}"
    staged = f"{run}/{managed.sha256[:16]}"
    new = f"{managed.path}.oceanid-new"
    # The folders' modes are fixed every time (mkdir -m does not touch an existing one). Each
    # run stages in a folder of its own, so two runs never remove each other's uploads; what
    # a killed run left there (its folder untouched for STAGING_MINUTES) is removed. The staged
    # file exists, empty and 0600, before the upload writes into it.
    yield StringCommand(
        "umask",
        "077",
        "&&",
        "mkdir",
        "-p",
        run,
        "&&",
        "chmod",
        "0700",
        STAGING,
        run,
        "&&",
        "find",
        STAGING,
        "-mindepth",
        "1",
        "-maxdepth",
        "1",
        "-mmin",
        f"+{STAGING_MINUTES}",
        "-exec",
        "rm",
        "-rf",
        "{}",
        "+",
        "&&",
        ":",
        ">",
        staged,
        _sudo=False,
    )
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
        StringCommand(*_owe(list(owes)), "mv", "-f", QuoteString(new), QuoteString(managed.path)),
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
        "-rf",
        run,
        ";",
        "exit",
        "1",
        ";",
        "}",
    )
    yield StringCommand("rm", "-rf", run, _sudo=False)


@operation()
def files(manifest: DesiredState, paths: list[str] | None = None):
    """
    Make the manifest's files (or the named ones) exactly what the manifest says.

    + manifest: the role's DesiredState, whose state was read in one fact
    + paths: only these of the manifest's files (default: all)

    Content is compared by SHA-256; owner and mode are fixed in place when only they
    differ. A file with `validate` is checked (e.g. `visudo -cf {path}`) before it
    replaces the old one, which is left untouched if the check fails. Every change is
    planned (and, with --diff, shown) before the first command.
    """
    if manifest.unreadable():
        yield from refuse(manifest.unreadable_message())
        return
    wanted = manifest.files if paths is None else [manifest.file(p) for p in paths]
    current_paths = manifest.state()["paths"]
    plan = []
    for managed in wanted:
        current = current_paths.get(managed.path)
        if current is not None and current.kind != "file":
            yield from refuse(
                f"{managed.path} exists but is a {current.kind}, not a file; "
                "move it away, the deploy will not replace it"
            )
            return
        if current is None or _changes(managed, current):
            plan.append((managed, current))
    if not plan:
        host.noop(f"{len(wanted)} file(s) of {manifest} are up to date")
        return
    for managed, current in plan:
        _report(manifest, managed, current)
    for managed, current in plan:
        owes = manifest.owing(managed.path)
        if current is None or current.sha256 != managed.sha256:
            yield from _replace_commands(managed, owes)
        else:
            owner = f"{managed.user}:{managed.group}"
            yield StringCommand(*_owe(owes), "chown", owner, QuoteString(managed.path))
            yield StringCommand("chmod", managed.mode, QuoteString(managed.path))


@operation()
def directories(manifest: DesiredState):
    """
    Make the manifest's directories exist with their owner and mode.

    + manifest: the role's DesiredState
    """
    if manifest.unreadable():
        yield from refuse(manifest.unreadable_message())
        return
    current_paths = manifest.state()["paths"]
    plan = []
    for managed in manifest.directories:
        current = current_paths.get(managed.path)
        if current is not None and current.kind != "directory":
            yield from refuse(
                f"{managed.path} exists but is a {current.kind}, not a directory; "
                "move it away, the deploy will not replace it"
            )
            return
        if current is None or _attributes_differ(
            current, managed.mode, managed.user, managed.group
        ):
            plan.append((managed, current))
    if not plan:
        host.noop(f"{len(manifest.directories)} director(ies) of {manifest} are in place")
        return
    owner = "{0.user}:{0.group} {1}"
    for managed, current in plan:
        wanted = owner.format(managed, managed.mode.zfill(4))
        if current is None:
            _log_once(managed.path, f"{managed.path}: directory created ({wanted})")
        else:
            was = owner.format(current, current.mode)
            _log_once(managed.path, f"{managed.path}: owner and mode {was} become {wanted}")
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
def packages(manifest: DesiredState, names: list[str] | None = None):
    """
    Install the manifest's Debian packages that are missing (never upgrades or removes).

    + manifest: the role's DesiredState
    + names: only these of the manifest's packages (default: all)
    """
    if manifest.unreadable():
        yield from refuse(manifest.unreadable_message())
        return
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
def account(manifest: DesiredState, user: str, shell: str = "/bin/bash", system: bool = False):
    """
    Make sure an account exists (never removed or modified once there).

    + manifest: the role's DesiredState (its users include `user`)
    + user: the account name
    + shell: the login shell for a new login account
    + system: a system account for a service: no home, no login shell
    """
    if user not in manifest.users:
        raise OperationValueError(f"{user} is not in manifest {manifest}")
    if manifest.unreadable():
        yield from refuse(manifest.unreadable_message())
        return
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
def binaries(manifest: DesiredState, keep_previous: bool = False):
    """
    Install the manifest's pinned binaries whose SHA-256 differs from the pin.

    + manifest: the role's DesiredState
    + keep_previous: keep the replaced binary beside it as ``<path>.previous`` (a hard link,
      made just before the rename), so a service that is unhealthy on the new one can be
      put back on it (`services.binary_service`)

    The download lands beside the target and is checked before it is used; on a mismatch
    it is deleted, the installed binary stays as it was, and the run fails naming both
    hashes. Replacing is a rename, so a running service never sees a partial file.
    """
    if manifest.unreadable():
        yield from refuse(manifest.unreadable_message())
        return
    current = manifest.state()["paths"]
    arch = manifest.state()["arch"]
    plan = []
    for binary in manifest.binaries:
        url, sha256 = binary.pin(arch)
        now = current.get(binary.path)
        if now is None or now.sha256 != sha256:
            plan.append((binary, url, sha256, "install"))
        elif now.mode != binary.mode.zfill(4):
            plan.append((binary, url, sha256, "chmod"))
    if not plan:
        host.noop(f"{len(manifest.binaries)} binar(ies) of {manifest} match their pins")
        return
    for binary, url, sha256, action in plan:
        if action == "chmod":
            _log_once(binary.path, f"{binary.path}: mode becomes {binary.mode.zfill(4)}")
        else:
            _log_once(
                binary.path,
                f"{binary.path}: {binary.version} for {arch} installed from {url} "
                f"(SHA-256 {sha256[:16]}...)",
            )
    for binary, url, sha256, action in plan:
        if action == "chmod":
            yield StringCommand("chmod", binary.mode, QuoteString(binary.path))
        else:
            owes = manifest.owing(binary.path)
            yield from _download_commands(binary, url, sha256, keep_previous, owes=owes)


#: What a finished download prints (curl's --write-out): how much came, and how fast.
DOWNLOADED = "downloaded %{size_download} bytes in %{time_total} s (%{speed_download} bytes/s)\\n"


def _download_commands(
    binary: ManagedBinary,
    url: str,
    sha256: str,
    keep_previous: bool = False,
    kept: str = "the installed binary was left in place",
    owes: tuple[str, ...] | list[str] = (),
):
    """Download, verify, rename; `owes`: units that run the binary, marked as owing a restart
    in the command that renames it (before the rename)."""
    new = QuoteString(f"{binary.path}.oceanid-new")
    yield StringCommand(
        "curl",
        "-fsSL",
        "--retry",
        "3",
        "--connect-timeout",
        str(CONNECT_TIMEOUT),
        "--speed-limit",
        str(SLOW_BYTES),
        "--speed-time",
        str(SLOW_SECONDS),
        "--proto",
        "=https,http",
        # its size and time once done, on stdout: pyinfra shows it with -v (issue 23)
        "-w",
        QuoteString(DOWNLOADED),
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
        f'"got $got; {kept}"',
        ">&2;",
        "exit",
        "1;",
        "fi",
    )
    path = QuoteString(binary.path)
    keep: list = []
    if keep_previous:
        previous = QuoteString(f"{binary.path}.previous")
        keep = ["{", "[", "!", "-f", path, "]", "||", "ln", "-f", path, previous, ";", "}", "&&"]
    owe = _owe(list(owes))
    yield StringCommand("chmod", binary.mode, new, "&&", *keep, *owe, "mv", "-f", new, path)


def _chunks(words: list[str]) -> list[list[str]]:
    """`words` in runs of at most about ARGUMENT_BYTES, so no command line is too long."""
    runs: list[list[str]] = [[]]
    size = 0
    for word in words:
        if runs[-1] and size + len(word) > ARGUMENT_BYTES:
            runs.append([])
            size = 0
        runs[-1].append(word)
        size += len(word) + 3
    return [run for run in runs if run]


@operation()
def sweep(manifest: DesiredState):
    """
    Remove what this role wrote and no longer wants, then record what it manages now.

    + manifest: the role's DesiredState (run after its files, directories and binaries)

    Only paths in the host's record (`DesiredState.record_path`) that the manifest no longer
    declares are removed (`DesiredState.unwanted`): a credential of an old shape, a retired
    model's files. Directories go only when empty. The record is rewritten last, so a
    run that fails before it removes the same paths next time.
    """
    if manifest.unreadable():
        yield from refuse(manifest.unreadable_message())
        return
    unwanted = manifest.unwanted()
    directories = set(_record_paths(manifest.state().get("record"))["directories"])
    gone_files = [p for p in unwanted if p not in directories]
    gone_directories = [p for p in unwanted if p in directories]
    record = ManagedFile(
        manifest.record_path,
        (json.dumps(manifest.declared(), indent=1, sort_keys=True) + "\n").encode(),
    )
    current = manifest.state().get("record")
    if not unwanted and current == record.content:
        host.noop(f"nothing {manifest} wrote is unwanted; its record is up to date")
        return
    for path in gone_files:
        if first_time("sweep", path):
            host.log(f"{path}: no longer wanted, removed")
    for path in gone_directories:
        if first_time("sweep", path):
            host.log(f"{path}: directory no longer wanted, removed if empty")
    for run in _chunks(gone_files):
        yield StringCommand("rm", "-f", "--", *(QuoteString(p) for p in run))
    for run in _chunks(gone_directories):
        words: list = []
        for path in run:  # deepest first, each only if it is (still) a directory
            words += ["if", "[", "-d", QuoteString(path), "];", "then", "rmdir"]
            words += ["--ignore-fail-on-non-empty", "--", QuoteString(path), ";", "fi;"]
        yield StringCommand(*words)
    if current != record.content:
        yield StringCommand("install", "-d", "-m", "0755", RECORD_DIR)
        yield from _replace_commands(record)
