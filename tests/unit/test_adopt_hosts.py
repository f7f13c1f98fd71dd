"""`make adopt-plan HOSTS=1` (`python -m deploys.adopt inventory.py --hosts`): each k3s node's
installed k3s read as `make status` reads it, through pyinfra's `@local` connector here, with a
stand-in `k3s` on PATH answering `--version` as k3s does; the Cloudflare API is the stand-in on
loopback. What HOSTS=1 adds is the k3s lines: ADOPT for the pinned version installed, REPLACE
for another, INSTALL where there is none."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.smoke_support import assert_no_secret, run_module, site_dir, write_secrets
from tests.standins.cloudflare_api import StandinState, base_url, make_server

PINNED = "v1.33.4+k3s1"  # group_data/all.py's k3s version


@pytest.fixture
def cloudflare(lab_secrets):
    seed = {
        "account_id": lab_secrets["cloudflareAccountId"],
        "zones": [{"id": lab_secrets["cloudflareZoneId"], "name": "boathou.se", "records": []}],
        "tunnels": [{"id": lab_secrets["cloudflareTunnelId"], "name": "oceanid-cluster"}],
    }
    server = make_server(
        StandinState.from_seed(seed, lab_secrets["cloudflareApiToken"]), "127.0.0.1", 0
    )
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}).start()
    yield base_url(server)
    server.shutdown()
    server.server_close()


def local_k3s_site(tmp_path: Path, api: str) -> Path:
    """The production group data, provisioning on (the full deploy's plan), with this machine
    (`@local`) as the one k3s server."""
    site = site_dir(
        tmp_path,
        f"""
        secret_sources = ["file"]
        cloudflare_api_base_url = "{api}"
        enable_node_provisioning = True
        hosts = {{"@local": {{"k3s": {{"address": "127.0.0.1"}}}}}}
        """,
    )
    (site / "inventory.py").write_text('k3s_servers = ["@local"]\n')
    return site


def k3s_on_path(tmp_path: Path, version: str | None) -> str:
    """PATH with a `k3s` that prints `version` as `k3s --version` does (None: no k3s)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if version is not None:
        k3s = bin_dir / "k3s"
        k3s.write_text(
            f'#!/bin/sh\n[ "$1" = --version ] || exit 2\n'
            f"echo 'k3s version {version} (148243c4)'; echo 'go version go1.24.5'\n"
        )
        k3s.chmod(0o755)
    return f"{bin_dir}:/usr/bin:/bin"


@pytest.mark.parametrize(
    ("installed", "line"),
    [
        (PINNED, f"ADOPT k3s {PINNED} on @local: the binary stays; k3s.service"),
        ("v1.32.7+k3s1", f"REPLACE k3s v1.32.7+k3s1 on @local with {PINNED}"),
        (None, f"INSTALL k3s {PINNED} on @local (k3s.service"),
    ],
)
def test_hosts_reads_the_installed_k3s(tmp_path, lab_secrets, cloudflare, installed, line):
    site = local_k3s_site(tmp_path, cloudflare)
    env = {**write_secrets(tmp_path, lab_secrets), "PATH": k3s_on_path(tmp_path, installed)}
    done = run_module("deploys.adopt", site, env, "--hosts")
    assert done.returncode == 0, done.stdout + done.stderr  # nothing refused
    assert any(text.startswith(line) for text in done.stdout.splitlines()), done.stdout
    assert_no_secret(done.stdout + done.stderr, lab_secrets)
    if installed == PINNED:  # without --hosts the version is not known, and the plan says so
        without = run_module("deploys.adopt", site, env)
        assert any(
            text.startswith("REPLACE k3s on @local:")
            and "`--hosts` reads what is installed" in text
            for text in without.stdout.splitlines()
        ), without.stdout + without.stderr
