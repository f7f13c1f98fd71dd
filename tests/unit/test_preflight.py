"""Preflight: required secrets follow the enabled features; every problem reported at once."""

import json
import shutil
import subprocess
import sys

import pytest
import yaml

from oceanid.model import HostView
from oceanid.preflight import PreflightError, check
from tests.smoke_support import site_dir
from tests.unit.conftest import REPO, with_node_ips

GROUPS = {"tethys": {"k3s_servers"}, "styx": {"k3s_agents"}, "calypso": {"k3s_agents", "gpu_hosts"}}


def views(data, names=("tethys", "styx", "calypso")):
    return [HostView(n, frozenset(GROUPS[n]), data) for n in names]


@pytest.fixture
def secrets_file(tmp_path, lab_secrets):
    def write(values):
        path = tmp_path / "secrets.yaml"
        path.write_text(yaml.safe_dump(values))
        path.chmod(0o600)
        return {"SECRETS_FILE": str(path)}

    return write


def test_full_site_passes(data, secrets_file, lab_secrets):
    data["secret_sources"] = ["file"]
    site = check(views(data), environ=secrets_file(lab_secrets))
    assert site.hosts["calypso"].node_credential.tunnel_id == lab_secrets["cloudflareNodeTunnelId"]
    assert site.cluster_credential.shape == "token"
    assert site.hosts["calypso"].node_credential.shape == "credentials-base64"
    assert "k3s_token" not in site.required  # provisioning is off by default
    assert site.summary().startswith("ok: 3 hosts")


def test_missing_keys_are_reported_all_at_once(data, secrets_file):
    data["secret_sources"] = ["file"]
    with pytest.raises(PreflightError) as err:
        check(views(data), environ=secrets_file({"hfAccessToken": "x"}))
    keys = sorted(line.split(":")[0] for line in err.value.problems)
    assert keys == sorted(
        [
            "cloudflareNodeTunnelId",
            "cloudflareNodeTunnelToken",
            "cloudflareTunnelId",
            "cloudflareTunnelToken",
            "cloudflareApiToken",
            "cloudflareZoneId",
            "cloudflareAccountId",
            "labelStudioDbUrl",  # Label Studio (cluster_apps) on the k3s server
            "labelStudioAdminEmail",
            "labelStudioAdminPassword",
            "labelStudioApiToken",
            "mlBackendUser",  # the ML-backend connector's basic auth for the adapter
            "mlBackendPassword",
        ]
    )
    assert "CLOUDFLARE_API_TOKEN" in "\n".join(err.value.problems)


def test_only_enabled_features_need_keys(data, secrets_file, lab_secrets):
    data.update(secret_sources=["file"], manage_dns=False)
    values = {
        k: v
        for k, v in lab_secrets.items()
        if not k.startswith(("cloudflareApi", "cloudflareZone", "cloudflareAccount"))
    }
    check(views(data, ["styx"]), environ=secrets_file({}))  # styx alone needs nothing yet
    check(views(data), environ=secrets_file(values))
    data["enable_node_provisioning"] = True
    with_node_ips(data, GROUPS)
    # without k3s_token the first server generates the token the other nodes join with
    site = check(views(data), environ=secrets_file(values | {"k3s_token": ""}))
    assert "k3s_token" not in site.required


def test_k3s_roles_that_cannot_be_provisioned_are_refused(data, secrets_file, lab_secrets):
    data.update(secret_sources=["file"], manage_dns=False, enable_node_provisioning=True)
    with_node_ips(data, GROUPS)
    groups = {"styx": {"k3s_agents"}, "tethys": {"k3s_servers", "k3s_agents"}}
    with pytest.raises(PreflightError) as err:
        check(views(data, ["styx"]), environ=secrets_file(lab_secrets))
    assert err.value.problems == [
        "k3s_agents: agents need a server to join, and k3s_servers is empty in this inventory"
    ]
    with pytest.raises(PreflightError) as err:
        check(
            [HostView(n, frozenset(g), data) for n, g in groups.items()],
            environ=secrets_file(lab_secrets),
        )
    assert err.value.problems == [
        "tethys: in both k3s_servers and k3s_agents; a node is one or the other"
    ]
    data["enable_node_provisioning"] = False  # the minimal deploy only reads what is there
    check(views(data, ["styx"]), environ=secrets_file(lab_secrets))


def test_a_gpu_agent_gets_the_nvidia_runtime_only_with_the_container_toolkit(
    data, secrets_file, lab_secrets
):
    data.update(secret_sources=["file"], manage_dns=False, enable_node_provisioning=True)
    with_node_ips(data, GROUPS)
    data["hosts"]["calypso"]["gpu"]["service"]["runtime"] = "host"
    with pytest.raises(PreflightError) as err:
        check(views(data), environ=secrets_file(lab_secrets))
    assert err.value.problems == [
        "hosts.calypso.gpu.service.runtime: a k3s agent that requires its GPU needs the NVIDIA "
        "container toolkit, which only runtime container installs (k3s gives its containerd "
        "the nvidia runtime when it finds it)"
    ]
    data["hosts"]["calypso"]["gpu"]["require_gpu"] = False  # the lab: skipped, with a note
    check(views(data), environ=secrets_file(lab_secrets))


def test_credential_for_another_tunnel_is_refused(data, secrets_file, lab_secrets):
    data["secret_sources"] = ["file"]
    lab_secrets["cloudflareNodeTunnelToken"] = lab_secrets["cloudflareTunnelToken"]
    with pytest.raises(PreflightError) as err:
        check(views(data), environ=secrets_file(lab_secrets))
    assert len(err.value.problems) == 1
    assert err.value.problems[0].startswith(
        "cloudflareNodeTunnelToken: the credential is for tunnel"
    )
    assert lab_secrets["cloudflareTunnelToken"] not in err.value.problems[0]


def test_two_gpu_hosts_may_not_share_a_tunnel_or_name(data, secrets_file, lab_secrets):
    data["secret_sources"] = ["file"]
    data["hosts"]["calypso2"] = {"gpu": dict(data["hosts"]["calypso"]["gpu"])}
    GROUPS["calypso2"] = {"gpu_hosts"}
    with pytest.raises(PreflightError) as err:
        check(views(data, ["calypso", "calypso2"]), environ=secrets_file(lab_secrets))
    joined = "\n".join(err.value.problems)
    assert "gpu is used by two GPU hosts" in joined
    assert "cloudflareNodeTunnelId is shared by two GPU hosts" in joined


def with_calypso2(
    data, id_key="cloudflareNode2TunnelId", credential_key="cloudflareNode2TunnelToken"
):
    """calypso2 beside calypso, at gpu2, on the tunnel whose ESC keys are given."""
    gpu = dict(data["hosts"]["calypso"]["gpu"], public_name="gpu2")
    gpu.update(tunnel_id_key=id_key, tunnel_credential_key=credential_key)
    data["hosts"]["calypso2"] = {"gpu": gpu}
    return [*views(data), HostView("calypso2", frozenset({"gpu_hosts"}), data)]


def test_two_gpu_hosts_may_not_hold_one_tunnel_id_under_two_keys(data, secrets_file, lab_secrets):
    """calypso's tunnel ID copied into calypso2's own key: the keys differ, the tunnel is one."""
    data["secret_sources"] = ["file"]
    hosts = with_calypso2(data)
    check(hosts, environ=secrets_file(lab_secrets))  # each on its own tunnel
    node = lab_secrets["cloudflareNodeTunnelId"]
    for key in ("Id", "Token"):
        lab_secrets[f"cloudflareNode2Tunnel{key}"] = lab_secrets[f"cloudflareNodeTunnel{key}"]
    lab_secrets["cloudflareNode2TunnelId"] = node.upper()  # compared as an ID
    with pytest.raises(PreflightError) as err:
        check(hosts, environ=secrets_file(lab_secrets))
    assert err.value.problems == [
        f"hosts.calypso2.gpu.tunnel_id_key: calypso2's cloudflareNode2TunnelId holds tunnel "
        f"{node}, the one calypso's cloudflareNodeTunnelId holds; each GPU host needs a tunnel "
        "of its own: point hosts.calypso2.gpu.tunnel_id_key (and tunnel_credential_key) at keys "
        "of calypso2's own, or remove the copied ID from cloudflareNode2TunnelId; `make "
        "tunnels` creates the missing tunnel"
    ]
    for key, value in lab_secrets.items():
        if "TunnelId" not in key and "Hostname" not in key and "Target" not in key:
            assert value.strip() not in str(err.value)


def test_one_key_spelled_two_ways_is_one_tunnel(data, secrets_file, lab_secrets):
    """`cloudflare_node_tunnel_id` is `cloudflareNodeTunnelId` (oceanid/secrets.py
    `canonical`): no value was copied, so the line says only to give the host keys of its own."""
    data["secret_sources"] = ["file"]
    hosts = with_calypso2(data, "cloudflare_node_tunnel_id", "cloudflare_node_tunnel_token")
    with pytest.raises(PreflightError) as err:
        check(hosts, environ=secrets_file(lab_secrets))
    assert err.value.problems == [
        "hosts.calypso2.gpu.tunnel_id_key: calypso2's cloudflare_node_tunnel_id holds tunnel "
        f"{lab_secrets['cloudflareNodeTunnelId']}, the one calypso's cloudflareNodeTunnelId "
        "holds; each GPU host needs a tunnel of its own: point "
        "hosts.calypso2.gpu.tunnel_id_key (and tunnel_credential_key) at keys of calypso2's "
        "own; `make tunnels` creates the missing tunnel"
    ]


def test_a_gpu_host_may_not_use_the_cluster_tunnel(data, secrets_file, lab_secrets):
    """Its connector would take Label Studio's requests, with or without the k3s server in
    this inventory: the cluster tunnel's connector runs there all the same."""
    data["secret_sources"] = ["file"]
    cluster = lab_secrets["cloudflareTunnelId"]
    lab_secrets["cloudflareNodeTunnelId"] = cluster
    lab_secrets["cloudflareNodeTunnelToken"] = lab_secrets["cloudflareTunnelToken"]
    lab_secrets["cloudflareNodeTunnelTarget"] = f"{cluster}.cfargotunnel.com"
    line = (
        f"hosts.calypso.gpu.tunnel_id_key: calypso's cloudflareNodeTunnelId holds tunnel "
        f"{cluster}, the cluster tunnel (cloudflareTunnelId, Label Studio's); each GPU host "
        "needs a tunnel of its own: point hosts.calypso.gpu.tunnel_id_key (and "
        "tunnel_credential_key) at keys of calypso's own, or remove the copied ID from "
        "cloudflareNodeTunnelId; `make tunnels` creates the missing tunnel"
    )
    for names in (("tethys", "styx", "calypso"), ("calypso",)):
        with pytest.raises(PreflightError) as err:
            check(views(data, names), environ=secrets_file(lab_secrets))
        assert err.value.problems == [line]
        assert lab_secrets["cloudflareTunnelToken"] not in str(err.value)


def test_a_gpu_host_named_on_the_cluster_key_is_refused_without_removing_it(
    data, secrets_file, lab_secrets
):
    """tunnel_id_key cloudflareTunnelId is the cluster's own key: the line must not tell the
    operator to remove the cluster tunnel's ID."""
    data["secret_sources"] = ["file"]
    data["hosts"]["calypso"]["gpu"].update(
        tunnel_id_key="cloudflareTunnelId", tunnel_credential_key="cloudflareTunnelToken"
    )
    del lab_secrets["cloudflareNodeTunnelTarget"]  # calypso's records are no longer its tunnel's
    with pytest.raises(PreflightError) as err:
        check(views(data), environ=secrets_file(lab_secrets))
    assert err.value.problems == [
        "hosts.calypso.gpu.tunnel_id_key: calypso's cloudflareTunnelId holds tunnel "
        f"{lab_secrets['cloudflareTunnelId']}, the cluster tunnel (cloudflareTunnelId, Label "
        "Studio's); each GPU host needs a tunnel of its own: point "
        "hosts.calypso.gpu.tunnel_id_key (and tunnel_credential_key) at keys of calypso's "
        "own; `make tunnels` creates the missing tunnel"
    ]


def test_gpu_group_member_without_gpu_settings(data, secrets_file, lab_secrets):
    data["secret_sources"] = ["file"]
    del data["hosts"]["calypso"]
    with pytest.raises(PreflightError, match="calypso is in gpu_hosts but has no gpu settings"):
        check(views(data), environ=secrets_file(lab_secrets))


def run_check(site, env):
    return subprocess.run(
        [sys.executable, "-m", "oceanid.preflight", "inventory.py"],
        cwd=site,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_make_check_ok_is_one_line(tmp_path, lab_secrets):
    site = site_dir(tmp_path, 'secret_sources = ["file"]\n')
    (tmp_path / "s.json").write_text(json.dumps(lab_secrets))
    (tmp_path / "s.json").chmod(0o600)
    done = run_check(site, {"SECRETS_FILE": str(tmp_path / "s.json")})
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1 and done.stdout.startswith(
        "check: inventory.py: ok: 3 hosts"
    )
    for value in lab_secrets.values():
        assert value.strip() not in done.stdout + done.stderr


def test_make_check_lists_each_problem(tmp_path):
    site = site_dir(tmp_path, 'base_domain = "bad domain"\nenable_node_provisioning = "yes"\n')
    done = run_check(site, {})
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("check: base_domain: must be a lower-case DNS name")
    assert lines[1].startswith("check: enable_node_provisioning: Input should be a valid boolean")
    assert lines[-1] == "check: 2 problem(s) in inventory.py"
    assert "Traceback" not in done.stderr


def test_make_check_without_esc_cli(tmp_path):
    done = run_check(site_dir(tmp_path), {})
    assert done.returncode == 1
    assert "the Pulumi ESC CLI `esc` is not on PATH" in done.stderr
    assert "Traceback" not in done.stderr


def test_model_folders_are_checked_before_anything(
    data, secrets_file, lab_secrets, tmp_path, monkeypatch
):
    from oceanid import preflight

    source = tmp_path / "models"
    shutil.copytree(REPO / "triton-models", source)
    (source / "docling_granite_python").rename(source / "docling")
    (source / "empty_model").mkdir()
    monkeypatch.setattr(preflight, "MODEL_SOURCE", source)
    data["secret_sources"] = ["file"]
    with pytest.raises(PreflightError) as err:
        check(views(data), environ=secrets_file(lab_secrets))
    joined = "\n".join(err.value.problems)
    assert "model 'docling':" in joined and "'docling_granite_python'" in joined
    assert "model 'empty_model':" in joined and "config.pbtxt is missing" in joined


def test_secrets_file_setting_names_the_sites_own_file(data, tmp_path, lab_secrets):
    """The lab's group data names its file, so its inventory runs without SECRETS_FILE."""
    path = tmp_path / "site-secrets.yaml"
    path.write_text(yaml.safe_dump(lab_secrets))
    path.chmod(0o600)
    data.update(secret_sources=["file"], secrets_file=str(path))
    site = check(views(data), environ={})
    assert site.secrets.origin("cloudflareApiToken") == "file"


def test_secrets_file_variable_wins_over_the_setting(data, tmp_path, secrets_file, lab_secrets):
    data.update(secret_sources=["file"], secrets_file=str(tmp_path / "absent.yaml"))
    site = check(views(data), environ=secrets_file(lab_secrets))
    assert site.summary().startswith("ok: 3 hosts")


def test_missing_key_names_the_file_that_was_read(data, tmp_path):
    path = tmp_path / "site-secrets.yaml"
    path.write_text("hfAccessToken: x\n")
    path.chmod(0o600)
    data.update(secret_sources=["file"], secrets_file=str(path))
    with pytest.raises(PreflightError) as err:
        check(views(data), environ={})
    assert f"as CLOUDFLARE_API_TOKEN, or in {path}" in "\n".join(err.value.problems)
    assert not any(line.startswith("SECRETS_FILE") for line in err.value.problems)


def test_secrets_file_setting_others_can_read_is_refused(data, tmp_path, lab_secrets):
    path = tmp_path / "site-secrets.yaml"
    path.write_text(yaml.safe_dump(lab_secrets))
    path.chmod(0o644)
    data.update(secret_sources=["file"], secrets_file=str(path))
    with pytest.raises(PreflightError) as err:
        check(views(data), environ={})
    assert err.value.problems[-1].startswith(f"secrets: secrets_file {path} is mode 0644")
    for value in lab_secrets.values():
        assert value.strip() not in str(err.value)


def test_a_secret_with_a_newline_never_reaches_a_secret(data, secrets_file, lab_secrets):
    """`labelStudioApiToken: "abc…\\n"` passed the token's `re.match(…$)` and reached the
    Kubernetes Secret; now every secret the deploy copies is one line, and the message
    names the key, never the value."""
    data["secret_sources"] = ["file"]
    token = lab_secrets["labelStudioApiToken"]
    bad = {
        "labelStudioApiToken": token + "\n",
        "k3s_token": "K10abc\rdef",
        "cloudflareApiToken": "x\x00" + lab_secrets["cloudflareApiToken"],
        "labelStudioAdminEmail": "admin@boathou.se\n",
    }
    with pytest.raises(PreflightError) as err:
        check(views(data), environ=secrets_file(lab_secrets | bad))
    joined = "\n".join(err.value.problems)
    for key in bad:
        assert f"{key}: " in joined
    assert "labelStudioApiToken: ends in a newline (from the secrets file)" in joined
    assert "k3s_token: holds a newline or another control character" in joined
    assert "labelStudioAdminEmail: not an e-mail address" in joined  # no longer stripped first
    assert "labelStudioApiToken: must be a legacy API token" in joined  # a full match now
    for value in [*bad.values(), token, lab_secrets["cloudflareApiToken"]]:
        assert value.strip() not in joined


def test_a_tunnel_credential_spanning_lines_is_taken(data, secrets_file, lab_secrets):
    """Credentials are parsed, never copied as given: the shapes that span lines stay valid,
    for the default keys and for a key a host names."""
    data["secret_sources"] = ["file"]
    data["hosts"]["calypso"]["gpu"].update(
        tunnel_id_key="cloudflareNode2TunnelId", tunnel_credential_key="cloudflareNode2TunnelToken"
    )
    pretty = json.dumps(json.loads(lab_secrets["cloudflareNode2TunnelToken"]), indent=2) + "\n"
    lab_secrets["cloudflareNode2TunnelToken"] = pretty
    assert lab_secrets["cloudflareNodeTunnelToken"].count("\n") > 1  # wrapped at 76 columns
    site = check(views(data), environ=secrets_file(lab_secrets))
    assert site.hosts["calypso"].node_credential.shape == "credentials-json"


ADDRESS_PROBLEM = (
    "hosts.tethys.k3s.address: not set, and styx, calypso join the cluster through tethys's "
    "API: its inventory name resolves only through your SSH config, not on the nodes; set "
    "hosts.tethys.k3s.address to the IP address (or a DNS name) the other nodes reach it by"
)


def test_agents_need_the_first_servers_address_not_its_inventory_alias(
    data, secrets_file, lab_secrets
):
    """Agents get `server: https://<address>:<port>`; without `address` that was `tethys`,
    which only the operator's SSH config resolves."""
    data.update(secret_sources=["file"], manage_dns=False, enable_node_provisioning=True)
    with_node_ips(data, GROUPS)
    del data["hosts"]["tethys"]["k3s"]["address"]
    with pytest.raises(PreflightError) as err:
        check(views(data), environ=secrets_file(lab_secrets))
    assert err.value.problems == [ADDRESS_PROBLEM]
    check(views(data, ["tethys"]), environ=secrets_file(lab_secrets))  # no node joins it
    data["hosts"]["tethys"]["k3s"]["address"] = "10.77.0.11"
    check(views(data), environ=secrets_file(lab_secrets))


def test_a_server_whose_inventory_name_is_an_ip_address_needs_no_address(
    data, secrets_file, lab_secrets
):
    from deploys.k3s import cluster

    data.update(secret_sources=["file"], manage_dns=False, enable_node_provisioning=True)
    groups = {"@ssh/10.77.0.11": {"k3s_servers"}, "styx": {"k3s_agents"}}
    with_node_ips(data, ["styx"])
    data["hosts"]["10.77.0.11"] = {"k3s": {"node_ip": "10.77.0.11"}}
    site = check(
        [HostView(n, frozenset(g), data) for n, g in groups.items()],
        environ=secrets_file(lab_secrets),
    )
    assert cluster.endpoint(site, site.hosts["styx"]) == "https://10.77.0.11:6443"


def test_make_check_on_the_production_inventory_says_which_address_to_set(tmp_path, lab_secrets):
    """Production's group data has no tethys entry: with provisioning on, `make check` names
    the key to set before any host is touched."""
    site = site_dir(tmp_path, 'secret_sources = ["file"]\nenable_node_provisioning = True\n')
    (tmp_path / "s.json").write_text(json.dumps(lab_secrets))
    (tmp_path / "s.json").chmod(0o600)
    done = run_check(site, {"SECRETS_FILE": str(tmp_path / "s.json")})
    assert done.returncode == 1
    assert f"check: {ADDRESS_PROBLEM}" in done.stderr.splitlines()
    assert "Traceback" not in done.stderr
