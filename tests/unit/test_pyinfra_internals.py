"""`oceanid.pyinfra_internals`: one test per pyinfra internal the deploys rely on, each run
against the real pyinfra (a State of its own, @local, or the CLI), so that an upgrade that
changes one fails here, by name, before a deploy relies on it. docs/internals.md says what
each is for; the operation order's equivalence with pyinfra's is in test_op_order.py."""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import socket
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pyinfra
import pytest
from pyinfra import host
from pyinfra.api import Config, FactBase, Inventory, State, StringCommand, operation
from pyinfra.api.connect import connect_all
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.operation import add_op
from pyinfra.api.operations import run_ops
from pyinfra.api.state import StateStage
from pyinfra.context import ctx_host, ctx_state

from oceanid import pyinfra_internals as internals

REPO = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;]*m")
pyinfra_operation = importlib.import_module("pyinfra.api.operation")


def _local(**data) -> State:
    """A State over @local, connected as the CLI connects it, in its prepare stage."""
    state = State(Inventory((["@local"], data)), Config())
    state.set_stage(StateStage.Connect)
    connect_all(state)
    state.set_stage(StateStage.Prepare)
    return state


def _two_hosts() -> tuple[State, object, object]:
    state = State(Inventory((["server", "agent"], {})), Config())
    server, agent = state.inventory.get_host("server"), state.inventory.get_host("agent")
    for one in (server, agent):
        state.activate_host(one)
    return state, server, agent


# ---- the supported version


def test_the_supported_version_is_pyprojects_pin_and_the_one_installed():
    pin = re.search(r'"pyinfra==([^"]+)"', (REPO / "pyproject.toml").read_text())
    assert pin and pin.group(1) == internals.SUPPORTED
    assert version("pyinfra") == internals.SUPPORTED


def test_a_pin_is_read_from_any_pyproject_and_its_absence_refused(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\ndependencies = ["requests>=2", "pyinfra == 9.1.2"]\n')
    assert internals.supported_version(pyproject) == "9.1.2"
    pyproject.write_text('[project]\ndependencies = ["pyinfra>=3"]\n')
    with pytest.raises(internals.UnsupportedPyinfra, match="pins no exact pyinfra version"):
        internals.supported_version(pyproject)


def test_importing_the_fence_with_another_pyinfra_fails_naming_both_versions():
    """The check at import, for real: pyinfra's installed version read as another one."""
    code = (
        "import importlib.metadata as metadata\n"
        "real = metadata.version\n"
        "metadata.version = lambda name: '3.99.0' if name == 'pyinfra' else real(name)\n"
        "import oceanid.pyinfra_internals\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("oceanid.pyinfra_internals.UnsupportedPyinfra: "), run.stderr
    assert "pyinfra_internals.py" in last and "pyinfra 3.99.0 is installed" in last, last
    assert f"pyinfra {internals.SUPPORTED} (pyproject.toml's pin)" in last, last


# ---- the context, the stage and a host callback, as the pyinfra CLI runs them

CLI_DEPLOY = """
import json, os

from pyinfra import host
from pyinfra.api import operation

from oceanid import pyinfra_internals as internals


def note(**entry):
    with open(os.environ["SEEN"], "a") as seen:
        seen.write(json.dumps(entry) + "\\n")


def callback(state, host, result):
    note(at="callback", executing=internals.executing(state), host=host.name, same=(
        state is internals.current_state()))
    return result


@operation()
def probe(result: bool):
    state = internals.current_state()
    note(at="body", planning=internals.planning(), executing=internals.executing(state),
         host=internals.current_host().name, op=internals.operation_hash(host),
         state=type(state).__name__)
    yield internals.host_callback(callback, result)


probe(name="passes", result=True)
probe(name="fails", result=os.environ["RESULT"] == "1")
"""


def _cli(tmp_path: Path, *args: str, result: bool) -> tuple[subprocess.CompletedProcess, list]:
    deploy, seen = tmp_path / "deploy.py", tmp_path / "seen.jsonl"
    deploy.write_text(CLI_DEPLOY)
    seen.unlink(missing_ok=True)
    run = subprocess.run(
        [sys.executable, "-m", "pyinfra", "@local", str(deploy), *args],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO), "SEEN": str(seen), "RESULT": str(int(result))},
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = seen.read_text().splitlines() if seen.exists() else []
    return run, [json.loads(line) for line in lines]


def test_the_cli_plans_in_its_prepare_stage_and_executes_after_it(tmp_path):
    """`planning`, `executing`, `current_state`, `current_host`, `operation_hash`: what an
    operation body sees under `pyinfra --dry` (planning) and `pyinfra -y` (executing)."""
    dry, seen = _cli(tmp_path, "--dry", result=True)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert [entry["at"] for entry in seen] == ["body", "body"]  # --dry: no callback runs
    for entry in seen:
        assert entry["planning"] is True and entry["executing"] is False
        assert entry["host"] == "@local" and entry["state"] == "State"
        assert entry["op"]  # each operation has its hash while its body runs
    assert seen[0]["op"] != seen[1]["op"]

    yes, seen = _cli(tmp_path, "-y", result=True)
    assert yes.returncode == 0, yes.stdout + yes.stderr
    bodies = [entry for entry in seen if entry["at"] == "body"]
    callbacks = [entry for entry in seen if entry["at"] == "callback"]
    assert len(bodies) == 2 and len(callbacks) == 2
    assert all(e["planning"] is False and e["executing"] is True for e in bodies)
    assert all(e["executing"] and e["host"] == "@local" and e["same"] for e in callbacks)


def test_a_host_callback_that_returns_false_fails_the_run(tmp_path):
    run, seen = _cli(tmp_path, "-y", result=False)
    assert run.returncode != 0, run.stdout + run.stderr
    assert [entry["at"] for entry in seen].count("callback") == 2


def test_a_host_callback_gets_state_and_host_and_fails_its_operation_with_false():
    """`host_callback` at the API level: what pyinfra passes, and what its result does."""
    state = _local()
    local = state.inventory.get_host("@local")
    got = []

    def callback(state, host, value, *, result):
        got.append((state, host, value))
        return result

    @operation()
    def step(result: bool):
        yield internals.host_callback(callback, "value", result=result)

    add_op(state, step, result=True)
    add_op(state, step, result=False)
    state.set_stage(StateStage.Execute)
    with pytest.raises(PyinfraError, match="No hosts remaining"):
        run_ops(state)
    assert got == [(state, local, "value"), (state, local, "value")]
    assert local in internals.failed_hosts(state)


def test_a_host_callback_must_take_state_and_host_first():
    """pyinfra would call such a function without them and ignore its False."""

    def no_host(value):
        return False

    def swapped(host, state):
        return False

    for function in (no_host, swapped):
        with pytest.raises(TypeError, match="must be `state, host`"):
            internals.host_callback(function)


# ---- the run's hosts


def test_fail_host_takes_a_host_out_of_the_run_and_revive_host_puts_it_back():
    state, server, agent = _two_hosts()
    internals.fail_host(server, state)
    assert internals.failed_hosts(state) == {server}
    assert internals.active_hosts(state) == {agent}
    internals.fail_host(server, state)  # once is enough: no second failure counted
    internals.revive_host(state, server)
    assert internals.failed_hosts(state) == set()
    assert internals.active_hosts(state) == {server, agent}
    internals.fail_host(server, state)
    with pytest.raises(PyinfraError, match="No hosts remaining"):
        internals.fail_host(agent, state)


def test_fail_host_defaults_to_the_run_in_progress():
    state, server, _ = _two_hosts()
    with ctx_state.use(state):
        internals.fail_host(server)
    assert server in internals.failed_hosts(state)


def test_planning_reads_the_stage_and_is_false_outside_a_run():
    state, _, _ = _two_hosts()
    assert internals.planning() is False
    assert internals.planning(state) is False  # setup
    state.set_stage(StateStage.Prepare)
    assert internals.planning(state) is True
    with ctx_state.use(state):
        assert internals.planning() is True
    state.set_stage(StateStage.Execute)
    assert internals.planning(state) is False


def test_connector_arguments_run_a_command_on_another_host_as_pyinfra_would():
    """Host data's connector arguments (here `_env`) reach `run_shell_command`; `_stdin` is
    left to the caller, who passes a token on it."""
    state = _local(_env={"OCEANID_PROBE": "from host data"})
    local = state.inventory.get_host("@local")
    arguments = internals.connector_arguments(state, local)
    assert arguments["_env"] == {"OCEANID_PROBE": "from host data"}
    assert "_stdin" not in arguments and "name" not in arguments
    ok, output = local.run_shell_command(
        StringCommand("sh", "-c", '"echo $OCEANID_PROBE; cat"'),
        _stdin="a token",
        print_output=False,
        print_input=False,
        **arguments,
    )
    assert ok and output.stdout_lines == ["from host data", "a token"]


# ---- pyinfra's API driven by hand


class _Fails(FactBase):
    def command(self) -> str:
        return "exit 3"


class _Answers(FactBase):
    def command(self) -> str:
        return "echo 42"

    def process(self, output):
        return int(output[0])


def test_read_fact_reads_and_keeps_a_host_whose_fact_failed_in_the_run():
    inventory = Inventory((["@local"], {}))
    state = internals.connected_state(inventory)
    local = inventory.get_host("@local")
    assert internals.active_hosts(state) == {local} and internals.planning(state)
    assert internals.read_fact(state, local, _Answers) == (42, True)
    assert internals.read_fact(state, local, _Fails) == (None, False)
    assert internals.active_hosts(state) == {local} and not internals.failed_hosts(state)
    assert internals.read_fact(state, local, _Answers) == (42, True)


def test_connected_state_leaves_out_a_host_that_does_not_answer():
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    closed = ("127.0.0.1", {"ssh_port": port, "ssh_connect_retries": 0})
    inventory = Inventory((["@local", closed], {}))
    state = internals.connected_state(inventory)
    assert {h.name for h in internals.active_hosts(state)} == {"@local"}


def test_cli_inventory_loads_group_data_which_sees_the_hosts_being_loaded(tmp_path, monkeypatch):
    """`cli_inventory` and `loading_inventory_names` (group_data/all.py's view of the run)."""
    # a name of its own: pyinfra imports an inventory file as a module, cached by its name
    (tmp_path / "fence_inventory.py").write_text('servers = ["tethys", "styx"]\n')
    (tmp_path / "group_data").mkdir()
    (tmp_path / "group_data" / "all.py").write_text(
        "from oceanid.pyinfra_internals import loading_inventory_names\n"
        "loading = loading_inventory_names()\n"
    )
    monkeypatch.chdir(tmp_path)
    inventory = internals.cli_inventory("fence_inventory.py")
    assert [h.name for h in inventory] == ["tethys", "styx"]
    assert inventory.get_host("tethys").data.loading == ["tethys", "styx"]
    assert "servers" in inventory.get_host("styx").groups
    assert internals.loading_inventory_names() is None  # only while pyinfra loads it


def test_as_current_host_is_pyinfras_host():
    state, server, agent = _two_hosts()
    with internals.as_current_host(server):
        assert host.name == "server" and internals.current_host() is server
        with internals.as_current_host(agent):
            assert host.name == "agent"
        assert host.name == "server"
    assert not ctx_host.isset() or internals.current_host() is not server


# ---- the diff --diff prints


def test_color_diff_is_a_unified_diff_coloured_where_pyinfra_colours():
    lines = list(internals.color_diff(["keep", "old", "same"], ["keep", "new", "same"]))
    plain = [ANSI.sub("", line) for line in lines]  # colour only on a terminal
    assert plain == ["@@ -1,3 +1,3 @@", "  keep", "- old", "+ new", "  same"], plain


# ---- the operation order


ORDER_DEPLOY = """
def role(first_line_for):
    if host.name == first_line_for:
        step(name=host.name + " first")
    else:
        step(name=host.name + " second")
    step(name="together")


role(FIRST)
"""


@pytest.mark.parametrize("first", ["server", "agent"])
def test_operations_run_in_the_order_of_the_lines_that_queue_them(tmp_path, monkeypatch, first):
    """The deploys rely on it (deploys/k3s/__init__.py): across hosts, pyinfra (as the CLI)
    orders operations by the lines that queued them, not by inventory order, and one queued
    from the same line on several hosts is one step, after each host's steps before it."""
    monkeypatch.setattr(pyinfra, "is_cli", True)
    original = pyinfra_operation.get_operation_order_from_stack
    calls = []

    def counted(state):
        calls.append(state)
        return internals.order_from_frames(state)

    try:
        assert internals.install_op_order()
        # pyinfra looks the order up in its module at each operation: the installed one is used
        pyinfra_operation.get_operation_order_from_stack = counted

        @operation()
        def step():
            yield StringCommand("true")

        state, _, _ = _two_hosts()
        path = str(tmp_path / "deploy.py")
        state.current_deploy_filename, state.current_op_file_number = path, 0
        state.set_stage(StateStage.Prepare)
        code = compile(ORDER_DEPLOY, path, "exec")
        for each in state.inventory:
            with ctx_state.use(state), ctx_host.use(each):
                exec(code, {"host": host, "step": step, "FIRST": first})
    finally:
        pyinfra_operation.get_operation_order_from_stack = original
    assert len(calls) == 4
    names = [next(iter(state.get_op_meta(h).names)) for h in state.get_op_order()]
    second = "agent" if first == "server" else "server"
    assert names == [f"{first} first", f"{second} second", "together"]


# ---- the fence holds: no internal is reached from anywhere else

FENCE = REPO / "oceanid" / "pyinfra_internals.py"
SCANNED = ("deploys", "operations", "oceanid", "facts", "lab", "group_data", "inventories")
PUBLIC_MODULES = {
    # module -> the names importable from it; None: any name
    "pyinfra": {"host", "state", "inventory", "logger", "config"},
    "pyinfra.api": {
        name
        for name in dir(importlib.import_module("pyinfra.api"))
        if not name.startswith("_")
        and not isinstance(getattr(importlib.import_module("pyinfra.api"), name), type(os))
    },
    "pyinfra.api.command": None,  # StringCommand and the rest, make_formatted_string_command
    "pyinfra.api.exceptions": None,
    "pyinfra.api.host": {"Host"},
    "pyinfra.api.state": {"State"},
}
# What the State, a Host and the CLI keep for their own running of a deploy
INTERNAL_ATTRIBUTES = {
    "failed_hosts", "active_hosts", "fail_hosts", "activate_host", "is_executing",
    "current_stage", "set_stage", "current_op_hash", "current_op_file_number",
    "current_deploy_filename", "is_cli", "op_hash_order", "op_meta", "get_op_order",
}  # fmt: skip
# names whose attributes are ours: a class's own fields, the fence module itself
OWN_NAMES = {"self", "internals", "pyinfra_internals"}


def _public_import(module: str, names: list[str]) -> bool:
    if re.fullmatch(r"pyinfra\.(operations|facts)\.(?!util\b)\w+", module):
        return True
    if module in ("pyinfra.operations", "pyinfra.facts"):
        return "util" not in names
    allowed = PUBLIC_MODULES.get(module, set())
    return allowed is None or set(names) <= allowed


def _internal_uses(path: Path) -> list[str]:
    found = []
    root = REPO if path.is_relative_to(REPO) else path.parents[1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        where = f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            top = node.module.split(".")[0]
            names = [alias.name for alias in node.names]
            if top in ("pyinfra", "pyinfra_cli") and not _public_import(node.module, names):
                found.append(f"{where}: from {node.module} import {', '.join(names)}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in ("pyinfra", "pyinfra_cli"):
                    found.append(f"{where}: import {alias.name}")
        elif (
            isinstance(node, ast.Attribute)
            and node.attr in INTERNAL_ATTRIBUTES
            and not (isinstance(node.value, ast.Name) and node.value.id in OWN_NAMES)
        ):
            found.append(f"{where}: .{node.attr}")
    return found


def test_every_pyinfra_internal_is_reached_through_the_fence_only():
    files = [p for folder in SCANNED for p in sorted((REPO / folder).rglob("*.py"))]
    files += [REPO / "inventory.py"]
    assert FENCE in files
    found = [use for path in files if path != FENCE for use in _internal_uses(path)]
    assert found == [], "use oceanid/pyinfra_internals.py:\n" + "\n".join(found)


def test_the_guard_sees_an_internal(tmp_path):
    """The check above can fail: each kind of use it looks for is found."""
    sample = tmp_path / "oceanid" / "sample.py"
    sample.parent.mkdir()
    sample.write_text(
        "from pyinfra.context import ctx_state\n"
        "from pyinfra.api.state import StateStage\n"
        "from pyinfra.operations.util.files import generate_color_diff\n"
        "import pyinfra\n"
        "def f(state):\n"
        "    return state.failed_hosts\n"
    )
    found = _internal_uses(sample)
    assert [use.split(": ", 1)[1] for use in found] == [
        "from pyinfra.context import ctx_state",
        "from pyinfra.api.state import StateStage",
        "from pyinfra.operations.util.files import generate_color_diff",
        "import pyinfra",
        ".failed_hosts",
    ]


# ---- a command whose output is shown as it comes (operations/progress.py)


def test_a_shown_commands_output_is_printed_at_any_verbosity_and_a_failure_once(
    monkeypatch, caplog
):
    """pyinfra prints a StringCommand's output only with print_output (-vvv), and a failed
    one's through its logger; a ShownCommand's is printed as it comes (pyinfra's `echo`, which
    its CLI sets to click's), and once. (Line by line while it runs, in a plain CLI run:
    tests/unit/test_progress.py.)"""
    from pyinfra.api import output

    echoed: list[str] = []
    monkeypatch.setattr(output, "_echo", lambda message=None, **kwargs: echoed.append(message))
    state = _local()

    @operation()
    def step(command: StringCommand):
        yield command

    add_op(state, step, StringCommand("echo", "plain-line"))
    add_op(state, step, internals.ShownCommand("echo", "shown-line"))
    add_op(state, step, internals.ShownCommand("echo failed-line >&2; exit 1"))
    state.set_stage(StateStage.Execute)
    assert not state.print_output
    with pytest.raises(PyinfraError, match="No hosts remaining"):
        run_ops(state)
    said = echoed + [record.getMessage() for record in caplog.records]
    assert not any("plain-line" in line for line in said)
    assert "[@local] shown-line" in echoed
    assert sum("failed-line" in line for line in said) == 1
