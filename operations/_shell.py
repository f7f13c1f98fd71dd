"""Shell commands as templates, and the pieces that more than one operation's commands share.

An operation's command is written as one template for pyinfra's `make_formatted_string_command`
(pyinfra.api.command), which splits it into words as the shell will (`shlex`) and fills each
`{field}`. Every value goes in as a field wrapped in `QuoteString`, so nothing a path, a URL or
a message holds is ever read by the shell as syntax; braces that are the shell's, not fields,
are doubled (`{{ … }}`), as in `str.format`. `shlex` takes one layer of quotes off the
template, so a word the shell must see in quotes (`"$got"`) goes in as a field too.

A failure says why on stderr and exits 1 (`fail`, `or_fail`): pyinfra shows stderr when a
command fails, so the operator reads the sentence, not just an exit status.

Last, the commands that put a managed file or binary in place (`replace_commands`,
`download_commands`, and the owed-restart markers `owe` writes before a rename), which
operations.managed, apt_repo and docker share.
"""

from __future__ import annotations

import re
import shlex
from io import BytesIO
from typing import TYPE_CHECKING

from pyinfra.api import FileUploadCommand, QuoteString, StringCommand
from pyinfra.api.command import make_formatted_string_command

from operations import _desired, _lock, progress

if TYPE_CHECKING:
    from operations._desired import ManagedBinary, ManagedFile

#: What `fail` says: a sentence (quoted whole), or words the shell expands (`"got $got;"`).
Message = str | StringCommand


def said(message: Message) -> QuoteString | StringCommand:
    """`message` as `echo`'s argument: a str quoted whole, a StringCommand as it is written."""
    return message if isinstance(message, StringCommand) else QuoteString(message)


def fail(message: Message) -> StringCommand:
    """`echo <message> >&2; exit 1;`: stop the command here, saying why on stderr.

    A branch's body: ``if …; then <fail> fi``, or the braces of `or_fail`. It is `echo`, as
    every failure message here always was: dash's (Debian's sh) reads backslash escapes in it,
    so a message holds none."""
    return make_formatted_string_command("echo {0} >&2; exit 1;", said(message))


def or_fail(message: Message) -> StringCommand:
    """`|| { echo <message> >&2; exit 1; }`: after a command, fail saying `message` if it failed."""
    return make_formatted_string_command("|| {{ {0} }}", fail(message))


def in_double_quotes(text: str) -> str:
    """`text` as the inside of a double-quoted shell word: taken literally, `$` and all, so it
    can sit beside a `$var` the shell expands in the same word."""
    return re.sub(r'([\\"$`])', r"\\\1", text)


def sha256_check(path: str, sha256: str, *, source: str, kept: str) -> StringCommand:
    """Fail unless the file at `path` has SHA-256 `sha256`; a file that does not is removed,
    and the message names where it came from (`source`) and what was `kept` instead.

    ``got=$(sha256sum <path> | cut -d' ' -f1); if [ "$got" != <sha256> ]; then rm -f <path> ;
    echo 'SHA-256 mismatch for <source>: expected <sha256>,' "got $got; <kept>" >&2; exit 1; fi``
    """
    expected = QuoteString(f"SHA-256 mismatch for {source}: expected {sha256},")
    found = f'"got $got; {in_double_quotes(kept)}"'
    return make_formatted_string_command(
        "got=$(sha256sum {path} | cut -d{space} -f1); if [ {got} != {sha256} ]; then "
        "rm -f {path} ; {fail} fi",
        path=QuoteString(path),
        space=QuoteString(" "),
        got='"$got"',
        sha256=QuoteString(sha256),
        fail=fail(StringCommand(expected, found)),
    )


# ---- a managed file or binary put in place (operations.managed, apt_repo, docker)
#
# A file is replaced atomically: uploaded into a private (0700) staging folder of this run's
# own in the SSH user's home, copied beside the target with a 077 umask, validated, given its
# owner and mode, then renamed over the target, so no reader ever sees a half-written or
# briefly world-readable file. A binary is downloaded beside its target, checked against its
# pinned SHA-256, then renamed. The rename of either is in the same command as the markers of
# the restarts it owes (`owe`). The run's id (`operations._lock.RUN_ID`) names its staging
# folder, and the owed markers' folder is the state read's (`operations._desired.OWED_DIR`):
# both are read from their modules when a command is built.

STAGING = ".oceanid-staging"
STAGING_MINUTES = 60  # a run's staging folder untouched this long is a killed run's
# curl gives up on a server that does not answer within CONNECT_TIMEOUT seconds, or that sends
# less than SLOW_BYTES a second for SLOW_SECONDS: a big download that keeps moving is never cut.
CONNECT_TIMEOUT = 30
SLOW_BYTES = 1024
SLOW_SECONDS = 60
ARGUMENT_BYTES = 64 * 1024  # split long removals into commands of about this size


def owe(units: list[str]) -> list:
    """Words that leave an owed-restart marker for each of `units` (`OWED_DIR`), joined
    by `&&` and ending in one, to go before the rename that replaces what they read."""
    if not units:
        return []
    markers = [QuoteString(f"{_desired.OWED_DIR}/{unit}") for unit in units]
    return ["mkdir", "-p", _desired.OWED_DIR, "&&", "touch", *markers, "&&"]


def replace_commands(managed: ManagedFile, owes: tuple[str, ...] | list[str] = ()):
    """Stage, copy beside, check, own and rename; `owes`: units that read the file, marked
    as owing a restart in the same command as the rename (before it)."""
    run = f"{STAGING}/{_lock.RUN_ID}"
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
        StringCommand(*owe(list(owes)), "mv", "-f", QuoteString(new), QuoteString(managed.path)),
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


#: What a finished download prints (curl's --write-out): how much came, and how fast.
DOWNLOADED = "downloaded %{size_download} bytes in %{time_total} s (%{speed_download} bytes/s)\\n"


def download_commands(
    binary: ManagedBinary,
    url: str,
    sha256: str,
    *,
    keep_previous: bool = False,
    kept: str = "the installed binary was left in place",
    owes: tuple[str, ...] | list[str] = (),
):
    """Download, verify, rename; `owes`: units that run the binary, marked as owing a restart
    in the command that renames it (before the rename)."""
    new = QuoteString(f"{binary.path}.oceanid-new")
    # how much has come so far every progress.EVERY seconds, and its size and time once done
    # (curl's -w), shown as they come
    fetch = [
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
        "-w",
        QuoteString(DOWNLOADED),
        "-o",
        new,
        QuoteString(url),
    ]
    size = progress.size_line(url, f"{binary.path}.oceanid-new")
    yield progress.Shown(
        *progress.around(size, *fetch, stop=None),
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
    yield sha256_check(f"{binary.path}.oceanid-new", sha256, source=url, kept=kept)
    path = QuoteString(binary.path)
    keep: list = []
    if keep_previous:
        previous = QuoteString(f"{binary.path}.previous")
        keep = ["{", "[", "!", "-f", path, "]", "||", "ln", "-f", path, previous, ";", "}", "&&"]
    marks = owe(list(owes))
    yield StringCommand("chmod", binary.mode, new, "&&", *keep, *marks, "mv", "-f", new, path)


def chunks(words: list[str]) -> list[list[str]]:
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
