"""Cloudflare DNS records and tunnel routes, through the real SDK against the API stand-in.

Every test starts its own stand-in on 127.0.0.1 (ephemeral port) and reads the result back from
the stand-in's state and request log, not from the code under test.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudflare
import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.operation import add_op
from pyinfra.api.operations import run_ops
from pyinfra.api.state import StateStage
from pyinfra.context import ctx_host, ctx_state

from oceanid import cloudflare_dns as cf
from operations import cloudflare as cf_ops
from tests.standins.cloudflare_api import StandinState, base_url, make_server

TOKEN = "tok-5ecret-DO-NOT-PRINT-1234567890"
ACCOUNT = "0" * 31 + "a"
ZONE = "0" * 31 + "b"
BASE = "boathou.se"
CLUSTER = "11111111-1111-4111-8111-111111111111"
NODE = "22222222-2222-4222-8222-222222222222"
NODE2 = "33333333-3333-4333-8333-333333333333"
OLD = "44444444-4444-4444-8444-444444444444"
LABEL_SERVICE = "http://label-studio.apps.svc.cluster.local:8080"


def target(tunnel_id: str) -> str:
    return f"{tunnel_id}.cfargotunnel.com"


class Standin:
    """A running stand-in plus helpers to read what it holds and what it was asked."""

    def __init__(self, state: StandinState, url: str) -> None:
        self.state = state
        self.url = url

    def records(self, name: str | None = None) -> list[dict[str, Any]]:
        records = self.state.data["zones"][ZONE]["records"]
        return [r for r in records if name is None or r["name"] == name]

    def writes(self) -> list[tuple[str, str]]:
        return [(r["method"], r["path"]) for r in self.state.requests if r["method"] != "GET"]

    def requests(self, method: str, fragment: str = "") -> list[dict[str, Any]]:
        return [r for r in self.state.requests if r["method"] == method and fragment in r["path"]]

    def access(self, token: str = TOKEN, zone_id: str = ZONE) -> cf.CloudflareAccess:
        return cf.CloudflareAccess(
            api_token=token, account_id=ACCOUNT, zone_id=zone_id, base_url=self.url
        )

    def client(self, token: str = TOKEN) -> cloudflare.Cloudflare:
        return cf.make_client(token, self.url)

    def fault(self, **fault: Any) -> None:
        self.state.data["faults"].append(fault)


def default_seed(records: list[dict[str, Any]] | None = None, **tunnel_overrides: Any) -> dict:
    """One zone, the cluster tunnel (``tunnel_overrides`` apply to it) and two node tunnels."""
    cluster = {"id": CLUSTER, "name": "oceanid-cluster", "config_src": "cloudflare"}
    cluster.update(tunnel_overrides)
    return {
        "account_id": ACCOUNT,
        "zones": [{"id": ZONE, "name": BASE, "records": records or []}],
        "tunnels": [
            cluster,
            {"id": NODE, "name": "calypso", "config_src": "local"},
            {"id": NODE2, "name": "gpu2-host", "config_src": "cloudflare"},
        ],
    }


@pytest.fixture
def start_standin() -> Iterator:
    servers = []

    def start(seed: dict) -> Standin:
        state = StandinState.from_seed(seed, TOKEN)
        server = make_server(state, "127.0.0.1", 0)
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        servers.append(server)
        return Standin(state, base_url(server))

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def standin(start_standin) -> Standin:
    return start_standin(default_seed())


def wanted(gpu_hosts: dict[str, str] | None = None) -> list[cf.DesiredRecord]:
    """label.<base> on the cluster tunnel, then each GPU label's name on its own tunnel, as
    deploys/dns makes them from a site (tests/unit/test_public_names.py)."""
    hosts = {"label": CLUSTER, **({"gpu": NODE} if gpu_hosts is None else gpu_hosts)}
    return [
        cf.DesiredRecord(f"{name}.{BASE}", cf.tunnel_target(tid)) for name, tid in hosts.items()
    ]


def apply(client: cloudflare.Cloudflare, plan: cf.Plan) -> list[str]:
    """A DNS plan's writes, as the operation makes them (`apply_routes`, no tunnel to set)."""
    access = cf.CloudflareAccess(api_token=TOKEN, account_id=ACCOUNT, zone_id=plan.zone_id)
    return cf.apply_routes(client, access, cf.RoutesPlan(plan))


# -- desired state --------------------------------------------------------------------------------


def test_desired_ingress_ends_in_catch_all():
    assert cf.desired_ingress({"gpu.boathou.se": "http://localhost:8000"}) == [
        {"hostname": "gpu.boathou.se", "service": "http://localhost:8000"},
        {"service": "http_status:404"},
    ]


# -- DNS records ----------------------------------------------------------------------------------


def test_create_then_second_run_changes_nothing(standin: Standin):
    client = standin.client()
    first = cf.plan(client, ZONE, wanted())
    assert [a.kind for a in first.actions] == ["create", "create"]
    apply(client, first)

    for name, tunnel in (("label.boathou.se", CLUSTER), ("gpu.boathou.se", NODE)):
        (record,) = standin.records(name)
        assert (record["type"], record["content"], record["proxied"], record["ttl"]) == (
            "CNAME",
            target(tunnel),
            True,
            1,
        )
        assert record["comment"] == cf.MANAGED_COMMENT

    writes_before = len(standin.writes())
    second = cf.plan(client, ZONE, wanted())
    assert second.changes == ()
    assert [a.kind for a in second.actions] == ["adopt", "adopt"]
    apply(client, second)
    assert len(standin.writes()) == writes_before


def test_matching_record_is_adopted_unchanged(start_standin):
    seeded = {"type": "CNAME", "name": "gpu.boathou.se", "content": target(NODE), "proxied": True}
    label = {**seeded, "name": "label", "content": target(CLUSTER)}
    standin = start_standin(default_seed([seeded, label]))
    client = standin.client()
    result = cf.plan(client, ZONE, wanted())
    assert [a.kind for a in result.actions] == ["adopt", "adopt"]
    apply(client, result)
    assert standin.writes() == []
    assert standin.records("gpu.boathou.se")[0]["comment"] is None  # adopted, not re-labelled


def test_conflict_stops_before_any_write_and_names_everything(start_standin):
    standin = start_standin(
        default_seed([{"type": "A", "name": "gpu.boathou.se", "content": "203.0.113.9"}])
    )
    access = standin.access()
    with pytest.raises(cf.CloudflareConflictError) as raised:
        cf.plan_routes(
            access.client(),
            access,
            wanted(),
            ingress={CLUSTER: cf.desired_ingress({"label.boathou.se": LABEL_SERVICE})},
        )
    message = str(raised.value)
    assert "gpu.boathou.se" in message
    assert "A 203.0.113.9" in message  # what it points at now
    assert target(NODE) in message  # what the deploy wanted
    assert "cloudflare_takeover_records" in message  # how to let the deploy take it over
    assert "\n" not in message
    assert standin.writes() == []  # label.boathou.se was not created either
    assert standin.records("label.boathou.se") == []


def test_cname_to_elsewhere_is_a_conflict_and_apply_refuses_it(start_standin):
    standin = start_standin(
        default_seed([{"type": "CNAME", "name": "label", "content": "old-lb.example.net"}])
    )
    client = standin.client()
    result = cf.plan(client, ZONE, wanted())
    assert [c.desired.name for c in result.conflicts] == ["label.boathou.se"]
    assert "CNAME old-lb.example.net" in result.conflicts[0].message()
    with pytest.raises(cf.CloudflareConflictError):
        apply(client, result)
    assert standin.writes() == []


def test_right_target_but_not_proxied_is_not_silently_changed(start_standin):
    seeded = {"type": "CNAME", "name": "gpu", "content": target(NODE), "proxied": False, "ttl": 300}
    standin = start_standin(default_seed([seeded]))
    result = cf.plan(standin.client(), ZONE, wanted())
    assert [c.desired.name for c in result.conflicts] == ["gpu.boathou.se"]
    assert "DNS only, ttl 300" in result.conflicts[0].message()


def test_takeover_updates_in_place_and_marks_the_record(start_standin):
    standin = start_standin(
        default_seed([{"type": "A", "name": "gpu.boathou.se", "content": "203.0.113.9"}])
    )
    (before,) = standin.records("gpu.boathou.se")
    client = standin.client()
    result = cf.plan(client, ZONE, wanted(), takeover={"GPU.boathou.se."})
    assert {a.desired.name: a.kind for a in result.actions} == {
        "label.boathou.se": "create",
        "gpu.boathou.se": "update",
    }
    apply(client, result)
    (after,) = standin.records("gpu.boathou.se")
    assert after["id"] == before["id"]
    assert (after["type"], after["content"], after["proxied"], after["ttl"]) == (
        "CNAME",
        target(NODE),
        True,
        1,
    )
    assert after["comment"] == cf.MANAGED_COMMENT
    assert standin.requests("DELETE") == []


def test_managed_record_follows_a_recreated_tunnel(start_standin):
    seeded = {
        "type": "CNAME",
        "name": "gpu",
        "content": target(OLD),
        "proxied": True,
        "comment": cf.MANAGED_COMMENT,
    }
    standin = start_standin(default_seed([seeded]))
    client = standin.client()
    result = cf.plan(client, ZONE, wanted())
    assert {a.desired.name: a.kind for a in result.actions}["gpu.boathou.se"] == "update"
    apply(client, result)
    assert standin.records("gpu.boathou.se")[0]["content"] == target(NODE)


def test_only_a_aaaa_and_cname_are_taken_over(start_standin):
    records = [
        {"type": "TXT", "name": "gpu", "content": "owner=someone-else"},
        {"type": "MX", "name": "label", "content": "mx.example.net", "priority": 10},
    ]
    standin = start_standin(default_seed(records))
    client = standin.client()
    result = cf.plan(client, ZONE, wanted(), takeover={"gpu.boathou.se", "label.boathou.se"})
    assert {c.desired.name for c in result.conflicts} == {"gpu.boathou.se", "label.boathou.se"}
    gpu = next(c.message() for c in result.conflicts if c.desired.name == "gpu.boathou.se")
    assert "DNS name gpu.boathou.se holds TXT owner=someone-else" in gpu
    assert "never overwrites" in gpu and "cannot share its name" in gpu
    assert "add 'gpu.boathou.se' to" not in gpu  # taking it over is not the way out
    with pytest.raises(cf.CloudflareConflictError):
        apply(client, result)
    assert standin.writes() == []

    # Beside a matching CNAME (Cloudflare allows it, resolvers would hide it) it stops too.
    cname = {"type": "CNAME", "name": "gpu", "content": target(NODE), "proxied": True}
    both = start_standin(default_seed([cname, records[0]]))
    (conflict,) = cf.plan(both.client(), ZONE, wanted()).conflicts
    assert "holds TXT owner=someone-else" in conflict.message()


def test_never_deletes(start_standin):
    records = [
        # A stale record this deploy once made: reported, not removed.
        {"type": "CNAME", "name": "gpu9", "content": target(OLD), "proxied": True,
         "comment": cf.MANAGED_COMMENT},
        {"type": "TXT", "name": "boathou.se", "content": "v=spf1 -all"},
        # Two records on a wanted name: even with takeover the deploy would have to delete one.
        {"type": "A", "name": "gpu", "content": "203.0.113.9"},
        {"type": "AAAA", "name": "gpu", "content": "2001:db8::9"},
    ]  # fmt: skip
    standin = start_standin(default_seed(records))
    client = standin.client()
    result = cf.plan(client, ZONE, wanted(), takeover={"gpu.boathou.se"})
    assert [o.name for o in result.orphans] == ["gpu9.boathou.se"]
    (conflict,) = result.conflicts
    assert "never deletes" in conflict.message() and "2 records" in conflict.message()

    apply(client, cf.plan(client, ZONE, wanted({})))  # label only: no conflict
    assert standin.requests("DELETE") == []
    assert len(standin.records()) == len(records) + 1


def test_pagination_reads_every_page(start_standin):
    filler = [{"type": "A", "name": f"host{i:03d}", "content": "192.0.2.1"} for i in range(230)]
    label = {"type": "CNAME", "name": "label", "content": target(CLUSTER), "proxied": True}
    standin = start_standin(default_seed([*filler, label]))  # label is on page 3
    result = cf.plan(standin.client(), ZONE, wanted({}))
    assert [a.kind for a in result.actions] == ["adopt"]
    pages = [r["query"].get("page", "1") for r in standin.requests("GET", "/dns_records")]
    assert pages[:3] == ["1", "2", "3"]
    assert standin.writes() == []


# -- tunnel ingress -------------------------------------------------------------------------------


def test_remote_tunnel_ingress_is_put_when_different_then_left_alone(start_standin):
    old = {
        "ingress": [{"hostname": "label.boathou.se", "service": "http://old:80"},
                    {"service": "http_status:404"}],
        "originRequest": {"connectTimeout": 30},
    }  # fmt: skip
    standin = start_standin(default_seed(config=old))
    client = standin.client()
    rules = cf.desired_ingress({"label.boathou.se": LABEL_SERVICE})

    first = cf.plan_tunnel_config(client, ACCOUNT, CLUSTER, rules)
    assert first.kind == "update"
    assert "http://old:80" in first.describe() and LABEL_SERVICE in first.describe()
    assert standin.writes() == []  # planning only reads
    cf.apply_tunnel_config(client, ACCOUNT, first)

    tunnel = standin.state.data["tunnels"][CLUSTER]
    assert tunnel["config"]["ingress"] == rules
    assert tunnel["config"]["originRequest"] == {"connectTimeout": 30}  # other keys kept
    assert tunnel["config_version"] == 2

    second = cf.plan_tunnel_config(client, ACCOUNT, CLUSTER, rules)
    assert second.kind == "noop"
    cf.apply_tunnel_config(client, ACCOUNT, second)
    assert len(standin.requests("PUT", "/configurations")) == 1


def test_locally_managed_tunnel_is_left_to_its_config_file(standin: Standin):
    client = standin.client()
    rules = cf.desired_ingress({"gpu.boathou.se": "http://localhost:8000"})
    result = cf.plan_tunnel_config(client, ACCOUNT, NODE, rules)
    assert result.kind == "local"
    cf.apply_tunnel_config(client, ACCOUNT, result)
    assert standin.requests("GET", f"{NODE}/configurations") == []
    assert standin.writes() == []


def test_unknown_tunnel_is_named(standin: Standin):
    with pytest.raises(cf.CloudflareError, match=f"reading tunnel {OLD}.*1003 Tunnel not found"):
        cf.plan_tunnel_config(standin.client(), ACCOUNT, OLD, cf.desired_ingress({}))


def test_a_tunnel_id_that_does_not_exist_names_the_esc_key_it_came_from(standin: Standin):
    access = standin.access()
    records = [cf.DesiredRecord(f"label.{BASE}", target(OLD))]  # on a tunnel that is not there
    with pytest.raises(cf.CloudflareError) as raised:
        cf.plan_routes(access.client(), access, records, tunnel_keys={OLD: "cloudflareTunnelId"})
    message = str(raised.value)
    assert f"reading tunnel {OLD} (ESC cloudflareTunnelId)" in message
    assert "HTTP 404: 1003 Tunnel not found" in message
    assert "set ESC cloudflareTunnelId to the ID of an existing tunnel" in message
    assert "\n" not in message
    assert standin.writes() == []


def test_a_deleted_tunnel_is_refused_by_name_and_never_routed_to(start_standin):
    standin = start_standin(default_seed(deleted=True))  # the cluster tunnel was deleted
    access = standin.access()
    keys = {CLUSTER: "cloudflareTunnelId", NODE: "cloudflareNodeTunnelId"}
    with pytest.raises(cf.CloudflareError) as raised:  # label points at it: no ingress planned
        cf.plan_routes(access.client(), access, wanted(), tunnel_keys=keys)
    message = str(raised.value)
    assert f"tunnel oceanid-cluster ({CLUSTER}, ESC cloudflareTunnelId) was deleted" in message
    assert "\n" not in message
    rules = {CLUSTER: cf.desired_ingress({"label.boathou.se": LABEL_SERVICE})}
    with pytest.raises(cf.CloudflareError, match="oceanid-cluster .* was deleted"):
        cf.plan_routes(access.client(), access, wanted({}), ingress=rules, tunnel_keys=keys)
    with pytest.raises(cf.CloudflareError, match="was deleted"):  # smoke asks the same way
        cf.tunnel_status(access.client(), ACCOUNT, CLUSTER)
    assert standin.writes() == []
    assert standin.records() == []


def test_origin_request_defaults_read_back_plan_no_second_update(start_standin):
    seed = default_seed()
    seed["config_defaults"] = True  # the API fills in originRequest values the deploy never sent
    standin = start_standin(seed)
    client = standin.client()
    rules = cf.desired_ingress({"label.boathou.se": LABEL_SERVICE})
    cf.apply_tunnel_config(client, ACCOUNT, cf.plan_tunnel_config(client, ACCOUNT, CLUSTER, rules))
    read = client.get(f"/accounts/{ACCOUNT}/cfd_tunnel/{CLUSTER}/configurations", cast_to=object)
    assert read["result"]["config"]["ingress"][0]["originRequest"]["connectTimeout"] == 30
    assert cf.plan_tunnel_config(client, ACCOUNT, CLUSTER, rules).kind == "noop"

    changed = cf.desired_ingress({"label.boathou.se": "http://elsewhere:80"})
    assert cf.plan_tunnel_config(client, ACCOUNT, CLUSTER, changed).kind == "update"


def test_gpu_name_old_catch_all_is_replaced_by_the_inference_allow_list(start_standin):
    """A remotely managed node tunnel still sending every path of gpu2.<base> to Triton (the old
    rule) gets the allow-list of oceanid/ingress.py; read back with the API's originRequest
    defaults, the next plan changes nothing."""
    from oceanid.ingress import node_ingress
    from oceanid.settings import GpuService

    seed = default_seed()
    seed["config_defaults"] = True
    seed["tunnels"][2]["config"] = {
        "ingress": [{"hostname": "gpu2.boathou.se", "service": "http://localhost:8000"},
                    {"service": "http_status:404"}],
    }  # fmt: skip
    standin = start_standin(seed)
    client = standin.client()
    rules = node_ingress("gpu2.boathou.se", GpuService())
    plan = cf.plan_tunnel_config(client, ACCOUNT, NODE2, rules)
    assert plan.kind == "update"
    assert "gpu2.boathou.se ^/v2/health/(live|ready)$ → http://localhost:8000" in plan.describe()
    assert "gpu2.boathou.se ^/v2/models/stats$ → http_status:404" in plan.describe()
    cf.apply_tunnel_config(client, ACCOUNT, plan)
    stored = standin.state.data["tunnels"][NODE2]["config"]["ingress"]
    assert [rule.get("path") for rule in stored] == [rule.get("path") for rule in rules]
    assert cf.plan_tunnel_config(client, ACCOUNT, NODE2, rules).kind == "noop"


# -- the pyinfra operation ------------------------------------------------------------------------


def _pyinfra_state() -> State:
    state = State(Inventory((["@local"], {})), Config())
    state.set_stage(StateStage.Connect)
    connect_all(state)
    state.set_stage(StateStage.Prepare)
    return state


def _add_routes(state: State, standin: Standin, **kwargs: Any):
    kwargs.setdefault("records", wanted())
    kwargs.setdefault("ingress", {CLUSTER: cf.desired_ingress({"label.boathou.se": LABEL_SERVICE})})
    kwargs.setdefault("access", standin.access())
    (meta,) = add_op(state, cf_ops.routes, **kwargs).values()
    return meta


def _execute(state: State) -> None:
    state.set_stage(StateStage.Execute)
    run_ops(state)
    (results,) = state.results.values()
    assert results.error_ops == 0


def test_operation_dry_run_shows_changes_and_makes_none(standin: Standin, caplog):
    caplog.set_level(logging.INFO, logger="pyinfra")
    dry = _pyinfra_state()
    meta = _add_routes(dry, standin)
    assert meta._maybe_is_change is True
    assert standin.writes() == []  # --dry stops here: prepared, never executed
    shown = caplog.text
    assert f"would create CNAME gpu.boathou.se → {target(NODE)}" in shown
    assert "would set ingress of tunnel oceanid-cluster" in shown

    real = _pyinfra_state()
    _add_routes(real, standin)
    reads = len(standin.requests("GET", "/dns_records"))
    _execute(real)  # writes the plan read while preparing: the change made is the one shown
    assert len(standin.requests("GET", "/dns_records")) == reads
    assert len(standin.requests("POST", "/dns_records")) == 2
    assert len(standin.requests("PUT", "/configurations")) == 1

    writes = len(standin.writes())
    again = _pyinfra_state()
    assert _add_routes(again, standin)._maybe_is_change is False
    _execute(again)
    assert len(standin.writes()) == writes
    assert TOKEN not in caplog.text


def test_routes_with_records_alone_or_ingress_alone(standin: Standin):
    state = _pyinfra_state()
    add_op(state, cf_ops.routes, access=standin.access(), records=wanted({}))
    rules = cf.desired_ingress({"gpu2.boathou.se": "http://localhost:8000"})
    add_op(state, cf_ops.routes, access=standin.access(), ingress={NODE2: rules})
    _execute(state)
    assert [r["name"] for r in standin.records()] == ["label.boathou.se"]
    assert standin.state.data["tunnels"][NODE2]["config"]["ingress"] == rules
    assert standin.state.data["tunnels"][CLUSTER]["config"] is None


def _refused_while_planning(standin: Standin, **kwargs: Any) -> None:
    """Plan the operation and see its only host fail: while planning once refuse() fails the host
    there (so that --dry exits non-zero), else when the refusing command executes."""
    state = _pyinfra_state()
    try:
        _add_routes(state, standin, **kwargs)
    except PyinfraError as error:
        assert "No hosts remaining" in str(error)
        return
    state.set_stage(StateStage.Execute)
    with pytest.raises(PyinfraError, match="No hosts remaining"):  # the only host failed
        run_ops(state)


def test_operation_conflict_fails_the_operation_with_one_line(start_standin, caplog):
    caplog.set_level(logging.INFO, logger="pyinfra")
    standin = start_standin(
        default_seed([{"type": "CNAME", "name": "gpu", "content": "elsewhere.example.net"}])
    )
    _refused_while_planning(standin)
    assert "cloudflare_takeover_records" in caplog.text  # shown while preparing: --dry too
    assert standin.writes() == []

    state = _pyinfra_state()
    _add_routes(state, standin, takeover=["gpu.boathou.se"])
    _execute(state)
    assert standin.records("gpu.boathou.se")[0]["content"] == target(NODE)


@pytest.mark.parametrize(
    "failure", ["token", "malformed token", "zone", "deleted tunnel", "unreachable"]
)
def test_operation_that_cannot_read_refuses_while_planning_and_shows_no_change(
    start_standin, caplog, monkeypatch, failure
):
    """What a dry run sees: the one line, no planned change, a failed host."""
    caplog.set_level(logging.INFO, logger="pyinfra")
    monkeypatch.setattr(cf, "MAX_RETRIES", 0)
    standin = start_standin(default_seed(deleted=failure == "deleted tunnel"))
    access = {
        "token": standin.access(token="wrong-token-abcdef"),
        "malformed token": standin.access(token="two words"),  # checked when planning, too
        "zone": standin.access(zone_id="f" * 32),
        "deleted tunnel": standin.access(),
        "unreachable": cf.CloudflareAccess(
            api_token=TOKEN, account_id=ACCOUNT, zone_id=ZONE,
            base_url=f"http://127.0.0.1:{_closed_port()}/client/v4",
        ),
    }[failure]  # fmt: skip
    _refused_while_planning(standin, access=access, tunnel_keys={CLUSTER: "cloudflareTunnelId"})
    expected = {
        "token": "and that the token can reach it",
        "malformed token": "the Cloudflare API token contains whitespace; check the API token",
        "zone": "check the zone ID (ESC cloudflareZoneId), and that the token can reach it",
        "deleted tunnel": "(11111111-1111-4111-8111-111111111111, ESC cloudflareTunnelId) was "
        "deleted",
        "unreachable": "cannot reach the API",
    }[failure]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(expected in line for line in errors), errors
    assert "would " not in caplog.text
    assert standin.writes() == []
    assert "Traceback" not in caplog.text and TOKEN not in caplog.text


def _closed_port() -> int:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_operation_failing_mid_run_fails_the_operation_and_says_what_was_done(
    standin: Standin, caplog
):
    caplog.set_level(logging.INFO, logger="pyinfra")
    standin.fault(method="POST", path="/dns_records", skip=1, times=99, status=403, code=10000,
                  message="Authentication error")  # fmt: skip
    state = _pyinfra_state()
    _add_routes(state, standin)
    state.set_stage(StateStage.Execute)
    with pytest.raises(PyinfraError, match="No hosts remaining"):  # the only host failed
        run_ops(state)
    (results,) = state.results.values()
    assert results.error_ops == 1
    line = next(r.getMessage() for r in caplog.records if "changes already made" in r.getMessage())
    assert "create CNAME gpu.boathou.se" in line and "10000 Authentication error" in line
    assert "set ingress of tunnel oceanid-cluster" in line.split("changes already made")[1]
    assert "create CNAME label.boathou.se" in line.split("changes already made")[1]
    assert "Traceback" not in caplog.text and TOKEN not in caplog.text


def test_token_stays_out_of_reprs_and_operation_arguments(standin: Standin):
    access = standin.access()
    assert TOKEN not in repr(access) and TOKEN not in str(access)
    state = _pyinfra_state()
    _add_routes(state, standin)
    (op_meta,) = state.op_meta.values()
    assert TOKEN not in " ".join(op_meta.args)
    host = next(iter(state.inventory))
    (op_data,) = state.ops[host].values()
    with ctx_state.use(state), ctx_host.use(host):
        commands = list(op_data.command_generator())
    assert commands and all(TOKEN not in repr(command) for command in commands)


# -- errors ---------------------------------------------------------------------------------------


def test_bad_token_gives_a_clear_message(standin: Standin):
    access = standin.access(token="wrong-token-abcdef")
    with pytest.raises(cf.CloudflareError) as raised:
        cf.plan_routes(access.client(), access, wanted())
    message = str(raised.value)
    assert "HTTP 403" in message and "10000 Authentication error" in message
    assert "cloudflareApiToken" in message
    assert "wrong-token-abcdef" not in message


def test_a_zone_the_token_cannot_reach_names_the_zone_id_and_the_token(standin: Standin):
    unreachable = "f" * 32  # well formed: the API answers 403/10000, as for a bad token
    with pytest.raises(cf.CloudflareError) as raised:
        cf.plan(standin.client(), unreachable, wanted())
    message = str(raised.value)
    assert f"zone {unreachable}" in message and "HTTP 403: 10000 Authentication error" in message
    assert "check the zone ID (ESC cloudflareZoneId), and that the token can reach it" in message

    with pytest.raises(cf.CloudflareError) as raised:  # malformed: no route at all
        cf.plan(standin.client(), "boathou.se", wanted())
    assert "7003" in str(raised.value) and "ESC cloudflareZoneId" in str(raised.value)

    with pytest.raises(cf.CloudflareError) as raised:
        cf.tunnel_status(standin.client(), "e" * 32, CLUSTER)
    message = str(raised.value)
    assert "HTTP 403" in message
    assert "check the account ID (ESC cloudflareAccountId), and that the token can reach it" in (
        message
    )


def test_a_validation_error_shows_its_innermost_cause(start_standin):
    seed = default_seed()
    seed["validation_error_chain"] = True  # 1004 "DNS Validation Error", the cause in its chain
    standin = start_standin(seed)
    bad = cf.DesiredRecord("x.boathou.se", "not..a-name")
    with pytest.raises(cf.CloudflareError) as raised:
        cf.apply_action(standin.client(), ZONE, cf.RecordAction("create", bad))
    message = str(raised.value)
    assert "HTTP 400: 9007 Content for CNAME record is invalid." in message
    assert "(reported as 1004 DNS Validation Error)" in message


def test_unreachable_api_gives_a_clear_message(monkeypatch):
    monkeypatch.setattr(cf, "MAX_RETRIES", 0)
    client = cf.make_client(TOKEN, f"http://127.0.0.1:{_closed_port()}/client/v4")
    with pytest.raises(cf.CloudflareError, match="cannot reach the API.*base URL"):
        cf.plan(client, ZONE, wanted())


def test_rate_limit_is_retried_after_retry_after(standin: Standin):
    standin.fault(method="POST", path="/dns_records", status=429, code=971, retry_after=1, times=1)
    client = standin.client()
    started = time.monotonic()
    apply(client, cf.plan(client, ZONE, wanted()))
    assert time.monotonic() - started >= 0.9  # waited as told
    assert len(standin.requests("POST", "/dns_records")) == 3  # one refused, two creates
    assert len(standin.records()) == 2


def test_rate_limit_that_persists_says_what_was_done(standin: Standin, monkeypatch):
    monkeypatch.setattr(cf, "MAX_RETRIES", 1)
    standin.fault(method="POST", path="/dns_records", skip=1, times=99, retry_after=1)
    client = standin.client()
    with pytest.raises(cf.CloudflareError) as raised:
        apply(client, cf.plan(client, ZONE, wanted()))
    message = str(raised.value)
    assert "create CNAME gpu.boathou.se" in message and "HTTP 429" in message
    assert "asks to wait 1 s (Retry-After)" in message
    assert "changes already made: create CNAME label.boathou.se" in message
    assert len(standin.requests("POST", "/dns_records")) == 3  # 1 create + 1 try + 1 retry


def test_a_rate_limit_block_says_how_long_to_wait(standin: Standin, monkeypatch):
    monkeypatch.setattr(cf, "MAX_RETRIES", 1)
    # Blocked for minutes: each retry is refused again, with the time left in Retry-After.
    standin.fault(path="/dns_records", block_s=300, retry_after=300)
    with pytest.raises(cf.CloudflareError) as raised:
        cf.plan(standin.client(), ZONE, wanted())
    message = str(raised.value)
    assert "after 1 retries" in message
    assert re.search(r"asks to wait (29\d|300) s \(Retry-After\); wait that long", message)

    standin.state.blocked_until = 0.0
    standin.fault(path="/dns_records", times=2)  # no Retry-After: the documented block
    with pytest.raises(cf.CloudflareError) as raised:
        cf.plan(standin.client(), ZONE, wanted())
    assert "blocks a client for 5 minutes" in str(raised.value)
    assert "wait 5 minutes, then rerun" in str(raised.value)


def test_create_whose_answer_was_lost_is_not_an_error(standin: Standin):
    # The first POST creates the record but answers 502; the SDK retries, the stand-in answers
    # 81053 (the record exists now), and the deploy sees it is the record it wanted.
    standin.fault(method="POST", path="/dns_records", status=502, code=10002, times=1,
                  after_apply=True, message="Bad gateway")  # fmt: skip
    client = standin.client()
    apply(client, cf.plan(client, ZONE, wanted({})))
    assert len(standin.records("label.boathou.se")) == 1
    assert len(standin.requests("POST", "/dns_records")) == 2


def test_environment_credentials_cannot_replace_the_token(standin: Standin, monkeypatch):
    monkeypatch.setenv("CLOUDFLARE_EMAIL", "someone@example.com")
    monkeypatch.setenv("CLOUDFLARE_API_KEY", "global-key")
    monkeypatch.setenv("CLOUDFLARE_BASE_URL", "http://127.0.0.1:9/client/v4")
    result = cf.plan(standin.client(), ZONE, wanted())
    assert len(result.actions) == 2
    assert cf.make_client(TOKEN).base_url == cf.DEFAULT_BASE_URL + "/"


# -- tunnel status --------------------------------------------------------------------------------


def test_tunnel_status_counts_connectors_and_connections(start_standin):
    seed = default_seed(connectors=[{"conns": 4, "version": "2025.8.1"}, {"conns": 2}])
    standin = start_standin(seed)
    standin.state.data["tunnels"][NODE2]["ever_connected"] = True
    client = standin.client()

    healthy = cf.tunnel_status(client, ACCOUNT, CLUSTER)
    assert (healthy.status, healthy.connectors, healthy.connections) == ("healthy", 2, 6)
    assert healthy.serving and healthy.config_src == "cloudflare"
    assert "healthy, 2 connector(s), 6 connection(s)" in healthy.describe()

    second_connector = standin.state.data["tunnels"][CLUSTER]["connectors"][1]
    second_connector["conns"][0]["is_pending_reconnect"] = True
    assert cf.tunnel_status(client, ACCOUNT, CLUSTER).connections == 5

    standin.state.data["tunnels"][CLUSTER]["status"] = "degraded"
    assert cf.tunnel_status(client, ACCOUNT, CLUSTER).status == "degraded"

    inactive = cf.tunnel_status(client, ACCOUNT, NODE)
    assert (inactive.status, inactive.connectors, inactive.serving) == ("inactive", 0, False)
    assert cf.tunnel_status(client, ACCOUNT, NODE2).status == "down"


# -- the stand-in itself --------------------------------------------------------------------------


def test_standin_rejects_what_the_real_api_rejects(start_standin):
    standin = start_standin(default_seed([{"type": "A", "name": "gpu", "content": "203.0.113.9"}]))
    records = standin.client().dns.records
    with pytest.raises(cloudflare.BadRequestError) as raised:
        records.create(zone_id=ZONE, name="gpu.boathou.se", type="CNAME", content="x.example.net",
                       ttl=1)  # fmt: skip
    assert raised.value.errors[0].code == 81053
    with pytest.raises(cloudflare.BadRequestError) as raised:
        records.create(zone_id=ZONE, name="a.boathou.se", type="CNAME", content="x.example", ttl=5)
    assert raised.value.errors[0].code == 9021
    with pytest.raises(cloudflare.BadRequestError) as raised:
        records.create(zone_id=ZONE, name="b.boathou.se", type="A", content="not-an-ip", ttl=1)
    assert raised.value.errors[0].code == 9005
    with pytest.raises(cloudflare.PermissionDeniedError) as raised:
        standin.client("nope").dns.records.list(zone_id=ZONE)
    assert raised.value.errors[0].code == 10000
    with pytest.raises(cloudflare.BadRequestError) as raised:
        standin.client().zero_trust.tunnels.cloudflared.configurations.update(
            CLUSTER, account_id=ACCOUNT, config={"ingress": [{"hostname": "x.boathou.se",
                                                              "service": "http://x"}]}
        )  # fmt: skip
    assert raised.value.errors[0].code == 1056


def test_standin_runs_standalone(tmp_path: Path):
    seed = tmp_path / "seed.yaml"
    seed.write_text(
        f"account_id: '{ACCOUNT}'\n"
        f"zones: [{{id: '{ZONE}', name: {BASE}}}]\n"
        f"tunnels: [{{id: '{CLUSTER}', name: oceanid-cluster, config_src: cloudflare}}]\n"
    )
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    state_file = tmp_path / "state.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.standins.cloudflare_api", "--host", "127.0.0.1",
         "--port", "0", "--seed", str(seed), "--state", str(state_file),
         "--token-file", str(token_file)],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.removeprefix("listening on ")
        client = cf.make_client(TOKEN, url)
        apply(client, cf.plan(client, ZONE, wanted()))
        saved = state_file.read_text()
        assert target(NODE) in saved and TOKEN not in saved
    finally:
        process.terminate()
        process.wait(timeout=10)


# -- the pyinfra CLI ------------------------------------------------------------------------------

ROUTES_DEPLOY = """
import os

from oceanid.cloudflare_dns import CloudflareAccess, DesiredRecord, tunnel_target
from operations import cloudflare

cloudflare.routes(
    name="Cloudflare routes",
    access=CloudflareAccess(
        api_token=os.environ["CF_TEST_TOKEN"], account_id={account!r}, zone_id={zone!r},
        base_url={url!r},
    ),
    records=[DesiredRecord("label." + {base!r}, tunnel_target({cluster!r}))],
)
"""


@pytest.mark.parametrize("zone", [ZONE, "f" * 32], ids=["readable", "unreachable zone"])
def test_pyinfra_dry_run_fails_when_it_cannot_read_the_zone(standin: Standin, tmp_path, zone):
    """`make diff` in CI: a dry run that could not compare must not pass with a planned change."""
    deploy = tmp_path / "deploy.py"
    deploy.write_text(
        ROUTES_DEPLOY.format(
            account=ACCOUNT, zone=zone, url=standin.url, base=BASE, cluster=CLUSTER
        )
    )
    run = subprocess.run(
        [sys.executable, "-m", "pyinfra", "@local", str(deploy), "--dry"],
        cwd=tmp_path,  # no inventory or group data of the repository's own
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
             "CF_TEST_TOKEN": TOKEN},
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = run.stdout + run.stderr
    assert standin.writes() == []
    assert TOKEN not in output and "Traceback" not in output, output
    if zone == ZONE:
        assert run.returncode == 0, output
        assert "would create CNAME label.boathou.se" in output
        return
    assert run.returncode != 0, output
    line = f"reading DNS records of zone {zone} failed (HTTP 403: 10000 Authentication error)"
    assert output.count(line) == 1, output
    assert "would " not in output and "Detected changes" not in output, output
