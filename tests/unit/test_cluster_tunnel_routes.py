"""The cluster tunnel's routes are the deploy's (issue 20 item 7).

cloudflared runs a configuration Cloudflare stores for its tunnel (version ≥ 0) in place of its
config file (tests/standins/cloudflared models that precedence). So where the cluster tunnel is
remotely managed, the server's DNS step writes the cluster connector's own rules through the
API, as it does for node tunnels; a locally-managed tunnel is left to its file. The site comes
through preflight; the API is the stand-in on loopback, reached through the real SDK.
"""

from __future__ import annotations

import logging

import pytest
from pyinfra.api.operation import add_op

from deploys import dns
from deploys.cluster_apps import cluster_connector
from oceanid import cloudflare_dns as cf
from operations import cloudflare as cf_ops
from tests.unit.test_cloudflare_dns import (
    ACCOUNT,
    BASE,
    ZONE,
    Standin,
    _execute,
    _pyinfra_state,
    start_standin,
)
from tests.unit.test_k3s_roles import make_site

__all__ = ["make_site", "start_standin"]  # fixtures, used by name below

STALE = {"hostname": "label.boathou.se", "service": "http://old-stack.example:8080"}


@pytest.fixture
def server(make_site):
    """tethys's plan and the site, as preflight validates them."""
    site = make_site()
    return site.hosts["tethys"], site


def _seed(tunnel_id: str, config_src: str, rules: list[dict]) -> dict:
    cluster = {"id": tunnel_id, "name": "oceanid-cluster", "config_src": config_src}
    if config_src == "cloudflare":
        cluster["config"] = {"ingress": rules}
    return {
        "account_id": ACCOUNT,
        "zones": [{"id": ZONE, "name": BASE, "records": []}],
        "tunnels": [cluster],
    }


def _routes(state, standin: Standin, plan, site):
    wanted, ingress = dns.records(plan, site)
    (meta,) = add_op(
        state,
        cf_ops.routes,
        access=cf.CloudflareAccess(
            api_token="tok-5ecret-DO-NOT-PRINT-1234567890",
            account_id=ACCOUNT,
            zone_id=ZONE,
            base_url=standin.url,
        ),
        records=wanted,
        ingress=ingress,
        tunnel_keys=dns.tunnel_keys(plan, site),
    ).values()
    return meta


def _stored_ingress(standin: Standin, tunnel_id: str) -> list[dict]:
    return standin.state.data["tunnels"][tunnel_id]["config"]["ingress"]


def test_the_server_routes_the_cluster_tunnel_as_its_connector_config_does(server):
    plan, site = server
    _, ingress = dns.records(plan, site)
    config = cluster_connector.config(
        plan.settings, site.cluster_tunnel_id, site.cluster_credential
    )
    assert ingress[site.cluster_tunnel_id] == config["ingress"]
    assert ingress[site.cluster_tunnel_id][0]["hostname"] == "label.boathou.se"
    assert ingress[site.cluster_tunnel_id][-1] == {"service": "http_status:404"}


def test_no_cluster_connector_no_cluster_tunnel_rules(make_site):
    from tests.unit.conftest import _group_data

    site = make_site(cluster_apps={**_group_data()["cluster_apps"], "cluster_connector": False})
    _, ingress = dns.records(site.hosts["tethys"], site)
    assert site.cluster_tunnel_id not in ingress  # someone else's connector: its routes


def test_a_stale_remote_route_is_replaced_then_left_alone(server, start_standin, caplog):
    plan, site = server
    standin = start_standin(
        _seed(site.cluster_tunnel_id, "cloudflare", [STALE, {"service": "http_status:404"}])
    )
    caplog.set_level(logging.INFO, logger="pyinfra")

    dry = _pyinfra_state()
    assert _routes(dry, standin, plan, site)._maybe_is_change is True
    assert standin.requests("PUT", "/configurations") == []  # --dry: shown, not written
    assert (
        "would set ingress of tunnel oceanid-cluster "
        f"({site.cluster_tunnel_id}): label.boathou.se → http://old-stack.example:8080, "
        "* → http_status:404 ⇒ label.boathou.se → "
        "http://label-studio.apps.svc.cluster.local:8080, * → http_status:404"
    ) in caplog.text

    real = _pyinfra_state()
    _routes(real, standin, plan, site)
    _execute(real)
    assert _stored_ingress(standin, site.cluster_tunnel_id) == cluster_connector.ingress(
        plan.settings
    )

    writes = len(standin.writes())
    again = _pyinfra_state()
    assert _routes(again, standin, plan, site)._maybe_is_change is False
    _execute(again)
    assert len(standin.writes()) == writes


def test_a_locally_managed_cluster_tunnel_is_left_to_its_file(server, start_standin, caplog):
    plan, site = server
    standin = start_standin(_seed(site.cluster_tunnel_id, "local", []))
    caplog.set_level(logging.DEBUG, logger="pyinfra")
    state = _pyinfra_state()
    _routes(state, standin, plan, site)
    _execute(state)
    assert standin.requests("PUT", "/configurations") == []
    assert standin.requests("GET", "/configurations") == []
    assert f"tunnel oceanid-cluster ({site.cluster_tunnel_id}) is locally managed" in caplog.text
