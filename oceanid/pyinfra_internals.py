"""pyinfra's internals, fenced: every use of pyinfra beyond its documented surface, in one place.

The deploys use pyinfra's documented surface freely (`from pyinfra import host, state, logger`,
`pyinfra.api`'s operation, FactBase, StringCommand and the rest, `pyinfra.operations.*`,
`pyinfra.facts.*`). What they need beyond it goes through this module, and only this one:
context variables, the run's stage and host sets, global-argument resolution, the CLI's
inventory loader, the colour diff, the call-stack operation order, and the behaviours pyinfra
does not document (a `FunctionCommand` given `state` and `host`, whose False fails the
operation; operations ordered by the lines that queue them). Each is a small named function
here, and `tests/unit/test_pyinfra_internals.py` has a test per internal that fails when an
upgrade changes it. docs/internals.md has the list, why each is needed and how to upgrade.

These were read against one pyinfra release: the version pyproject.toml pins (`SUPPORTED`).
Importing this module with another pyinfra installed is an error, not a warning: none of
these internals has a fallback, and a silent change in one is a dry run that exits 0 for a
host that would fail, or an agent upgraded before its servers; a warning scrolls away in a
run's output. pip installs exactly the pin, so a mismatch is either an environment that
drifted (reinstall) or an upgrade under way, whose first step is moving the pin.

Layer: oceanid/, the lowest that uses pyinfra's internals (facts/ needs none), so operations/
and deploys/ reach it from above.
"""

from __future__ import annotations

import importlib
import re
import sys
import tomllib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, suppress
from importlib.metadata import version
from inspect import signature
from pathlib import Path
from typing import Any

import pyinfra
from pyinfra.api import Config, FunctionCommand, Host, Inventory, State, StringCommand
from pyinfra.api import util as pyinfra_util
from pyinfra.api.arguments import CONNECTOR_ARGUMENT_KEYS, pop_global_arguments
from pyinfra.api.connect import connect_all
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.facts import get_fact
from pyinfra.api.state import StateStage
from pyinfra.connectors.util import CommandOutput
from pyinfra.context import ctx_config, ctx_host, ctx_inventory, ctx_state
from pyinfra.operations.util.files import generate_color_diff

# the module, not the `operation` decorator that `pyinfra.api` exports under that name
_pyinfra_operation = importlib.import_module("pyinfra.api.operation")

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


class UnsupportedPyinfra(RuntimeError):
    """The installed pyinfra is not the one whose internals this module was checked against."""


# ---- the supported version


def supported_version(pyproject: Path = PYPROJECT) -> str:
    """The pyinfra version `pyproject` pins (`pyinfra==X.Y.Z` in its dependencies)."""
    try:
        dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    except (OSError, KeyError, tomllib.TOMLDecodeError) as error:
        raise UnsupportedPyinfra(
            f"{__file__}: cannot read the supported pyinfra version from {pyproject} ({error})"
        ) from None
    for dependency in dependencies:
        match = re.fullmatch(r"pyinfra\s*==\s*([0-9][0-9A-Za-z.+-]*)", dependency.strip())
        if match:
            return match.group(1)
    raise UnsupportedPyinfra(
        f"{__file__}: {pyproject} pins no exact pyinfra version (`pyinfra==X.Y.Z` in "
        "[project] dependencies); the internals here are checked against one release"
    )


def check_version(installed: str, supported: str) -> None:
    """Raise `UnsupportedPyinfra`, naming this module and both versions, unless they are equal."""
    if installed != supported:
        raise UnsupportedPyinfra(
            f"{__file__} fences pyinfra's internals for pyinfra {supported} (pyproject.toml's "
            f"pin), but pyinfra {installed} is installed. Install the pin (`make venv`), or to "
            "upgrade: move the pin in pyproject.toml, reinstall, and run "
            "tests/unit/test_pyinfra_internals.py (docs/internals.md, 'pyinfra's internals')"
        )


SUPPORTED = supported_version()
check_version(version("pyinfra"), SUPPORTED)


# ---- the context pyinfra runs an operation in


def current_state() -> State:
    """The State of the run in progress (the object itself, not pyinfra's `state` proxy)."""
    return ctx_state.get()


def current_host() -> Host:
    """The Host the operation being queued or run is for (the object, not the proxy)."""
    return ctx_host.get()


def as_current_host(host: Host) -> AbstractContextManager:
    """`with as_current_host(host):` code that reads pyinfra's `host` sees `host`."""
    return ctx_host.use(host)


def loading_inventory_names() -> list[str] | None:
    """The host names of the inventory pyinfra is loading (group data runs while it does);
    None outside a pyinfra run."""
    if not ctx_inventory.isset():
        return None
    return [host.name for host in ctx_inventory.get()]


def operation_hash(host: Any) -> str | None:
    """The hash of the operation `host` is in (None outside one): one key per operation."""
    return getattr(host, "current_op_hash", None)


# ---- the run's stage and its hosts


def planning(state: Any = None) -> bool:
    """Whether the run is preparing (change detection, `--dry`): nothing executes yet."""
    if state is None:
        state = ctx_state.get() if ctx_state.isset() else None
    return getattr(state, "current_stage", None) == StateStage.Prepare


def executing(state: Any) -> bool:
    """Whether the run executes operations now (an operation's body runs a second time then)."""
    return bool(state.is_executing)


def failed_hosts(state: Any) -> frozenset:
    """The hosts that failed in this run so far."""
    return frozenset(state.failed_hosts)


def active_hosts(state: Any) -> frozenset:
    """The hosts still in this run (connected, not failed)."""
    return frozenset(state.active_hosts)


def fail_host(host: Host, state: Any = None) -> None:
    """Mark `host` failed as pyinfra does when an operation fails: it leaves the run (others
    go on). pyinfra raises PyinfraError for the last host or past FAIL_PERCENT, and the CLI
    asks whether to go on (EOFError with no terminal); both reach the caller."""
    state = current_state() if state is None else state
    if host not in state.failed_hosts:
        state.fail_hosts({host})


def revive_host(state: Any, host: Host) -> None:
    """Undo `fail_host`: `host` is in the run again (a status reads every fact it can)."""
    state.failed_hosts.discard(host)
    state.active_hosts.add(host)


def connector_arguments(state: Any, host: Host) -> dict[str, Any]:
    """How pyinfra runs a command on `host` (its sudo, user...) outside an operation, for
    `host.run_shell_command(..., **connector_arguments(state, host))`."""
    with ctx_host.use(host):
        arguments, _ = pop_global_arguments(state, host, {})
    # `_stdin` is the caller's to give (a token): pyinfra fills in a default for it (None),
    # which passed on beside the caller's would be the same keyword twice
    return {k: v for k, v in arguments.items() if k in CONNECTOR_ARGUMENT_KEYS and k != "_stdin"}


# ---- a Python step of an operation


def host_callback(function: Callable[..., bool | None], *args: Any, **kwargs: Any):
    """A `FunctionCommand` running `function(state, host, *args, **kwargs)` at execution;
    its False fails the operation (and the host), as a failed shell command does.

    pyinfra passes `state` and `host` only to a function whose parameters are named so, and
    only then uses its return value; a callback named otherwise would never fail anything.
    That is checked here, where the command is made.
    """
    first = list(signature(function).parameters)[:2]
    if first != ["state", "host"]:
        raise TypeError(
            f"{function.__qualname__}: a host callback's first parameters must be `state, host` "
            f"(pyinfra {SUPPORTED} passes them, and honours a False return, only then); "
            f"it has {first}"
        )
    return FunctionCommand(function, args, kwargs)


# ---- the diff `--diff` prints


def color_diff(old_lines: list[str], new_lines: list[str]) -> Iterator[str]:
    """pyinfra's own coloured unified diff, as `files.put --diff` prints it."""
    return generate_color_diff(old_lines, new_lines)


# ---- pyinfra's API driven by hand (make check, make status)


def cli_inventory(path: str) -> Inventory:
    """Load an inventory file and its group data exactly as the pyinfra CLI does."""
    from pyinfra_cli.inventory import make_inventory

    state = State()
    state.cwd = str(Path.cwd())
    ctx_state.set(state)
    ctx_config.set(Config())
    return make_inventory(path, cwd=state.cwd)


def connected_state(inventory: Inventory) -> State:
    """A State for `inventory` with every host that answers connected, ready to read facts
    (the CLI's steps up to its prepare stage); a host that does not is left out of it."""
    state = State()
    state.init(inventory, Config())
    state.set_stage(StateStage.Connect)
    with suppress(PyinfraError):  # "No hosts remaining!": the caller names each host
        connect_all(state)
    state.set_stage(StateStage.Prepare)
    return state


def read_fact(state: State, host: Host, cls: type, **kwargs: Any) -> tuple[Any, bool]:
    """`(value, True)` for fact `cls` read from `host`, or `(None, False)` when it could not
    be read; pyinfra fails a host whose fact fails, and `host` is put back in the run here."""
    try:
        with ctx_host.use(host):
            value = get_fact(state, host, cls, kwargs=kwargs)
    except PyinfraError:  # pyinfra's "No hosts remaining!" after this host's fact failed
        value = None
    if host in state.failed_hosts:
        revive_host(state, host)
        return None, False
    return value, True


# ---- the operation order
#
# In CLI mode pyinfra orders operations by the line numbers of the code that queued them:
# `get_operation_order_from_stack` calls `inspect.stack()`, then `getframeinfo` for every frame
# again. Both read each frame's source context: a `stat` of its file and, for a frame whose file
# is not a module's (the deploy file itself, which pyinfra runs with `exec`), a walk over all of
# `sys.modules`. For the site (82 operations on the lab's four hosts) that was about an eighth of
# a no-op converge's CPU. The order needs only each frame's file name and line number, which the
# frame holds; `order_from_frames` returns the same list from them. deploys/__init__.py installs
# it, so every deploy file of ours gets it. The deploys rely on the order itself too: operations
# queued from one line on several hosts are one step (deploys/k3s/__init__.py).


def order_from_frames(state: State) -> list[int]:
    """`pyinfra.api.util.get_operation_order_from_stack`, from the frames themselves.

    From the outermost frame: start at the first frame of the deploy file being run (or
    the outermost, when there is none), then take the line of every frame that is not
    pyinfra's own, after the deploy file's position in the run when pyinfra runs as the CLI.
    """
    frames = []
    frame = sys._getframe(1)  # the caller's: pyinfra's, left out below as stack()[0] is
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    frames.reverse()
    start = 0
    if state.current_deploy_filename:
        # no frame of the deploy file: pyinfra's search ends on its own frame, left out
        start = next(
            (
                i
                for i, f in enumerate(frames)
                if f.f_code.co_filename == state.current_deploy_filename
            ),
            len(frames),
        )
    lines = [state.current_op_file_number] if pyinfra.is_cli else []
    for frame in frames[start:]:
        if not frame.f_code.co_filename.startswith(pyinfra_util.PYINFRA_INSTALL_DIR):
            lines.append(frame.f_lineno)
    return lines


def install_op_order() -> bool:
    """Use `order_from_frames` in pyinfra, if it is the supported version; True if it was.
    (Another version cannot get here past the import check; this one keeps its own order.)"""
    if version("pyinfra") != SUPPORTED:
        return False
    _pyinfra_operation.get_operation_order_from_stack = order_from_frames
    return True


# ---- a command whose output is shown as it comes


class ShownCommand(StringCommand):
    """A shell command whose output pyinfra prints line by line as it comes, at any verbosity
    (operations.progress: a long wait says what it waits for while it waits).

    pyinfra prints a command's output only with -vvv (`state.print_output`, which prints every
    command's and fact's output); `StringCommand.execute` is where it passes that flag to the
    connector, so this one passes True. A failed command's output was shown then, and pyinfra
    would print it again (it does for a failure when `print_output` is off): it gets none
    back. Otherwise a plain StringCommand: the same text, masking and connector arguments,
    and planning (change detection, `--dry`) sees the same command.
    """

    def execute(self, state: State, host: Host, connector_arguments: dict) -> tuple:
        connector_arguments.update(self.connector_arguments)
        ok, _ = host.run_shell_command(
            self, print_output=True, print_input=state.print_input, **connector_arguments
        )
        return ok, CommandOutput([])
