"""Cloudflare Access on calypso3's name (`access: service_token` in the lab's settings).

After the converge, the API stand-in (the lab's Cloudflare) holds one self-hosted application for
gpu3.boathou.se whose one policy admits exactly the lab's service token; a second converge writes
nothing to the Access endpoints, and no output holds the token's secret.
"""

from __future__ import annotations

import json
import urllib.request

import pytest
import yaml

from lab.converge import pyinfra
from lab.services import CLOUDFLARE_URL
from lab.topology import SECRETS_FILE

pytestmark = pytest.mark.lab

DOMAIN = "gpu3.boathou.se"


def _control(what: str) -> object:
    """The stand-in's own view (its state, the requests it answered), read independently."""
    values = yaml.safe_load(SECRETS_FILE.read_text())
    request = urllib.request.Request(
        f"{CLOUDFLARE_URL}/__standin__/{what}",
        headers={"Authorization": f"Bearer {values['cloudflareApiToken']}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["result"]


def _access_writes() -> list[tuple[str, str]]:
    return [
        (r["method"], r["path"])
        for r in _control("requests")
        if r["method"] != "GET" and "/access/" in r["path"]
    ]


def test_the_dry_run_shows_the_access_application(dry_run):
    assert f"would create Access application oceanid calypso3 for {DOMAIN}" in dry_run.output
    secret = yaml.safe_load(SECRETS_FILE.read_text())["cloudflareAccessClientSecret"]
    assert secret not in dry_run.output


def test_the_name_admits_only_the_service_token_and_a_second_converge_writes_nothing(converged):
    values = yaml.safe_load(SECRETS_FILE.read_text())
    access = _control("state")["access"]
    (token,) = [
        t for t in access["service_tokens"].values()
        if t["client_id"] == values["cloudflareAccessClientId"]
    ]  # fmt: skip
    (app,) = [a for a in access["apps"].values() if a.get("domain") == DOMAIN]
    assert app["type"] == "self_hosted"
    (policy,) = access["policies"][app["id"]]
    assert policy["decision"] == "non_identity"
    assert policy["include"] == [{"service_token": {"token_id": token["id"]}}]
    assert not policy["exclude"] and not policy["require"]
    assert values["cloudflareAccessClientSecret"] not in converged.output

    writes = _access_writes()
    second = pyinfra("deploys/site.py", "--limit", "calypso3")
    assert second.returncode == 0, second.output[-4000:]
    assert second.changed == {}, f"the second converge changed: {second.changed}"
    assert _access_writes() == writes
