"""The deploy lock: one deploy per host at a time, taken in the state read itself.

`DesiredState.state()` and `read_together` pass `lock_args` to the host's one state read
(facts.managed), which takes the lock there; `locked` turns what it found into the host's
state, or into a refusal naming the other run. No release command: the lock lasts as long as
the connection of the run that holds it (docs/internals.md).
"""

from __future__ import annotations

import functools
import getpass
import os
import secrets
import socket
import sys

from pyinfra import host

from facts.managed import empty_state
from operations.failure import fail_host, first_time

# The deploy lock: on tmpfs, so a reboot (which ends every run's connection) clears it too.
LOCK = "/run/oceanid/deploy.lock"
# Where the unit tests put it instead, so their runs on this machine (`@local`, and pyinfra run
# inside the test process, whose lock lasts as long as that process) never meet each other's
# lock, nor a real deploy's; never set for a real deploy.
LOCK_ENV = "OCEANID_TEST_DEPLOY_LOCK"
# This pyinfra run: names its lock and its staging folder, so two runs never share either.
RUN_ID = secrets.token_hex(8)


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


def locked(value: dict) -> dict:
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
