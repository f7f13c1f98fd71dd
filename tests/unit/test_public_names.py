"""Every public name from one place (issue 24 item 1): a renamed name moves everything at once.

`cluster_apps.label_studio.public_name` once moved the cluster tunnel's rule while DNS, smoke
and the Cloudflare code kept `label.<base>`. Here a site goes through preflight with the names
changed, and each consumer is read as it runs: the DNS step's records and the tunnel ingress it
pushes, the cluster connector's rendered config, Label Studio's origin, the node connectors'
configs, smoke's URLs and tunnels (`make status` reads those too), the ML-backend connector's
URL, and, against the Cloudflare API stand-in on loopback, adopt-plan's lines and the Access
application the DNS step would create.
"""

from __future__ import annotations

import json
import logging
import threading

import pytest
import yaml
from pyinfra.context import ctx_host, ctx_state

from deploys import adopt, cluster_apps, dns
from deploys.cluster_apps import cluster_connector, label_studio, ml_backend, node_tunnel
from deploys.gpu_host import cloudflared_node
from oceanid import names, smoke
from oceanid.cloudflare_dns import CloudflareAccess, tunnel_target
from tests.standins.cloudflare_api import StandinState, base_url, make_server
from tests.unit.test_cloudflare_dns import _pyinfra_state
from tests.unit.test_k3s_roles import make_site

__all__ = ["make_site"]  # a fixture, used by name below

SERVERS, AGENTS, GPU = "k3s_servers", "k3s_agents", "gpu_hosts"
INVENTORY = {
    "tethys": {SERVERS},
    "styx": {AGENTS},
    "calypso": {AGENTS, GPU},
    "calypso2": {GPU},
}
BASE = "boathou.se"


@pytest.fixture
def renamed(make_site, data):
    """The site with Label Studio at `studio`, calypso at `gpu7` (its adapter `ml7`) behind
    Access, and a second GPU host, calypso2, at `gpu2` on its own tunnel."""
    data["cluster_apps"]["label_studio"]["public_name"] = "studio"
    data["hosts"]["calypso"]["gpu"].update(public_name="gpu7", access="service_token")
    data["hosts"]["calypso2"] = {
        "gpu": {
            "public_name": "gpu2",
            "tunnel_id_key": "cloudflareNode2TunnelId",
            "tunnel_credential_key": "cloudflareNode2TunnelToken",
        }
    }
    return make_site(INVENTORY)


def _text(value) -> str:
    return json.dumps(value, default=str)


def test_label_studios_name_moves_dns_the_cluster_tunnel_and_smoke_together(renamed) -> None:
    site = renamed
    tethys = site.hosts["tethys"]
    wanted, ingress = dns.records(tethys, site)
    assert [(r.name, r.content) for r in wanted] == [
        ("studio.boathou.se", tunnel_target(site.cluster_tunnel_id))
    ]
    # the rules the DNS step pushes where Cloudflare manages the cluster tunnel's configuration
    pushed = ingress[site.cluster_tunnel_id]
    assert [rule.get("hostname") for rule in pushed] == ["studio.boathou.se", None]
    # the connector's own config.yaml, as k3s gets it from the auto-deploy folder
    files = {f.path: f.content.decode() for f in cluster_apps.manifest_files(site, tethys.settings)}
    (config_map,) = [
        doc
        for doc in yaml.safe_load_all(files[cluster_apps.path(cluster_connector.APP)])
        if doc["kind"] == "ConfigMap"
    ]
    config = yaml.safe_load(config_map["data"]["config.yaml"])
    assert config["ingress"] == pushed
    # Label Studio's own origin (LABEL_STUDIO_HOST, CSRF_TRUSTED_ORIGINS)
    env = {e["name"]: e.get("value") for e in label_studio.container_env(tethys.settings)}
    assert env["LABEL_STUDIO_HOST"] == env["CSRF_TRUSTED_ORIGINS"] == "https://studio.boathou.se"
    # smoke's URL, and the tunnel line smoke and `make status` print
    (label,) = smoke.targets(site, {}, "label")
    assert (label.name, label.url) == ("studio.boathou.se", "https://studio.boathou.se")
    (tunnel,) = smoke.tunnels(site, "label")
    assert tunnel.what == "cluster tunnel (studio.boathou.se)"
    assert "studio.boathou.se" in dns.site_names(tethys)

    everything = [wanted, ingress, files, env, smoke.targets(site, {}), smoke.tunnels(site)]
    everything.append(sorted(dns.site_names(tethys)))
    assert "label.boathou.se" not in _text(everything)


def test_each_gpu_name_and_its_adapters_agree_everywhere(renamed) -> None:
    site = renamed
    calypso, calypso2 = site.hosts["calypso"], site.hosts["calypso2"]
    # DNS: each host's names, proxied CNAMEs (automatic TTL) to that host's own tunnel
    records = [record for plan in site.hosts.values() for record in dns.records(plan, site)[0]]
    node, node2 = tunnel_target(calypso.node_tunnel_id), tunnel_target(calypso2.node_tunnel_id)
    assert [(r.name, r.type, r.content, r.proxied, r.ttl) for r in records] == [
        ("studio.boathou.se", "CNAME", tunnel_target(site.cluster_tunnel_id), True, 1),
        ("gpu7.boathou.se", "CNAME", node, True, 1),
        ("ml7.boathou.se", "CNAME", node, True, 1),
        ("gpu2.boathou.se", "CNAME", node2, True, 1),
        ("ml2.boathou.se", "CNAME", node2, True, 1),
    ]
    every = [public.fqdn for public in names.site_names(site)]
    assert every == [record.name for record in records]
    assert set(every) == dns.site_names(calypso)

    # the node tunnel's rules: pushed by the DNS step, in the host connector's config.yaml and
    # in the cluster DaemonSet's, all for the same two names
    pushed = dns.records(calypso, site)[1][calypso.node_tunnel_id]
    assert cloudflared_node.config(calypso)["ingress"] == pushed
    assert node_tunnel.config(calypso)["ingress"] == pushed
    assert {rule.get("hostname") for rule in pushed} == {"gpu7.boathou.se", "ml7.boathou.se", None}
    assert "gpu7.boathou.se" in cloudflared_node.unit(calypso)

    # smoke's URLs and tunnels; the ML-backend connector's URL
    assert [(t.kind, t.url) for t in smoke.targets(site, {}) if t.kind != "label"] == [
        ("gpu", "https://gpu7.boathou.se"),
        ("ml", "https://ml7.boathou.se"),
        ("gpu", "https://gpu2.boathou.se"),
        ("ml", "https://ml2.boathou.se"),
    ]
    assert [t.what for t in smoke.tunnels(site, "gpu")] == [
        "calypso's node tunnel (gpu7.boathou.se)",
        "calypso2's node tunnel (gpu2.boathou.se)",
    ]
    gpus = [plan.gpu for _, plan in sorted(site.hosts.items()) if plan.gpu]
    assert ml_backend.backend_url(calypso.settings, gpus) == "https://ml7.boathou.se"


def _standin(secrets: dict[str, str]):
    """The API stand-in on loopback with the site's account, zone, tunnels and Access token."""
    seed = {
        "account_id": secrets["cloudflareAccountId"],
        "zones": [{"id": secrets["cloudflareZoneId"], "name": BASE, "records": []}],
        "tunnels": [
            {"id": secrets["cloudflareTunnelId"], "name": "oceanid-cluster"},
            {"id": secrets["cloudflareNodeTunnelId"], "name": "calypso"},
        ],
        "access_service_tokens": [
            {
                "name": "oceanid-gpu",
                "client_id": secrets["cloudflareAccessClientId"],
                "client_secret": secrets["cloudflareAccessClientSecret"],
            }
        ],
    }
    state = StandinState.from_seed(seed, secrets["cloudflareApiToken"])
    server = make_server(state, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}).start()
    return state, server


def test_adopt_plan_and_access_name_the_same_names(make_site, data, lab_secrets, caplog) -> None:
    state, server = _standin(lab_secrets)
    try:
        data["cloudflare_api_base_url"] = base_url(server)
        data["cluster_apps"]["label_studio"]["public_name"] = "studio"
        data["hosts"]["calypso"]["gpu"].update(public_name="gpu7", access="service_token")
        site = make_site({name: INVENTORY[name] for name in ("tethys", "styx", "calypso")})
        lines, refused, found, _ = adopt.cloudflare_lines(site)
        assert not refused, lines
        assert found == {"studio.boathou.se", "gpu7.boathou.se", "ml7.boathou.se"}
        assert any(line.startswith("CREATE DNS create CNAME studio.boathou.se") for line in lines)
        assert "label.boathou.se" not in "\n".join(lines)

        caplog.set_level(logging.INFO, logger="pyinfra")
        pyinfra = _pyinfra_state()
        host = next(iter(pyinfra.inventory))
        calypso = site.hosts["calypso"]
        with ctx_state.use(pyinfra), ctx_host.use(host):
            access = CloudflareAccess.of(calypso.settings, site.secrets)
            dns.guard_gpu_name(calypso, site, access)
        assert "would create Access application oceanid calypso for gpu7.boathou.se" in (
            caplog.text
        )
        assert state.requests and all(r["method"] == "GET" for r in state.requests)
    finally:
        server.shutdown()
        server.server_close()
