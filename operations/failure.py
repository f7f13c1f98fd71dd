"""Fail an operation with one clear line instead of a traceback, and fail a dry run too.

pyinfra 3.10 prints a full gevent traceback for an OperationError raised while an
operation runs; an operator needs the sentence, not the stack. `refuse` logs the message
and yields a command that fails, so the host is marked failed and the run exits non-zero
like any other failed operation.

A refusal is decided while planning: in pyinfra's prepare stage (the change detection of
a run without -y, `--dry` included) nothing would ever execute the failing command, so the
dry run would exit 0 and show a change. There `refuse` marks the host failed at once:
pyinfra then drops it (other hosts go on) and exits non-zero.

Without -y the generator of an operation runs twice (change detection, then execution),
so what is logged is remembered per run, host and operation and shown once (`first_time`).
"""

from __future__ import annotations

from collections.abc import Iterator
from weakref import WeakKeyDictionary

from pyinfra import host, logger
from pyinfra.api import FunctionCommand
from pyinfra.api.exceptions import PyinfraError

from oceanid import pyinfra_internals as internals

_SHOWN: WeakKeyDictionary = WeakKeyDictionary()  # pyinfra State -> what was already logged


def first_time(*key: object, per_operation: bool = True) -> bool:
    """True the first time `key` is seen for this host (and operation) in this pyinfra run."""
    shown = _SHOWN.setdefault(internals.current_state(), set())
    operation = internals.operation_hash(host) if per_operation else None
    full = (host.name, operation, *key)
    if full in shown:
        return False
    shown.add(full)
    return True


def _failed(state, host) -> bool:  # noqa: ARG001 - pyinfra passes state and host
    return False


def fail_host(message: str) -> None:
    """Log `message` in red (once) and, while planning, mark the host failed.

    pyinfra raises "No hosts remaining!" when it was the last host, and without -y asks
    "continue?" when others remain; with no terminal to answer, that question would end in
    an EOFError traceback, so it ends in one line instead.
    """
    if first_time("refuse", message, per_operation=False):
        host.log_styled(message, fg="red", log_func=logger.error)
    if not internals.planning():
        return
    try:
        internals.fail_host(internals.current_host())
    except EOFError:
        raise PyinfraError(
            f"{host.name} failed while planning and there is no terminal to answer "
            "whether to go on with the other hosts; fix it, or run with -y"
        ) from None


def refuse(message: str) -> Iterator[FunctionCommand]:
    """`yield from refuse("…")` inside an operation: log the message, then fail the operation
    (and, while planning, the host: a dry run fails the same way)."""
    fail_host(message)
    yield internals.host_callback(_failed)
