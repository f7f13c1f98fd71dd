"""The Cloudflare API stand-in answers as the real API does, asked through the real SDK.

Each code and shape here is one the real API was seen to send (see the stand-in's docstring);
the deploy's error handling is only as good as the answers it is tested against.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudflare
import pytest

from oceanid import tunnel_credentials
from tests.standins.cloudflare_api import StandinState, base_url, make_server

TOKEN = "standin-token-0123456789"
ACCOUNT = "a" * 32
ZONE = "b" * 32
TUNNEL = "11111111-1111-4111-8111-111111111111"
GONE = "22222222-2222-4222-8222-222222222222"
REPO = Path(__file__).resolve().parents[2]


def seed(**extra: Any) -> dict[str, Any]:
    return {
        "account_id": ACCOUNT,
        "zones": [{"id": ZONE, "name": "boathou.se"}],
        "tunnels": [
            {"id": TUNNEL, "name": "live", "config_src": "cloudflare"},
            {"id": GONE, "name": "old-calypso", "config_src": "cloudflare", "deleted": True},
        ],
        **extra,
    }


@pytest.fixture
def start() -> Iterator:
    servers = []

    def run(data: dict[str, Any]) -> tuple[StandinState, cloudflare.Cloudflare]:
        state = StandinState.from_seed(data, TOKEN)
        server = make_server(state)
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        servers.append(server)
        return state, cloudflare.Cloudflare(
            api_token=TOKEN, base_url=base_url(server), max_retries=0
        )

    yield run
    for server in servers:
        server.shutdown()
        server.server_close()


def codes(error: cloudflare.APIStatusError) -> list[int]:
    return [e["code"] for e in error.body["errors"]]  # type: ignore[index]


def test_an_id_the_token_cannot_reach_is_an_authentication_error(start):
    _, client = start(seed())
    with pytest.raises(cloudflare.PermissionDeniedError) as raised:
        client.dns.records.list(zone_id="c" * 32)  # well formed, not this token's
    assert codes(raised.value) == [10000]
    with pytest.raises(cloudflare.PermissionDeniedError) as raised:
        client.get(f"/accounts/{'d' * 32}/cfd_tunnel/{TUNNEL}", cast_to=object)
    assert codes(raised.value) == [10000]
    with pytest.raises(cloudflare.BadRequestError) as raised:  # malformed: no such route
        client.dns.records.list(zone_id="boathou.se")
    assert codes(raised.value) == [7003, 7000]


def test_an_over_long_comment_is_9313_or_1004_with_the_cause_in_its_chain(start):
    record = {"name": "x.boathou.se", "type": "A", "content": "192.0.2.1", "ttl": 1,
              "comment": "c" * 101}  # fmt: skip
    _, client = start(seed())
    with pytest.raises(cloudflare.BadRequestError) as raised:
        client.dns.records.create(zone_id=ZONE, **record)
    assert codes(raised.value) == [9313]
    assert "maximum length of 100 characters" in raised.value.body["errors"][0]["message"]

    _, chained = start(seed(validation_error_chain=True))
    with pytest.raises(cloudflare.BadRequestError) as raised:
        chained.dns.records.create(zone_id=ZONE, **record)
    (error,) = raised.value.body["errors"]
    assert (error["code"], error["message"]) == (1004, "DNS Validation Error")
    assert [cause["code"] for cause in error["error_chain"]] == [9313]


def test_names_shared_with_a_cname_answer_as_cloudflare_does(start):
    _, client = start(seed())
    records = client.dns.records

    def refused(**record: Any) -> int:
        with pytest.raises(cloudflare.BadRequestError) as raised:
            records.create(zone_id=ZONE, ttl=1, **record)
        (code,) = codes(raised.value)
        return code

    records.create(zone_id=ZONE, name="alias", type="CNAME", content="x.example.net", ttl=1)
    records.create(zone_id=ZONE, name="host", type="A", content="192.0.2.1", ttl=1)
    assert refused(name="alias", type="A", content="192.0.2.2") == 81054
    assert refused(name="alias", type="AAAA", content="2001:db8::2") == 81054
    assert refused(name="host", type="CNAME", content="y.example.net") == 81053
    assert refused(name="alias", type="CNAME", content="y.example.net") == 81053
    assert refused(name="host", type="A", content="192.0.2.1") == 81058
    # Cloudflare lets a CNAME share its name with TXT or MX (RFC 1034 does not).
    records.create(zone_id=ZONE, name="mail", type="TXT", content="v=spf1 -all", ttl=1)
    records.create(zone_id=ZONE, name="mail", type="CNAME", content="x.example.net", ttl=1)


def test_a_deleted_tunnel_is_still_answered_with_deleted_at(start):
    _, client = start(seed())
    gone = client.get(f"/accounts/{ACCOUNT}/cfd_tunnel/{GONE}", cast_to=object)["result"]
    live = client.get(f"/accounts/{ACCOUNT}/cfd_tunnel/{TUNNEL}", cast_to=object)["result"]
    assert gone["deleted_at"] and live["deleted_at"] is None
    listed = client.get(
        f"/accounts/{ACCOUNT}/cfd_tunnel", options={"params": {"is_deleted": "false"}},
        cast_to=object,
    )["result"]  # fmt: skip
    assert [t["id"] for t in listed] == [TUNNEL]
    with pytest.raises(cloudflare.NotFoundError):
        client.get(f"/accounts/{ACCOUNT}/cfd_tunnel/{'3' * 8}-3333-4333-8333-{'3' * 12}",
                   cast_to=object)  # fmt: skip


def test_config_defaults_come_back_on_every_rule_but_were_never_sent(start):
    rules = [{"hostname": "gpu.boathou.se", "service": "http://localhost:8000"},
             {"service": "http_status:404", "originRequest": {"connectTimeout": 5}}]  # fmt: skip
    path = f"/accounts/{ACCOUNT}/cfd_tunnel/{TUNNEL}/configurations"
    for defaults in (False, True):
        state, client = start(seed(config_defaults=defaults))
        client.put(path, body={"config": {"ingress": rules}}, cast_to=object)
        read = client.get(path, cast_to=object)["result"]["config"]["ingress"]
        assert state.data["tunnels"][TUNNEL]["config"]["ingress"] == rules  # as sent
        if not defaults:
            assert read == rules
            continue
        assert read[0]["originRequest"]["connectTimeout"] == 30
        assert read[0]["originRequest"]["noTLSVerify"] is False
        assert read[1]["originRequest"]["connectTimeout"] == 5  # what was sent wins


def test_a_rate_limit_blocks_every_request_for_a_while(start):
    state, client = start(seed())
    state.data["faults"].append({"path": "/dns_records", "status": 429, "block_s": 120})
    with pytest.raises(cloudflare.RateLimitError):
        client.dns.records.list(zone_id=ZONE)
    with pytest.raises(cloudflare.RateLimitError) as raised:  # no fault left: still blocked
        client.get(f"/accounts/{ACCOUNT}/cfd_tunnel/{TUNNEL}", cast_to=object)
    assert codes(raised.value) == [971]
    assert 100 < int(raised.value.response.headers["retry-after"]) <= 120
    state.blocked_until = time.monotonic()  # the block ends
    assert client.dns.records.list(zone_id=ZONE).result == []


def test_config_defaults_flag_on_the_command_line(tmp_path: Path):
    seed_file = tmp_path / "seed.json"
    seed_file.write_text(
        f'{{"account_id": "{ACCOUNT}", "token": "{TOKEN}", '
        f'"tunnels": [{{"id": "{TUNNEL}", "config_src": "cloudflare"}}]}}'
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.standins.cloudflare_api", "--seed", str(seed_file),
         "--config-defaults"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip().removeprefix("listening on ")
        client = cloudflare.Cloudflare(api_token=TOKEN, base_url=url, max_retries=0)
        path = f"/accounts/{ACCOUNT}/cfd_tunnel/{TUNNEL}/configurations"
        client.put(path, body={"config": {"ingress": [{"service": "http_status:404"}]}},
                   cast_to=object)  # fmt: skip
        (rule,) = client.get(path, cast_to=object)["result"]["config"]["ingress"]
        assert rule["originRequest"]["keepAliveConnections"] == 100
    finally:
        process.terminate()
        process.wait(timeout=10)


# -- Access (Zero Trust) --------------------------------------------------------------------------


def test_access_applications_answer_as_the_api_does(start):
    state, client = start(seed())
    apps = client.zero_trust.access.applications
    made = apps.create(account_id=ACCOUNT, domain="gpu.boathou.se", type="self_hosted", name="gpu")
    assert made.domain == "gpu.boathou.se" and made.type == "self_hosted" and made.id
    listed = list(apps.list(account_id=ACCOUNT, domain="gpu.boathou.se", exact=True))
    assert [app.id for app in listed] == [made.id]
    with pytest.raises(cloudflare.ConflictError) as raised:  # one application per domain
        apps.create(account_id=ACCOUNT, domain="gpu.boathou.se", type="self_hosted")
    assert codes(raised.value) == [11010]
    with pytest.raises(cloudflare.BadRequestError) as raised:
        apps.create(account_id=ACCOUNT, domain="gpu.example.com", type="self_hosted")
    assert raised.value.body["errors"][0]["message"] == (
        "access.api.error.invalid_request: domain does not belong to zone"
    )
    with pytest.raises(cloudflare.BadRequestError) as raised:  # the SDK requires type; the API
        client.post(f"/accounts/{ACCOUNT}/access/apps", body={"domain": "x.boathou.se"},
                    cast_to=object)  # fmt: skip
    assert codes(raised.value) == [12130]
    with pytest.raises(cloudflare.NotFoundError) as raised:
        apps.get("9" * 8 + "-9999-4999-8999-" + "9" * 12, account_id=ACCOUNT)
    assert codes(raised.value) == [12135]
    with pytest.raises(cloudflare.PermissionDeniedError):  # another account: as for tunnels
        list(apps.list(account_id="d" * 32))


def test_a_service_tokens_secret_is_answered_once_and_never_kept(start):
    state, client = start(seed())
    tokens = client.zero_trust.access.service_tokens
    made = tokens.create(account_id=ACCOUNT, name="oceanid-gpu")
    assert made.client_id.endswith(".access") and len(made.client_secret) == 64
    (listed,) = list(tokens.list(account_id=ACCOUNT))
    assert listed.client_id == made.client_id and "client_secret" not in listed.model_dump()
    assert made.client_secret not in json.dumps(state.data)


def test_access_policies_check_their_rules(start):
    state, client = start(seed())
    app = client.zero_trust.access.applications.create(
        account_id=ACCOUNT, domain="gpu.boathou.se", type="self_hosted"
    )
    token = client.zero_trust.access.service_tokens.create(account_id=ACCOUNT, name="t")
    policies = client.zero_trust.access.applications.policies
    rule = [{"service_token": {"token_id": token.id}}]
    made = policies.create(app.id, account_id=ACCOUNT, name="token", decision="non_identity",
                           include=rule)  # fmt: skip
    assert made.decision == "non_identity" and made.precedence == 1
    assert made.include[0].service_token.token_id == token.id  # ServiceTokenRule, typed
    (inline,) = client.zero_trust.access.applications.get(app.id, account_id=ACCOUNT).policies
    assert inline.id == made.id

    def refused(**body: Any) -> str:
        with pytest.raises(cloudflare.BadRequestError) as raised:
            path = f"/accounts/{ACCOUNT}/access/apps/{app.id}/policies"
            body = {"name": "p", "decision": "non_identity", **body}
            client.post(path, body=body, cast_to=object)
        assert codes(raised.value) == [12130]
        return raised.value.body["errors"][0]["message"]

    assert "token_id" in refused(include=[{"service_token": {"token_id": "nope"}}])
    assert "unique" in refused(include=rule, precedence=1)
    assert "include" in refused(include=[])
    assert "decision" in refused(include=rule, decision="maybe")
    with pytest.raises(cloudflare.NotFoundError):
        policies.get("0" * 8 + "-0000-4000-8000-" + "0" * 12, app_id=app.id, account_id=ACCOUNT)


def test_tunnel_creation_and_its_token_through_the_sdk(start):
    """`make tunnels` (oceanid/tunnels.py): the SDK's own create (name, config_src) and token
    calls; a live tunnel's name is taken, a deleted one's is free."""
    _state, client = start(seed())
    tunnels = client.zero_trust.tunnels.cloudflared
    made = tunnels.create(account_id=ACCOUNT, name="oceanid-calypso", config_src="cloudflare")
    assert made.name == "oceanid-calypso" and made.config_src == "cloudflare"
    assert made.status == "inactive" and made.deleted_at is None
    token = tunnels.token.get(made.id, account_id=ACCOUNT)
    credential = tunnel_credentials.parse(token, key="token")
    assert credential.tunnel_id == made.id and credential.account_tag == ACCOUNT
    listed = tunnels.list(account_id=ACCOUNT, name="oceanid-calypso", is_deleted=False)
    assert [t.id for t in listed] == [made.id]
    with pytest.raises(cloudflare.APIStatusError) as taken:
        tunnels.create(account_id=ACCOUNT, name="live")
    assert taken.value.status_code == 409
    again = tunnels.create(account_id=ACCOUNT, name="old-calypso", tunnel_secret="A" * 44)
    assert again.id != GONE and again.config_src == "local"
    with pytest.raises(cloudflare.BadRequestError):
        tunnels.create(account_id=ACCOUNT, name="short", tunnel_secret="c2hvcnQ=")
