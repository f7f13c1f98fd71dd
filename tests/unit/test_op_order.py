"""`oceanid.pyinfra_internals`' operation order: the same as pyinfra's, from the frames alone."""

from __future__ import annotations

import importlib
from pathlib import Path

import pyinfra
import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api import util as pyinfra_util

from oceanid import pyinfra_internals as internals

pyinfra_operation = importlib.import_module("pyinfra.api.operation")

DEPLOY = """
def inner(depth):
    if depth:
        return inner(depth - 1)
    return probe()


def outer():
    found = [probe()]
    for depth in range(4):
        found.append(inner(depth))
    return found


results = [probe()] + outer() + [(lambda: probe())()]
"""


def _state(deploy_file: str | None) -> State:
    state = State(Inventory((["@local"], {})), Config())
    state.current_deploy_filename = deploy_file
    state.current_op_file_number = 7
    return state


@pytest.mark.parametrize("cli", [True, False])
@pytest.mark.parametrize("in_deploy_file", [True, False])
def test_the_order_is_pyinfras_from_any_depth(tmp_path: Path, monkeypatch, cli, in_deploy_file):
    monkeypatch.setattr(pyinfra, "is_cli", cli)
    path = str(tmp_path / "deploy.py")
    state = _state(path if in_deploy_file else str(tmp_path / "another.py"))

    theirs, ours = pyinfra_util.get_operation_order_from_stack, internals.order_from_frames

    def probe():
        return (theirs(state), ours(state))  # one line, so both see the same line here

    scope = {"probe": probe}
    exec(compile(DEPLOY, path, "exec"), scope)
    assert len(scope["results"]) == 7
    for by_pyinfra, by_frames in scope["results"]:
        assert by_frames == by_pyinfra
    if in_deploy_file:
        orders = {tuple(order) for _, order in scope["results"]}
        assert len(orders) == 7, "each call site has an order of its own"


def test_installed_for_the_pinned_pyinfra_only(monkeypatch):
    original = pyinfra_operation.get_operation_order_from_stack
    theirs = pyinfra_util.get_operation_order_from_stack
    try:
        assert internals.install_op_order() is True
        assert pyinfra_operation.get_operation_order_from_stack is internals.order_from_frames
        pyinfra_operation.get_operation_order_from_stack = (
            pyinfra_util.get_operation_order_from_stack
        )
        monkeypatch.setattr(internals, "version", lambda _: "3.11.0")
        assert internals.install_op_order() is False
        assert pyinfra_operation.get_operation_order_from_stack is theirs
    finally:
        pyinfra_operation.get_operation_order_from_stack = original
