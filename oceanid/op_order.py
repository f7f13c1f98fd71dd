"""pyinfra's operation order, computed from the frames instead of their source files.

In CLI mode pyinfra (3.10) orders operations by the line numbers of the code that queued
them: `get_operation_order_from_stack` calls `inspect.stack()`, then `getframeinfo` for
every frame again. Both read each frame's source context: a `stat` of its file and, for a
frame whose file is not a module's (the deploy file itself, which pyinfra runs with
`exec`), a walk over all of `sys.modules`. For the site (82 operations on the lab's four
hosts) that was about an eighth of a no-op converge's CPU. The order needs only each
frame's file name and line number, which the frame holds; `order_from_frames` returns the
same list from them.

`install()` puts it in pyinfra's place, for the pyinfra version this project pins only; any
other version keeps its own (slower, and certainly right for it). deploys/__init__.py
installs it, so every deploy file of ours gets it.
"""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import version

import pyinfra
from pyinfra.api import util as pyinfra_util
from pyinfra.api.state import State

# the module, not the `operation` decorator that `pyinfra.api` exports under that name
pyinfra_operation = importlib.import_module("pyinfra.api.operation")

PINNED = "3.10.0"  # as in pyproject.toml


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


def install() -> bool:
    """Use `order_from_frames` in pyinfra, if it is the version pinned; True if it was."""
    if version("pyinfra") != PINNED:
        return False
    pyinfra_operation.get_operation_order_from_stack = order_from_frames
    return True
