"""`node_tunnel_mode: daemonset` makes before it breaks (issue 20 item 2): the host connector
stops only once the Cloudflare API lists another connector on its tunnel.

The API is the stand-in (tests/standins/cloudflare_api.py) on loopback, reached through the real
SDK; its `/connections` lists connectors as the real API does (one `Client` per cloudflared, its
`id` the connector ID that cloudflared's `/ready` answers as `connectorId`). The operation runs
through pyinfra on `@local`, its `systemctl` a recording shim put first on the command's PATH,
so the test sees whether the stop ran; the host's unit state and `/ready` come from values.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from pathlib import Path

import pyinfra
import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.operation import add_op
from pyinfra.api.operations import run_ops
from pyinfra.api.state import StateStage

from facts.cloudflared import CloudflaredReady
from facts.managed import ManagedState, empty_state
from oceanid import cloudflare_dns as cf
from operations import _desired, cloudflared
from operations.managed import DesiredState
from tests.unit.test_cloudflare_dns import ACCOUNT, NODE, Standin, default_seed, start_standin

__all__ = ["start_standin"]  # the stand-in's fixture, used by name below

HOST_CONNECTOR = "6b3c1c2e-3f4a-4e43-9d1c-1d5b0f3d8a11"
POD_CONNECTOR = "9d2e4f60-1b2c-4d3e-8f70-a1b2c3d4e5f6"
UNIT = "oceanid-test-connector.service"


@pytest.fixture
def api(start_standin) -> Standin:
    """The node tunnel served by the host connector alone, as before the switch."""
    standin = start_standin(default_seed())
    standin.state.set_connectors(NODE, [{"id": HOST_CONNECTOR}])
    return standin


def _add_pod(api: Standin, after: float = 0.0) -> None:
    """The DaemonSet's pod connects (after ``after`` seconds): a second connector."""

    def connect() -> None:
        api.state.set_connectors(NODE, [{"id": HOST_CONNECTOR}, {"id": POD_CONNECTOR}])

    if after:
        threading.Timer(after, connect).start()
    else:
        connect()


# -- the wait -------------------------------------------------------------------------------------


def test_the_host_connector_alone_never_counts(api: Standin):
    assert cf.other_connectors(api.client(), ACCOUNT, NODE, HOST_CONNECTOR) == []
    _add_pod(api)
    assert cf.other_connectors(api.client(), ACCOUNT, NODE, HOST_CONNECTOR) == [POD_CONNECTOR]


def test_a_connector_with_only_pending_connections_does_not_count(api: Standin):
    _add_pod(api)
    for conn in api.state.data["tunnels"][NODE]["connectors"][1]["conns"]:
        conn["is_pending_reconnect"] = True
    assert cf.other_connectors(api.client(), ACCOUNT, NODE, HOST_CONNECTOR) == []


def test_the_wait_ends_when_a_second_connector_appears(api: Standin):
    said: list[str] = []
    _add_pod(api, after=0.5)
    started = time.monotonic()
    other = cf.wait_for_other_connector(
        api.client(), ACCOUNT, NODE, HOST_CONNECTOR, timeout=10, interval=0.1, say=said.append
    )
    assert other == POD_CONNECTOR
    assert 0.4 < time.monotonic() - started < 5
    assert said and f"waiting for another connector on tunnel {NODE}" in said[0]


def test_the_wait_fails_after_its_bound_naming_the_tunnel_and_what_to_check(api: Standin):
    said: list[str] = []
    started = time.monotonic()
    with pytest.raises(cf.CloudflareError) as caught:
        cf.wait_for_other_connector(
            api.client(),
            ACCOUNT,
            NODE,
            HOST_CONNECTOR,
            timeout=0.6,
            interval=0.1,
            say=said.append,
            tell_every=0.2,
            check="the pods",
        )
    assert 0.6 <= time.monotonic() - started < 5
    message = str(caught.value)
    assert NODE in message and HOST_CONNECTOR in message and "check the pods" in message
    assert len(said) >= 2  # told again while it waited, not only once


# -- the operation, through pyinfra ---------------------------------------------------------------


@pytest.fixture
def shim(tmp_path: Path) -> tuple[Path, Path]:
    """A `systemctl` that records its arguments, first on the operation's PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "systemctl.calls"
    script = bin_dir / "systemctl"
    script.write_text(f'#!/bin/sh\necho "$@" >> {record}\n')
    script.chmod(0o755)
    return bin_dir, record


def _run(api: Standin, shim: tuple[Path, Path], unit: dict, timeout: float = 5.0):
    """Plan and execute `stopped` on @local; returns (the State, whether it changed)."""
    bin_dir, _ = shim
    state = State(Inventory((["@local"], {})), Config())
    state.set_stage(StateStage.Connect)
    connect_all(state)
    state.set_stage(StateStage.Prepare)
    _desired.STATE_CACHE.clear()
    pyinfra.is_cli = False  # add_op, as an API user calls operations
    (host,) = list(state.inventory)
    facts = {
        ManagedState: {**empty_state(), "arch": "amd64", "units": {UNIT: unit}},
        CloudflaredReady: {"status": 200, "ready_connections": 4, "connector_id": HOST_CONNECTOR},
    }
    host.get_fact = lambda cls, *a, **k: facts[cls]  # type: ignore[method-assign]
    (meta,) = add_op(
        state,
        cloudflared.stopped,
        desired=DesiredState(name="gpu host"),
        unit_name=UNIT,
        access=api.access(),
        tunnel_id=NODE,
        metrics_address="127.0.0.1:2200",
        timeout=timeout,
        interval=0.1,
        check="the pods",
        _env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
    ).values()
    changed = meta._maybe_is_change
    state.set_stage(StateStage.Execute)
    with contextlib.suppress(PyinfraError):  # "No hosts remaining!": the one host failed
        run_ops(state)
    return state, changed


RUNNING = {"enabled": "enabled", "active": "active"}


def _errors(state: State) -> int:
    (results,) = state.results.values()
    return results.error_ops


def test_the_unit_stops_once_the_clusters_connector_is_up(api: Standin, shim, caplog):
    caplog.set_level(logging.INFO, logger="pyinfra")
    _add_pod(api, after=0.5)
    state, _ = _run(api, shim, RUNNING)
    assert _errors(state) == 0
    assert shim[1].read_text() == f"disable --now {UNIT}\n"
    assert f"connector {POD_CONNECTOR} serves tunnel {NODE}" in caplog.text


def test_without_another_connector_the_unit_keeps_running(api: Standin, shim, caplog):
    state, _ = _run(api, shim, RUNNING, timeout=0.5)
    assert _errors(state) == 1
    assert not shim[1].exists()  # systemctl never ran: the host connector still serves
    assert f"{UNIT} keeps running" in caplog.text and NODE in caplog.text


def test_a_unit_already_stopped_is_a_noop_and_reads_nothing(api: Standin, shim):
    before = len(api.state.requests)
    state, changed = _run(api, shim, {"enabled": "disabled", "active": "inactive"})
    assert changed is False and _errors(state) == 0
    assert not shim[1].exists()
    assert len(api.state.requests) == before


def test_a_unit_enabled_but_not_running_is_disabled_without_waiting(api: Standin, shim):
    state, _ = _run(api, shim, {"enabled": "enabled", "active": "inactive"}, timeout=0.2)
    assert _errors(state) == 0
    assert shim[1].read_text() == f"disable --now {UNIT}\n"


def test_the_requests_never_carry_the_token_in_the_path(api: Standin, shim):
    _add_pod(api)
    _run(api, shim, RUNNING)
    assert any(r["path"].endswith(f"/cfd_tunnel/{NODE}/connections") for r in api.state.requests)
    assert "tok-" not in json.dumps(api.state.requests)
