"""`--diff`: what an operation is about to change, said before its first command.

Each operation plans every change first, reports it here (every file's diff; a secret file
by name only, with the names of its keys whose lines change), then yields its commands:
pyinfra's change detection takes only the first command of an operation, so a report made
just before each file's commands would show the first file only.

A secret file's old lines are read back only as hashes salted with `SALT`, fresh each run,
so a logged hash of a short line cannot be looked up in a table.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import TYPE_CHECKING

from pyinfra import host, logger, state

from facts.managed import PEEK_LIMIT, PathState
from oceanid import pyinfra_internals as internals
from operations.failure import first_time

if TYPE_CHECKING:
    from operations._desired import DesiredState, ManagedFile

# Salts the per-line hashes of secret files read back for --diff (facts.managed `lines`):
# fresh each run, so a logged hash of a short line cannot be looked up in a table.
SALT = secrets.token_hex(16)


def diff_text(content: bytes) -> str | None:
    """`content` as text to diff, or None for a binary or large file (no diff shown)."""
    if len(content) > PEEK_LIMIT or b"\0" in content:
        return None
    try:
        return content.decode()
    except UnicodeDecodeError:
        return None


def report(desired: DesiredState, managed: ManagedFile, current: PathState | None) -> None:
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
        old_hashes = desired.state().get("line_hashes", {}).get(managed.path)
        keys = "" if current is None else secret_changes(managed, old_hashes)
        host.log(f"{managed.path}: secret content {verb} (not shown){keys}")
        return
    found = desired.state()
    old = found["contents"].get(managed.path, found.get("peeks", {}).get(managed.path))
    old_text = "" if current is None else (None if old is None else diff_text(old))
    new_text = diff_text(managed.content)
    if old_text is None or new_text is None:
        host.log(f"{managed.path}: binary or large file {verb}")
        return
    host.log(f"{managed.path}: {verb}")
    for line in internals.color_diff(old_text.splitlines(), new_text.splitlines()):
        logger.info(f"{host.print_prefix}  {line}")


def line_hash(line: str) -> str:
    return hashlib.sha256(f"{SALT}\n{line}".encode()).hexdigest()


def secret_changes(managed: ManagedFile, old_hashes: list[str] | None) -> str:
    """`; keys: a changes, b changes` for the values of `managed` whose lines differ from
    the old file's (known only by salted line hashes): names, never a value."""
    if old_hashes is None or not managed.line_keys:
        return ""
    text = managed.content.decode()  # lines as the shell's `read` splits them: at \n only
    new = [line_hash(line) for line in text.removesuffix("\n").split("\n")]
    old = set(old_hashes)
    changed = {index for index, digest in enumerate(new) if digest not in old}
    names = [key for key, first, end in managed.line_keys if changed & set(range(first, end))]
    words = [f"{name} changes" for name in names]
    gone = len(set(old_hashes) - set(new))
    if gone and not names:
        words.append(f"{gone} old line(s) gone (a key removed or renamed)")
    return f"; keys: {', '.join(words)}" if words else ""


def log_once(what: str, message: str) -> None:
    """With --diff, name one planned change (once per run, host and operation)."""
    if state.config.DIFF and first_time("plan", what):
        host.log(message)
