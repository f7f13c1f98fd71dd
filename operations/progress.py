"""Long steps say how they go (issue 23 item 7): every wait longer than EVERY seconds says what it
waits for, how long it has waited and its limit, at least every EVERY seconds.

A wait on the host (a unit's start, a readiness probe, a download) runs in the background of
its shell command while a ticker beside it prints one line every EVERY seconds on stdout::

    waiting for tritonserver.service to be ready (models: a, b): 20 s of 300 s
    downloading https://…/k3s: 31457280 bytes so far, 10 s

then the ticker is stopped and the command goes on with the wait's own exit status, so what the
command does and how it fails stay what they were. The wait's own text comes first (``timeout
150 systemctl restart k3s.service & …``), as the command reads. Such a command is a `Shown`
one: pyinfra prints its output as it comes at any verbosity, not only with -vvv, so a plain
`make deploy` shows these lines (oceanid.pyinfra_internals.ShownCommand).

A wait in Python (a `FunctionCommand` that polls over the connection) says the same through
pyinfra's logger (`say`), or runs under `telling`, which says it from a greenlet of its own
while a long call blocks.

A no-op run yields none of these commands, so it waits for nothing and prints nothing.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import gevent
from pyinfra import logger

from oceanid.pyinfra_internals import ShownCommand

EVERY = 10  # seconds between two progress lines of one wait (issue 23: at least every 10 s)

Shown = ShownCommand  # the commands that hold a wait: their output is shown as it comes


def _every(every: float | None) -> float:
    """`every`, or the module's EVERY as it is now (tests shorten it, as they do a limit)."""
    return EVERY if every is None else every


def _ticker(line: str, every: int, stop: int | None) -> str:
    """Shell: a subshell printing `line` (a command reading ``$oceanid_n``, the seconds so far)
    every `every` seconds, and ending once `stop` seconds are past (never without one: it is
    stopped by the wait's end, or by a broken pipe once the run's connection is gone). Its
    `sleep` writes nowhere, so a sleep left behind by the stop holds no output open."""
    over = f'[ "$oceanid_n" -le {stop} ] || exit 0; ' if stop is not None else ""
    return (
        f"( oceanid_n=0; while sleep {every} </dev/null >/dev/null 2>&1; do "
        f"oceanid_n=$((oceanid_n+{every})); {over}{line}; done )"
    )


def waiting_line(what: str, limit: int | None) -> str:
    """Shell: print ``waiting for <what>: <n> s of <limit> s`` (``: <n> s`` without a limit)."""
    label = shlex.quote(f"waiting for {what}")
    if limit is None:
        return f"printf '%s: %s s\\n' {label} \"$oceanid_n\""
    return f"printf '%s: %s s of %s s\\n' {label} \"$oceanid_n\" {limit}"


def size_line(url: str, path: str) -> str:
    """Shell: print ``downloading <url>: <bytes> bytes so far, <n> s`` (the bytes in `path`)."""
    label = shlex.quote(f"downloading {url}")
    size = f"$(wc -c 2>/dev/null <{shlex.quote(path)} || echo 0)"
    return f'printf \'%s: %s bytes so far, %s s\\n\' {label} "{size}" "$oceanid_n"'


def around(line: str, *command: object, stop: int | None, every: int | None = None) -> list:
    """`command`'s words, run in the background beside a ticker printing `line` (a
    `waiting_line` or `size_line`) until `stop` seconds (None: for as long as it runs); then
    the ticker stopped and `command`'s exit status as the status of the whole
    (``(exit "$oceanid_rc")``), for the words after it to test.

    `command` is one pipeline: a list with ``&&``/``||`` goes in braces or parentheses, and an
    ``exit`` in it ends only its own background subshell (where it then stands for its
    status). It reads no standard input (the shell gives a background command /dev/null).
    In the middle of a list, put the words in braces: ``&& { <these> ; } ||``."""
    return [
        *command, "&", "oceanid_job=$!;",
        _ticker(line, _every(every), stop), "&", "oceanid_tick=$!;",
        'wait "$oceanid_job";', "oceanid_rc=$?;",
        'kill "$oceanid_tick" 2>/dev/null;', '(exit "$oceanid_rc")',
    ]  # fmt: skip


def watch(
    what: str, limit: int | None, *command: object, every: int | None = None, bounded=True
) -> list:
    """`around` with ``waiting for <what>: <n> s of <limit> s`` every EVERY seconds, until
    `limit` seconds, or for as long as `command` runs when it is not `bounded` by them (a loop
    that counts its tries, each a second or more, not seconds)."""
    stop = limit if bounded else None
    return around(waiting_line(what, limit), *command, stop=stop, every=every)


def watch_script(what: str, limit: int | None, script: str, every: int | None = None) -> str:
    """`watch` for a shell script's text (run with ``sh -c``, or by ssh): `script` runs in
    parentheses, so its ``exit`` ends the wait with that status."""
    return " ".join(str(word) for word in watch(what, limit, "(", script, ")", every=every))


# ---- waits in Python


def say(host, what: str, waited: float, limit: float | None = None) -> None:
    """Log ``waiting for <what>: <n> s of <limit> s`` for `host` through pyinfra's logger (shown
    at every verbosity)."""
    of = f" of {limit:g} s" if limit is not None else ""
    logger.info(f"{host.print_prefix}waiting for {what}: {waited:.0f} s{of}")


@contextmanager
def telling(tell: Callable[[float], None], every: float | None = None) -> Iterator[None]:
    """While the body runs, call ``tell(<seconds so far>)`` every `every` (EVERY) seconds from a
    greenlet of its own: a call that blocks on the connection (pyinfra's connectors yield to
    gevent while they wait) still says what it waits for."""
    step = _every(every)

    def tick() -> None:
        waited = 0.0
        while True:
            gevent.sleep(step)
            waited += step
            tell(waited)

    ticker = gevent.spawn(tick)
    try:
        yield
    finally:
        ticker.kill()
