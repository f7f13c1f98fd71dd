"""Upgrades under Kubernetes' version-skew rules (issue 20, items 4 and 5): one minor version at
a time, an etcd snapshot before the first server is replaced, servers one at a time and agents
only once every server runs the new version in the run, and a SQLite datastore never converted
to etcd by surprise.

The plan is pyinfra's own (a State in CLI mode, as `pyinfra inventory.py deploys/site.py` builds
it, tests/unit/test_k3s_site_plan.py); what runs at execution is run here for real, by sh, with
a fake `k3s` on PATH where a host's k3s answers.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pyinfra.api import Config, FunctionCommand, Inventory, State
from pyinfra.api.state import StateStage
from pyinfra.context import ctx_host, ctx_state

from deploys import k3s
from deploys.k3s import units
from facts.k3s import DATASTORE_DIR, K3sInstall
from facts.managed import ManagedState, PathState
from operations import k3s as k3s_ops
from tests.unit import test_k3s_site_plan as site_plan
from tests.unit.test_k3s_operations import (
    ShellHost,
    _fake_tools,
    _install_lines,
    _probed,
)
from tests.unit.test_operations import assert_refused, run_op

_cli_mode = site_plan._cli_mode  # the site plan's fixtures: pyinfra's CLI mode, a Site
site = site_plan.site
_converged, _plan = site_plan._converged, site_plan._plan
PINNED = "v1.33.4+k3s1"  # group_data/all.py's k3s.version
OLDER = "v1.33.3+k3s1"


# ---- one minor version at a time


@pytest.mark.parametrize(
    "installed,wanted,through",
    [
        ("v1.31.4+k3s1", "v1.33.4+k3s1", "a v1.32.x release first"),
        ("v1.30.2+k3s2", "v1.33.4+k3s1", "a v1.31.x, then v1.32.x release first"),
    ],
)
def test_a_jump_of_more_than_one_minor_version_is_refused_naming_the_steps(
    caplog, installed, wanted, through
) -> None:
    problem = k3s_ops.version_step_problem(installed, wanted)
    assert problem is not None and through in problem and problem.endswith(f"then {wanted}")
    role, facts = _probed(install=_install_lines(version=installed))
    run = run_op(k3s_ops.version_step, role, wanted, facts=facts, name="tethys")
    message = assert_refused(run, caplog, "skips a minor version")
    assert f"{installed} -> {wanted}" in message and "k3s.version" in message


@pytest.mark.parametrize(
    "installed", [None, PINNED, "v1.33.1+k3s1", "v1.33.9+k3s2", "v1.32.9+k3s1"]
)
def test_one_minor_version_or_a_patch_either_way_goes_on(installed) -> None:
    assert k3s_ops.version_step_problem(installed, PINNED) is None
    role, facts = _probed(install=_install_lines(version=installed))
    run = run_op(k3s_ops.version_step, role, PINNED, facts=facts, name="tethys")
    assert run.commands == [] and run.noop is not None


def test_going_back_a_minor_version_is_refused(caplog) -> None:
    role, facts = _probed(install=_install_lines(version="v1.34.1+k3s1"))
    run = run_op(k3s_ops.version_step, role, PINNED, facts=facts, name="tethys")
    message = assert_refused(run, caplog, "goes back a minor version")
    assert "restoring its datastore" in message


# ---- the datastore: SQLite is not converted to etcd unless data says so

KEY = "hosts.tethys.k3s.convert_datastore_to_etcd"


def _datastore(line: str, cluster_init: bool = True, convert: bool = False):
    role, facts = _probed(install=[*_install_lines(), line])
    return run_op(
        k3s_ops.datastore,
        role,
        cluster_init=cluster_init,
        convert=convert,
        key=KEY,
        facts=facts,
        name="tethys",
    )


def test_a_sqlite_datastore_with_cluster_init_is_refused_naming_host_and_key(caplog) -> None:
    run = _datastore("datastore sqlite -")
    message = assert_refused(run, caplog, "SQLite datastore")
    assert message.startswith("tethys: ") and f"set {KEY}: true" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "line,cluster_init,convert",
    [
        ("datastore sqlite -", True, True),  # the host's settings say so
        ("datastore sqlite etcd", True, False),  # converted already: etcd is what k3s uses
        ("datastore - etcd", True, False),
        ("datastore - -", True, False),  # a new server
        ("datastore sqlite -", False, False),  # no cluster-init: SQLite stays SQLite
    ],
)
def test_otherwise_the_datastore_goes_on(line, cluster_init, convert) -> None:
    run = _datastore(line, cluster_init, convert)
    assert run.commands == [] and run.noop is not None


def test_the_install_fact_reads_the_datastore_in_its_one_command(tmp_path: Path) -> None:
    """The role's batched read (K3sInstall's command, no command of its own)."""
    db = tmp_path / "db"
    db.mkdir()
    command = K3sInstall().command().replace(DATASTORE_DIR, str(db))
    env = _fake_tools(tmp_path, k3s="exit 1", systemctl="echo inactive")
    for present, expected in [((), (False, False)), (("state.db",), (True, False))]:
        for name in present:
            (db / name).write_text("")
        done = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True)
        found = K3sInstall().process(done.stdout.splitlines())
        assert (found["sqlite_datastore"], found["etcd_datastore"]) == expected
    (db / "etcd").mkdir()
    done = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True)
    found = K3sInstall().process(done.stdout.splitlines())
    assert (found["sqlite_datastore"], found["etcd_datastore"]) == (True, True)


# ---- the etcd snapshot before the first server's binary is replaced


def _snapshot_op(installed: str | None, datastore: str):
    role, facts = _probed(install=[*_install_lines(version=installed), datastore])
    return run_op(k3s_ops.etcd_snapshot, role, "v1.33.5+k3s1", facts=facts, name="tethys")


def test_an_upgrade_on_etcd_takes_a_snapshot_named_after_the_version() -> None:
    run = _snapshot_op(PINNED, "datastore - etcd")
    assert len(run.raw) == 1 and isinstance(run.raw[0], FunctionCommand)
    assert run.raw[0].function is k3s_ops._take_snapshot
    assert run.raw[0].args == ("pre-upgrade-v1.33.5-k3s1", "v1.33.5+k3s1")


@pytest.mark.parametrize(
    "installed,datastore",
    [("v1.33.5+k3s1", "datastore - etcd"), (None, "datastore - -"), (PINNED, "datastore sqlite -")],
)
def test_no_snapshot_without_an_upgrade_or_without_etcd(installed, datastore) -> None:
    run = _snapshot_op(installed, datastore)
    assert run.commands == [] and run.noop is not None


@pytest.mark.parametrize("saved", [True, False])
def test_the_snapshot_is_taken_and_its_name_printed_or_the_upgrade_stops(
    tmp_path, monkeypatch, saved
) -> None:
    monkeypatch.setattr(k3s_ops, "_connector_arguments", lambda state, target: {})
    k3s = (
        'echo "time=\\"x\\" level=info msg=\\"Snapshot $4-tethys-1765000000 saved.\\"" >&2'
        if saved
        else 'echo "level=fatal msg=\\"Error: see server log for details: etcd datastore '
        'disabled\\"" >&2; exit 1'
    )
    check = '[ "$1 $2 $3" = "etcd-snapshot save --name" ] || exit 9'
    tethys = ShellHost("tethys", _fake_tools(tmp_path, k3s=f"{check}; {k3s}"))
    logged = []
    tethys.log_styled = lambda message, **style: logged.append(message)  # type: ignore[method-assign]
    ok = k3s_ops._take_snapshot(None, tethys, "pre-upgrade-v1.33.5-k3s1", "v1.33.5+k3s1")
    assert ok is saved
    assert tethys.commands[0][0] == "k3s etcd-snapshot save --name pre-upgrade-v1.33.5-k3s1"
    if saved:
        assert logged[0].startswith(
            "etcd snapshot pre-upgrade-v1.33.5-k3s1-tethys-1765000000 saved before k3s is "
            "upgraded to v1.33.5+k3s1"
        )
    else:
        assert "etcd datastore disabled" in logged[0] and "was not upgraded" in logged[0]


# ---- the order of a whole cluster's upgrade, as pyinfra plans it


def _upgrading(host_name: str, planned) -> dict:
    """A converged node that runs OLDER (the pinned binary differs), etcd on the server."""
    facts = _converged(host_name, planned)
    state = facts[ManagedState]
    old = state["paths"][units.BINARY]
    state["paths"][units.BINARY] = PathState(old.kind, old.mode, old.user, old.group, "0" * 64)
    install = state["probes"][k3s_ops.INSTALL_PROBE]
    install[0] = f"version k3s version {OLDER} (148243c4)"
    if host_name == "tethys":
        install.append("datastore - etcd")
    return facts


def test_servers_snapshot_then_upgrade_one_at_a_time_then_agents_checked_then_swapped(site):
    state, order = _plan(site(), _upgrading)
    names = [name for name, _, _ in order]
    snapshot = names.index("etcd snapshot before the upgrade")
    server_binary = names.index("k3s binary (pinned, SHA-256 verified)")
    server_start = names.index("k3s")
    wait = names.index("k3s API answers before agents join")
    agents_check = names.index("k3s agent upgraded only after every server")
    agent_binary = names.index("k3s-agent binary (pinned, SHA-256 verified)")
    assert snapshot < server_binary < server_start < wait < agents_check < agent_binary
    assert order[snapshot][1] == ["tethys"]
    assert order[agents_check][1] == ["styx", "calypso"]

    # the servers' restart: one host at a time, between its turn and its done mark
    meta = next(
        meta for meta in state.op_meta.values() if "k3s" in meta.names and len(meta.names) == 1
    )
    assert meta.global_arguments["_serial"] is True
    started = order[server_start][2]["tethys"]
    assert [getattr(c, "function", None) for c in (started[0], started[-1])] == [
        k3s_ops._server_turn,
        k3s_ops._server_done,
    ]
    assert "systemctl restart k3s.service" in started[1].get_raw_value()
    assert started[0].args == (PINNED, [units.BINARY])  # what goes back if it may not go on
    for agent in ("styx", "calypso"):
        check = order[agents_check][2][agent]
        assert len(check) == 1 and check[0].function is k3s_ops._servers_upgraded
        assert check[0].args == (["tethys"], PINNED)


def _with(install_line: str, version: str = OLDER):
    """tethys upgrading from `version`, its datastore as `install_line` says; the agents on
    the pinned version already (an agent upgrade would wait for tethys: `servers_first`)."""

    def facts_for(host_name: str, planned) -> dict:
        if host_name != "tethys":
            return _converged(host_name, planned)
        facts = _upgrading(host_name, planned)
        if host_name == "tethys":
            install = facts[ManagedState]["probes"][k3s_ops.INSTALL_PROBE]
            install[0] = f"version k3s version {version} (148243c4)"
            install[-1] = install_line
        return facts

    return facts_for


def _failed_while_planning(planned, facts_for, yes: bool) -> list[str]:
    """Queue k3s.deploy for every host, all connected first (as pyinfra's CLI does, so one
    host failing while planning leaves the others); the hosts that failed. `yes`: as with
    `pyinfra -y`, which runs no operation's body before executing."""
    inventory = Inventory(
        (list(site_plan.INVENTORY), {}),
        k3s_servers=(["tethys"], {}),
        k3s_agents=(["styx", "calypso"], {}),
    )
    state = State(inventory, Config(), check_for_changes=not yes)
    state.current_deploy_filename = __file__
    state.current_op_file_number = 0
    state.set_stage(StateStage.Prepare)
    for host in inventory:
        host.get_fact = site_plan._counting(host.name, facts_for(host.name, planned))
        state.activate_host(host)
    for host in inventory:
        with ctx_state.use(state), ctx_host.use(host):
            plan = planned.hosts[host.name]
            k3s.deploy(plan, planned, k3s.declare(plan, planned))
    return sorted(host.name for host in state.failed_hosts)


@pytest.mark.parametrize("yes", [False, True])
def test_a_minor_jump_fails_the_node_while_planning_nothing_runs_there(site, yes) -> None:
    facts_for = _with("datastore - etcd", version="v1.31.9+k3s1")
    failed = _failed_while_planning(site(), facts_for, yes)
    assert failed == ["tethys"]


@pytest.mark.parametrize("yes", [False, True])
@pytest.mark.parametrize("convert", [False, True])
def test_a_sqlite_server_fails_while_planning_unless_its_data_says_convert(
    site, data, convert, yes
) -> None:
    if convert:
        data.setdefault("hosts", {}).setdefault("tethys", {}).setdefault("k3s", {})[
            "convert_datastore_to_etcd"
        ] = True
    failed = _failed_while_planning(site(), _with("datastore sqlite -"), yes)
    assert failed == ([] if convert else ["tethys"])


def test_a_converged_cluster_checks_and_snapshots_nothing(site) -> None:
    _, order = _plan(site(), _converged)
    for name, _, by_host in order:
        assert not any(by_host.values()), name


# ---- what runs at execution: a failed server stops the next server and every agent


class Run:
    """pyinfra's State as the guards read it (a weak reference keys the run's record)."""

    def __init__(self, *hosts: ShellHost) -> None:
        self.inventory = list(hosts)
        self.active_hosts = set(hosts)
        self.failed_hosts: set = set()


def _k3s_host(name: str, tmp_path: Path, version: str) -> ShellHost:
    folder = tmp_path / name
    folder.mkdir()
    env = _fake_tools(folder, k3s=f'echo "k3s version {version} (148243c4)"')
    return ShellHost(name, env)


@pytest.fixture
def executing(monkeypatch):
    monkeypatch.setattr(k3s_ops, "_connector_arguments", lambda state, target: {})


def test_a_server_after_one_that_failed_is_put_back_and_stops(tmp_path, executing) -> None:
    one, two = _k3s_host("tethys", tmp_path, OLDER), _k3s_host("oceanus", tmp_path, OLDER)
    run = Run(one, two)
    binary = tmp_path / "k3s"
    binary.write_text("new")
    (tmp_path / "k3s.previous").write_text("old")
    assert k3s_ops._server_turn(run, one, PINNED, [str(binary)]) is True
    # tethys's restart failed and was rolled back: no done mark, oceanus's turn comes
    assert k3s_ops._server_turn(run, two, PINNED, [str(binary)]) is False
    assert binary.read_text() == "old" and not (tmp_path / "k3s.previous").exists()
    assert two.messages == [
        f"k3s server tethys failed its upgrade in this run: k3s on oceanus was not upgraded to "
        f"{PINNED} (servers one at a time; its binary was put back)"
    ]


def test_servers_that_came_up_let_the_next_one_go(tmp_path, executing) -> None:
    one, two = _k3s_host("tethys", tmp_path, PINNED), _k3s_host("oceanus", tmp_path, OLDER)
    run = Run(one, two)
    assert k3s_ops._server_turn(run, one, PINNED, [])
    assert k3s_ops._server_done(run, one)
    assert k3s_ops._server_turn(run, two, PINNED, []) and two.messages == []


@pytest.mark.parametrize("how", ["failed", "rolled back", "not there"])
def test_no_agent_is_upgraded_while_a_server_is_not_on_the_new_version(
    tmp_path, executing, how
) -> None:
    runs = OLDER if how == "rolled back" else PINNED
    tethys, styx = _k3s_host("tethys", tmp_path, runs), _k3s_host("styx", tmp_path, OLDER)
    run = Run(tethys, styx)
    if how == "failed":
        run.failed_hosts.add(tethys)
        run.active_hosts.discard(tethys)
    if how == "not there":
        run.active_hosts.discard(tethys)
    assert k3s_ops._servers_upgraded(run, styx, ["tethys"], PINNED) is False
    problem = {
        "failed": "k3s server tethys failed in this run",
        "rolled back": f"k3s server tethys runs {OLDER}, not {PINNED}",
        "not there": "k3s server tethys is not in this run",
    }[how]
    assert styx.messages == [
        f"{problem}: k3s on styx was not upgraded to {PINNED} (agents only once every server "
        "runs it: a kubelet is never newer than its API server)"
    ]


def test_a_server_whose_upgrade_failed_in_this_run_stops_the_agents(tmp_path, executing):
    """Its restart failed (no done mark) before pyinfra marks the host failed."""
    tethys, styx = _k3s_host("tethys", tmp_path, PINNED), _k3s_host("styx", tmp_path, OLDER)
    run = Run(tethys, styx)
    assert k3s_ops._server_turn(run, tethys, PINNED, [])
    assert not k3s_ops._servers_upgraded(run, styx, ["tethys"], PINNED)
    assert k3s_ops._server_done(run, tethys)
    assert k3s_ops._servers_upgraded(run, styx, ["tethys"], PINNED)  # newer or the same
    assert k3s_ops._servers_upgraded(run, styx, ["tethys"], OLDER) and styx.messages[1:] == []


def test_an_agent_upgrade_without_its_servers_in_the_run_is_refused_while_planning(caplog):
    role, facts = _probed(install=_install_lines(version=OLDER))
    run = run_op(
        k3s_ops.servers_first, role, ["tethys"], PINNED, facts=facts, name="styx"
    )  # run_op's state holds no host named tethys: as with `--limit styx`
    message = assert_refused(run, caplog, "not in this run")
    assert f"{OLDER} -> {PINNED} on an agent waits for every server" in message
    same, facts = _probed(install=_install_lines(version=PINNED))
    run = run_op(k3s_ops.servers_first, same, ["tethys"], PINNED, facts=facts, name="styx")
    assert run.commands == [] and run.noop.startswith(f"k3s stays {PINNED}")


def test_an_agent_after_a_server_that_failed_in_this_run_says_so(caplog):
    """With -y an agent's step runs at execution, after the servers': a server that failed is
    no longer among the active hosts, and the refusal names its failure, not `--limit`."""
    role, facts = _probed(install=_install_lines(version=OLDER))
    run = run_op(
        k3s_ops.servers_first, role, ["tethys"], PINNED, facts=facts, name="styx",
        failed=["tethys"],
    )  # fmt: skip
    message = assert_refused(run, caplog, "k3s server tethys failed in this run")
    assert f"k3s on styx was not upgraded to {PINNED}" in message
    assert "--limit" not in message
