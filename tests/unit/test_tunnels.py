"""`make tunnels` (issue 23) against the Cloudflare API stand-in on loopback: the tunnel ESC
names is kept, a missing one is created once (found by its name on the next run), and its
credential reaches stdout only when asked for, alone."""

from __future__ import annotations

import subprocess
from pathlib import Path

from oceanid import tunnel_credentials
from tests.smoke_support import (
    assert_no_secret,
    cloudflare_standin,
    run_module,
    site_dir,
    write_secrets,
)


def run_tunnels(site: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_module("oceanid.tunnels", site, env, *args)


def test_a_missing_tunnel_is_created_once_and_its_token_shown_only_when_asked(
    tmp_path, lab_secrets
):
    cluster = lab_secrets["cloudflareTunnelId"]
    values = {
        k: v for k, v in lab_secrets.items() if not k.startswith("cloudflareNodeTunnel")
    }  # calypso's tunnel does not exist yet, and ESC holds nothing of it
    seed = [{"id": cluster, "name": "oceanid-cluster"}]
    with cloudflare_standin(lab_secrets, seed) as api:
        site = site_dir(
            tmp_path, f'secret_sources = ["file"]\ncloudflare_api_base_url = "{api.url}"\n'
        )
        env = write_secrets(tmp_path, values)
        done = run_tunnels(site, env)
        assert done.returncode == 0, done.stdout + done.stderr
        made = [t for t, v in api.state.data["tunnels"].items() if v["name"] == "oceanid-calypso"]
        assert len(made) == 1 and api.state.data["tunnels"][made[0]]["config_src"] == "cloudflare"
        new = made[0]
        lines = done.stdout.splitlines()
        assert lines[0] == f"tunnel oceanid-cluster (cloudflareTunnelId): exists, {cluster}"
        assert lines[1] == "  its credential in cloudflareTunnelToken is this tunnel's"
        assert lines[2] == f"tunnel oceanid-calypso (cloudflareNodeTunnelId): created, {new}"
        store = "esc env set default/oceanid-cluster pulumiConfig.oceanid-cluster:"
        assert lines[3] == f"  store its ID:  {store}cloudflareNodeTunnelId {new}"
        assert lines[4] == (
            f"  store its credential:  {store}cloudflareNodeTunnelToken --secret "
            '"$(make -s tunnels INVENTORY=inventory.py SHOW=cloudflareNodeTunnelToken)"'
        )
        assert_no_secret(done.stdout + done.stderr, lab_secrets)

        again = run_tunnels(site, env)  # ESC still lacks the ID: found by name, not made twice
        assert f"tunnel oceanid-calypso (cloudflareNodeTunnelId): found by its name, {new}" in (
            again.stdout.splitlines()
        )
        names = [v["name"] for v in api.state.data["tunnels"].values()]
        assert names.count("oceanid-calypso") == 1

        shown = run_tunnels(site, env, "--show", "cloudflareNodeTunnelToken")
        assert shown.returncode == 0, shown.stderr
        (token,) = shown.stdout.splitlines()
        credential = tunnel_credentials.parse(token, key="cloudflareNodeTunnelToken")
        assert credential.tunnel_id == new
        assert token not in done.stdout + done.stderr + again.stdout + again.stderr

        stored = write_secrets(
            tmp_path,
            {**values, "cloudflareNodeTunnelId": new, "cloudflareNodeTunnelToken": token},
        )
        settled = run_tunnels(site, stored)
        assert settled.returncode == 0
        assert "store" not in settled.stdout
        assert f"tunnel oceanid-calypso (cloudflareNodeTunnelId): exists, {new}" in settled.stdout


def test_without_the_api_token_it_says_what_is_missing_and_exits_3(tmp_path, lab_secrets):
    values = {k: v for k, v in lab_secrets.items() if k != "cloudflareApiToken"}
    site = site_dir(tmp_path, 'secret_sources = ["file"]\n')
    done = run_tunnels(site, write_secrets(tmp_path, values))
    assert done.returncode == 3 and done.stdout == ""
    assert done.stderr.startswith("tunnels: cloudflareApiToken: missing; the API token")


def test_show_names_only_a_credential_key(tmp_path, lab_secrets):
    site = site_dir(tmp_path, 'secret_sources = ["file"]\n')
    done = run_tunnels(site, write_secrets(tmp_path, lab_secrets), "--show", "cloudflareZoneId")
    assert done.returncode == 3 and done.stdout == ""
    assert "not a tunnel credential key" in done.stderr
