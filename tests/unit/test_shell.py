"""`operations._shell`: the shared shell pieces, run by a real `sh`.

A message or a path is data, never shell: whatever it holds (quotes, `$`, backticks) reaches
stderr or the file system as written.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
from pyinfra.api import QuoteString, StringCommand
from pyinfra.api.command import make_formatted_string_command

from operations._shell import fail, in_double_quotes, or_fail, sha256_check

# no backslash: `echo` in dash (Debian's sh) reads escapes such as \n (see `_shell.fail`)
AWKWARD = 'it\'s $HOME, `id`, "quoted"; exit 0'


def sh(command: StringCommand, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["sh", "-c", command.get_raw_value()], capture_output=True, text=True, cwd=cwd, check=False
    )


def test_or_fail_says_the_message_as_written_and_exits_1() -> None:
    done = sh(make_formatted_string_command("false {0}", or_fail(AWKWARD)))
    assert (done.returncode, done.stderr, done.stdout) == (1, AWKWARD + "\n", "")


def test_or_fail_lets_a_command_that_passed_go_on() -> None:
    done = sh(make_formatted_string_command("true {0} && echo on", or_fail(AWKWARD)))
    assert (done.returncode, done.stdout, done.stderr) == (0, "on\n", "")


def test_fail_is_a_branch_body_and_takes_words_the_shell_expands() -> None:
    message = StringCommand(QuoteString(AWKWARD), '"got $got;"')
    command = make_formatted_string_command(
        "got=7; if true; then {0} fi; echo after", fail(message)
    )
    assert command.get_raw_value().endswith(">&2; exit 1; fi; echo after")
    done = sh(command)
    assert (done.returncode, done.stderr, done.stdout) == (1, f"{AWKWARD} got 7;\n", "")


def test_in_double_quotes_keeps_text_literal() -> None:
    done = sh(StringCommand("printf", "%s", f'"{in_double_quotes(AWKWARD)}"'))
    assert done.stdout == AWKWARD


@pytest.mark.parametrize("matches", [True, False])
def test_sha256_check(tmp_path: Path, matches: bool) -> None:
    path = tmp_path / "it's new"
    path.write_bytes(b"binary\n")
    pinned = hashlib.sha256(b"binary\n" if matches else b"other\n").hexdigest()
    done = sh(sha256_check(str(path), pinned, source="https://x/it's", kept=AWKWARD))
    if matches:
        assert (done.returncode, done.stderr, path.exists()) == (0, "", True)
    else:
        got = hashlib.sha256(b"binary\n").hexdigest()
        expected = f"SHA-256 mismatch for https://x/it's: expected {pinned}, got {got}; {AWKWARD}\n"
        assert (done.returncode, done.stderr, path.exists()) == (1, expected, False)
