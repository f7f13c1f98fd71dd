"""Cloudflare Access on a GPU name, through the real SDK against the API stand-in.

Every test starts its own stand-in on 127.0.0.1 (ephemeral port) and reads the result back from
the stand-in's state and request log, not from the code under test.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pyinfra.api import State
from pyinfra.context import ctx_host, ctx_state

from deploys.dns import guard_gpu_name
from oceanid import cloudflare_access as cfa
from oceanid import cloudflare_dns as cf
from oceanid.model import HostPlan, HostView, Site
from oceanid.preflight import PreflightError, check
from oceanid.secrets import Secrets, canonical
from oceanid.settings import GpuHost, SettingsError, from_data
from tests.unit import test_cloudflare_dns as dns
from tests.unit.test_cloudflare_dns import ACCOUNT, TOKEN, ZONE, start_standin  # noqa: F401

CLIENT_ID = "88bf3b6d86161464f6509f7219099e57.access"
CLIENT_SECRET = "bdd31cbc4dec990953e39163fbbb194c93313ca9f0a6e420346af9d326b1d2a5"
DOMAIN = "gpu.boathou.se"
APP_NAME = "oceanid calypso"


class Standin(dns.Standin):
    """The DNS tests' stand-in (same server and helpers), read for its Access state."""

    @property
    def access_data(self) -> dict[str, Any]:
        return self.state.data["access"]

    def apps(self) -> list[dict[str, Any]]:
        return list(self.access_data["apps"].values())

    def policies(self, app_id: str) -> list[dict[str, Any]]:
        return self.access_data["policies"][app_id]

    def token_id(self, client_id: str = CLIENT_ID) -> str:
        tokens = self.access_data["service_tokens"].values()
        return next(t["id"] for t in tokens if t["client_id"] == client_id)

    def plan(self, client_id: str = CLIENT_ID, domain: str = DOMAIN) -> cfa.AccessPlan:
        return cfa.plan_access(
            self.access().client(), ACCOUNT, domain, cfa.ServiceTokenRef(client_id), APP_NAME
        )

    def apply(self, plan: cfa.AccessPlan) -> list[str]:
        return cfa.apply_access(self.access().client(), self.access(), plan)


@pytest.fixture
def start(start_standin):  # noqa: F811 - the DNS tests' fixture, imported above
    def run(data: dict) -> Standin:
        standin = start_standin(data)
        return Standin(standin.state, standin.url)

    return run


def seed(apps: list[dict] | None = None, **token: Any) -> dict[str, Any]:
    """One zone, the ESC token (``token`` overrides its fields) and another token."""
    return {
        "account_id": ACCOUNT,
        "zones": [{"id": ZONE, "name": "boathou.se"}],
        "access_service_tokens": [
            {
                "name": "oceanid-gpu",
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                **token,
            },
            {"name": "someone-else", "client_id": "f" * 32 + ".access"},
        ],
        "access_apps": apps or [],
    }


def only_the_token(standin: Standin) -> dict[str, Any]:
    """The one application for DOMAIN, whose one policy admits exactly the ESC token."""
    (app,) = [a for a in standin.apps() if a["domain"] == DOMAIN]
    assert app["type"] == "self_hosted"
    (policy,) = standin.policies(app["id"])
    assert policy["decision"] == "non_identity"
    assert policy["include"] == [{"service_token": {"token_id": standin.token_id()}}]
    assert policy["exclude"] == [] and policy["require"] == []
    return app


# -- the plan and its writes ----------------------------------------------------------------------


def test_creates_the_application_and_policy_once_then_changes_nothing(start):
    standin = start(seed())
    first = standin.plan()
    assert (first.app_kind, first.policy_kind) == ("create", "create")
    done = standin.apply(first)
    assert done == first.changes and len(done) == 2
    app = only_the_token(standin)
    assert app["name"] == APP_NAME and app["service_auth_401_redirect"] is True

    writes = len(standin.writes())
    second = standin.plan()
    assert second.changes == [] and (second.app_kind, second.policy_kind) == ("adopt", "noop")
    assert "admits only service token oceanid-gpu" in second.settled()
    assert standin.apply(second) == []
    assert len(standin.writes()) == writes


def test_an_application_already_guarding_the_name_is_adopted_not_duplicated(start):
    standin = start(seed([{"name": "made by hand", "domain": DOMAIN, "type": "self_hosted"}]))
    (before,) = standin.apps()
    standin.apply(standin.plan())
    app = only_the_token(standin)
    assert app["id"] == before["id"] and app["name"] == "made by hand"  # adopted as it is
    assert [m for m, p in standin.writes() if p.endswith("/access/apps")] == []


def test_a_policy_that_admits_something_else_is_fixed_in_place(start):
    everyone = {"name": "open", "decision": "bypass", "include": [{"everyone": {}}]}
    standin = start(
        seed([{"name": "gpu", "domain": DOMAIN, "type": "self_hosted", "policies": [everyone]}])
    )
    (app,) = standin.apps()
    (old,) = standin.policies(app["id"])
    plan = standin.plan()
    assert plan.policy_kind == "update"
    assert plan.changes == [
        "update policy 'open' (bypass, include everyone) on gpu.boathou.se: admitting only "
        f"service token oceanid-gpu ({standin.token_id()})"
    ]
    standin.apply(plan)
    assert only_the_token(standin)["id"] == app["id"]
    assert standin.policies(app["id"])[0]["id"] == old["id"]  # the same policy, changed
    assert standin.plan().changes == []


def test_other_policies_of_the_application_are_removed_after_the_token_policy_is_in(
    start,
):
    other = {"name": "others", "decision": "non_identity",
             "include": [{"any_valid_service_token": {}}]}  # fmt: skip
    office = {"name": "office", "decision": "allow", "include": [{"ip": {"ip": "192.0.2.0/24"}}]}
    standin = start(
        seed([{"name": "gpu", "domain": DOMAIN, "type": "self_hosted",
               "policies": [other, office]}])
    )  # fmt: skip
    plan = standin.plan()
    assert plan.policy_kind == "create" and len(plan.extra) == 2
    standin.apply(plan)
    only_the_token(standin)
    methods = [m for m, p in standin.writes() if "/policies" in p]
    assert methods == ["POST", "DELETE", "DELETE"]  # the token's policy first: never more open
    assert standin.plan().changes == []


def test_an_application_renamed_with_its_host_follows_the_new_name(start):
    standin = start(seed([{"name": APP_NAME, "domain": "gpu9.boathou.se",
                                   "type": "self_hosted"}]))  # fmt: skip
    plan = standin.plan()
    assert plan.app_kind == "update"
    standin.apply(plan)
    assert len(standin.apps()) == 1
    only_the_token(standin)


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ({"client_id": "e" * 32 + ".access"}, "no service token of account"),
        ({"enabled": False}, "is disabled"),
        ({"expires_at": (datetime.now(UTC) - timedelta(days=1)).isoformat()}, "expired at"),
    ],
    ids=["missing", "disabled", "expired"],
)
def test_a_token_that_cannot_pass_is_refused_before_any_write(start, token, expected):
    standin = start(seed(**token))
    with pytest.raises(cf.CloudflareError) as raised:
        standin.plan()
    message = str(raised.value)
    assert expected in message and "ESC cloudflareAccessClientId" in message
    assert CLIENT_ID not in message and CLIENT_SECRET not in message
    assert standin.writes() == []


def test_an_application_of_another_kind_on_the_name_stops_the_run(start):
    standin = start(seed([{"name": "ssh", "domain": DOMAIN, "type": "ssh"}]))
    with pytest.raises(cf.CloudflareError, match="is of type ssh"):
        standin.plan()
    assert standin.writes() == []


def test_a_create_whose_answer_was_lost_adopts_what_it_made(start):
    standin = start(seed())
    plan = standin.plan()
    standin.state.data["faults"].append(
        {"method": "POST", "path": "/access/apps", "status": 409, "code": 11010,
         "message": "access.api.error.application_already_exists", "after_apply": True}
    )  # fmt: skip
    standin.apply(plan)
    only_the_token(standin)


def test_a_failed_write_says_what_was_done(start):
    standin = start(seed())
    plan = standin.plan()
    standin.state.data["faults"].append(
        {"method": "POST", "path": "/policies", "status": 403, "code": 10000,
         "message": "Authentication error"}
    )  # fmt: skip
    with pytest.raises(cf.CloudflareError) as raised:
        standin.apply(plan)
    line = str(raised.value)
    assert "create non_identity policy on gpu.boathou.se" in line.split("failed")[0]
    assert "changes already made: create Access application oceanid calypso" in line
    assert "Access: Apps and Policies Edit" in line and TOKEN not in line


# -- the pyinfra operation, as deploys/dns wires it ------------------------------------------------


def _site(data: dict, access: str = "service_token") -> tuple[HostPlan, Site]:
    settings = from_data(data)
    gpu = GpuHost(access=access)
    plan = HostPlan("calypso", settings, frozenset({"gpu_hosts"}), gpu=gpu)
    values = {canonical("cloudflareAccessClientId"): CLIENT_ID,
              canonical("cloudflareAccessClientSecret"): CLIENT_SECRET}  # fmt: skip
    return plan, Site(hosts={"calypso": plan}, secrets=Secrets(values))


def _prepare(standin: Standin, data: dict, access: str = "service_token") -> State:
    state = dns._pyinfra_state()
    host = next(iter(state.inventory))
    plan, site = _site(data, access)
    with ctx_state.use(state), ctx_host.use(host):
        guard_gpu_name(plan, site, standin.access())
    return state


def _is_change(state: State) -> bool:
    """What pyinfra shows for the one operation: a change (--dry lists it) or none."""
    host = next(iter(state.inventory))
    (data,) = state.ops[host].values()
    return data.operation_meta._maybe_is_change


def test_deploy_dry_run_shows_it_then_applies_it_then_is_a_noop(start, data, caplog):
    caplog.set_level(logging.DEBUG, logger="pyinfra")
    standin = start(seed())
    dry = _prepare(standin, data)
    assert _is_change(dry) is True
    assert "would create Access application oceanid calypso for gpu.boathou.se" in caplog.text
    assert standin.writes() == []  # --dry stops here

    real = _prepare(standin, data)
    dns._execute(real)
    only_the_token(standin)

    writes = len(standin.writes())
    again = _prepare(standin, data)
    assert _is_change(again) is False
    dns._execute(again)
    assert len(standin.writes()) == writes
    for secret in (CLIENT_SECRET, CLIENT_ID, TOKEN):
        assert secret not in caplog.text
        assert all(secret not in " ".join(m.args) for m in real.op_meta.values())


def test_access_off_adds_no_operation(start, data):
    standin = start(seed())
    assert _prepare(standin, data, access="off").op_meta == {}
    assert standin.state.requests == []


def test_a_token_that_cannot_pass_fails_the_dry_run_in_one_line(start, data, caplog):
    caplog.set_level(logging.INFO, logger="pyinfra")
    standin = start(seed(enabled=False))
    try:
        state = _prepare(standin, data)
        dns._execute(state)
    except Exception as error:  # pyinfra: "No hosts remaining", the only host failed
        assert "No hosts remaining" in str(error)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("is disabled" in line for line in errors), errors
    assert "Traceback" not in caplog.text and standin.writes() == []


# -- settings and preflight -----------------------------------------------------------------------


def test_the_setting_is_off_by_default_and_names_its_key_when_wrong(data):
    assert from_data(data).host("calypso").gpu.access == "off"
    data["hosts"]["calypso"]["gpu"]["access"] = "token"
    with pytest.raises(SettingsError) as raised:
        from_data(data)
    (line,) = raised.value.problems
    assert line.startswith("hosts.calypso.gpu.access: must be service_token")
    assert "cloudflareAccessClientId" in line


def _views(data: dict) -> list[HostView]:
    return [HostView("calypso", frozenset({"gpu_hosts"}), data)]


def _check(data: dict, tmp_path, values: dict) -> Site:
    import yaml

    path = tmp_path / "secrets.yaml"
    path.write_text(yaml.safe_dump(values))
    path.chmod(0o600)
    data["secret_sources"] = ["file"]
    return check(_views(data), environ={"SECRETS_FILE": str(path)})


def test_preflight_needs_the_token_only_with_access_on(data, tmp_path, lab_secrets):
    values = {k: v for k, v in lab_secrets.items() if not k.startswith("cloudflareAccessClient")}
    _check(data, tmp_path, values)  # off: not needed
    data["hosts"]["calypso"]["gpu"]["access"] = "service_token"
    with pytest.raises(PreflightError) as raised:
        _check(data, tmp_path, values)
    keys = sorted(line.split(":")[0] for line in raised.value.problems)
    assert keys == ["cloudflareAccessClientId", "cloudflareAccessClientSecret"]
    assert "calypso's Cloudflare Access (hosts.calypso.gpu.access)" in raised.value.problems[0]
    token = {"cloudflareAccessClientId": CLIENT_ID, "cloudflareAccessClientSecret": CLIENT_SECRET}
    site = _check(data, tmp_path, values | token)
    assert "cloudflareAccessClientSecret" in site.required


def test_preflight_refuses_a_malformed_token_without_echoing_it(data, tmp_path, lab_secrets):
    data["hosts"]["calypso"]["gpu"]["access"] = "service_token"
    bad = {"cloudflareAccessClientId": CLIENT_SECRET, "cloudflareAccessClientSecret": "a b"}
    with pytest.raises(PreflightError) as raised:
        _check(data, tmp_path, lab_secrets | bad)
    text = "\n".join(raised.value.problems)
    assert "cloudflareAccessClientId: not a service token's client ID" in text
    assert "cloudflareAccessClientSecret: not a service token's client secret" in text
    assert CLIENT_SECRET not in text


def test_preflight_refuses_access_without_the_api(data, tmp_path, lab_secrets):
    data["hosts"]["calypso"]["gpu"]["access"] = "service_token"
    data["manage_dns"] = False
    with pytest.raises(PreflightError) as raised:
        _check(data, tmp_path, lab_secrets)
    assert any(
        line.startswith("hosts.calypso.gpu.access: service_token needs manage_dns")
        for line in raised.value.problems
    )


# -- smoke ----------------------------------------------------------------------------------------


def test_smoke_sends_the_token_to_a_guarded_name_and_prints_no_secret(data):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from oceanid import smoke

    seen: list[dict[str, str]] = []

    class Origin(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            seen.append(dict(self.headers))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        for access, sent in (("service_token", True), ("off", False)):
            _, site = _site(data, access)
            (target,) = smoke.targets(site, {DOMAIN: url})
            assert CLIENT_SECRET not in repr(target)
            result = smoke.check_http_service(target, 5)
            assert result.ok and CLIENT_SECRET not in result.line()
            headers = {k.lower(): v for k, v in seen.pop().items()}
            if sent:
                assert headers["cf-access-client-id"] == CLIENT_ID
                assert headers["cf-access-client-secret"] == CLIENT_SECRET
            else:
                assert "cf-access-client-id" not in headers
    finally:
        server.shutdown()
        server.server_close()
