"""Fail an operation with one clear line instead of a traceback.

pyinfra 3.10 prints a full gevent traceback for an OperationError raised while an
operation runs; an operator needs the sentence, not the stack. `refuse` logs the message
(so `--dry` shows it too) and yields a command that fails, so the host is marked failed
and the run exits non-zero like any other failed operation.
"""

from __future__ import annotations

from collections.abc import Iterator

from pyinfra import host, logger
from pyinfra.api import FunctionCommand


def _failed(state, host) -> bool:  # noqa: ARG001 - pyinfra passes state and host
    return False


def refuse(message: str) -> Iterator[FunctionCommand]:
    """`yield from refuse("…")` inside an operation: log the message, then fail the operation."""
    host.log_styled(message, fg="red", log_func=logger.error)
    yield FunctionCommand(_failed, (), {})
