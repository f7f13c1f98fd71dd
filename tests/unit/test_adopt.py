"""`make adopt-plan` (issue 23) against the Cloudflare API stand-in on loopback: the same plan the
deploy makes, read only, in ADOPT/CREATE/REPLACE/REFUSE lines, and the `pulumi state delete`
lines for the old stack's resources the deploy now owns."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

from tests.smoke_support import assert_no_secret, run_module, site_dir, write_secrets
from tests.standins.cloudflare_api import StandinState, base_url, make_server


def run_adopt(site: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_module("deploys.adopt", site, env, *args)


def test_the_plan_names_what_is_adopted_replaced_and_refused(tmp_path, lab_secrets):
    cluster, node = lab_secrets["cloudflareTunnelId"], lab_secrets["cloudflareNodeTunnelId"]
    seed = {
        "account_id": lab_secrets["cloudflareAccountId"],
        "zones": [
            {
                "id": lab_secrets["cloudflareZoneId"],
                "name": "boathou.se",
                "records": [
                    # the old stack's records: one as wanted, one pointing elsewhere
                    {"type": "CNAME", "name": "label.boathou.se", "proxied": True, "ttl": 1,
                     "content": f"{cluster}.cfargotunnel.com"},
                    {"type": "A", "name": "gpu.boathou.se", "content": "192.0.2.7",
                     "proxied": True, "ttl": 1},
                ],
            }
        ],
        "tunnels": [
            {"id": cluster, "name": "oceanid-cluster"},
            {"id": node, "name": "calypso", "config_src": "cloudflare",
             "config": {"ingress": [{"hostname": "gpu.boathou.se",
                                     "service": "http://localhost:8000"},
                                    {"service": "http_status:404"}]}},
        ],
    }  # fmt: skip
    state = StandinState.from_seed(seed, lab_secrets["cloudflareApiToken"])
    server = make_server(state, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}).start()
    export = tmp_path / "stack.json"
    urn = "urn:pulumi:prod::oceanid-cluster::"
    record, config = (
        "cloudflare:index/record:Record",
        ("cloudflare:index/zeroTrustTunnelCloudflaredConfig:ZeroTrustTunnelCloudflaredConfig"),
    )
    resources = [
        (record, "label", {"name": "label", "zoneId": "z"}),  # relative to the zone, as Pulumi
        (record, "www", {"name": "www"}),
        (config, "node", {"tunnelId": node}),
        ("command:remote:Command", "k3s-agent", {"create": "curl -sfL https://get.k3s.io | sh -"}),
    ]
    export.write_text(
        json.dumps(
            {
                "deployment": {
                    "resources": [
                        {"type": kind, "urn": f"{urn}{kind}::{name}", "inputs": inputs}
                        for kind, name, inputs in resources
                    ]
                }
            }
        )
    )
    try:
        site = site_dir(
            tmp_path, f'secret_sources = ["file"]\ncloudflare_api_base_url = "{base_url(server)}"\n'
        )
        before = json.dumps(state.data, sort_keys=True, default=str)
        done = run_adopt(site, write_secrets(tmp_path, lab_secrets), "--pulumi-export", str(export))
        after = json.dumps(state.data, sort_keys=True, default=str)
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 1, done.stdout + done.stderr  # gpu.boathou.se would be refused
    lines = done.stdout.splitlines()
    assert any(line.startswith("ADOPT DNS adopt CNAME label.boathou.se") for line in lines)
    assert any(line.startswith("CREATE DNS create CNAME ml.boathou.se") for line in lines)
    (refused,) = [line for line in lines if line.startswith("REFUSE DNS")]
    assert "gpu.boathou.se points at A 192.0.2.7" in refused
    assert "cloudflare_takeover_records" in refused
    assert any(line.startswith(f"REPLACE set ingress of tunnel calypso ({node})") for line in lines)
    # the cluster tunnel's routes are the deploy's too (issue 20 item 7): a locally managed
    # one keeps them in its connector's file
    assert (
        f"LOCAL tunnel oceanid-cluster ({cluster}) is locally managed: ingress comes from its "
        "config file"
    ) in lines
    assert any(line.startswith("KEEP k3s on tethys: provisioning is off") for line in lines)
    assert f"pulumi state delete --yes '{urn}cloudflare:index/record:Record::label'" in lines
    assert f"pulumi state delete --yes '{urn}{config}::node'" in lines
    assert f"pulumi state delete --yes '{urn}command:remote:Command::k3s-agent'" in lines
    assert not any("::www" in line for line in lines)  # not the deploy's: stays in Pulumi
    assert before == after  # read only: nothing was written through the API
    assert_no_secret(done.stdout + done.stderr, lab_secrets)
