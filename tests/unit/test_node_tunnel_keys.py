"""The guide's ESC keys cloudflareNodeTunnelHostname and cloudflareNodeTunnelTarget (issue 21
item 7): read, and a value that disagrees with the settings or the tunnel stops `make check`."""

import pytest
import yaml

from oceanid.model import HostView
from oceanid.preflight import PreflightError, check

GROUPS = {"tethys": {"k3s_servers"}, "styx": {"k3s_agents"}, "calypso": {"k3s_agents", "gpu_hosts"}}


def run(data, tmp_path, values):
    data["secret_sources"] = ["file"]
    path = tmp_path / "secrets.yaml"
    path.write_text(yaml.safe_dump(values))
    path.chmod(0o600)
    hosts = [HostView(n, frozenset(g), data) for n, g in GROUPS.items()]
    return check(hosts, environ={"SECRETS_FILE": str(path)})


def test_the_lab_values_pass(data, tmp_path, lab_secrets):
    assert lab_secrets["cloudflareNodeTunnelHostname"] == data["base_domain"]
    run(data, tmp_path, lab_secrets)


def test_a_hostname_other_than_base_domain_names_both(data, tmp_path, lab_secrets):
    lab_secrets["cloudflareNodeTunnelHostname"] = "example.org"
    with pytest.raises(PreflightError) as err:
        run(data, tmp_path, lab_secrets)
    (line,) = [p for p in err.value.problems if p.startswith("cloudflareNodeTunnelHostname")]
    assert "'example.org'" in line and f"'{data['base_domain']}'" in line


def test_case_and_final_dot_are_not_a_difference(data, tmp_path, lab_secrets):
    lab_secrets["cloudflareNodeTunnelHostname"] = data["base_domain"].upper() + "."
    target = lab_secrets["cloudflareNodeTunnelTarget"]
    lab_secrets["cloudflareNodeTunnelTarget"] = target.upper() + "."
    run(data, tmp_path, lab_secrets)


def test_a_target_other_than_the_tunnels_names_both(data, tmp_path, lab_secrets):
    lab_secrets["cloudflareNodeTunnelTarget"] = "http://localhost:8000"  # the old lab's value
    with pytest.raises(PreflightError) as err:
        run(data, tmp_path, lab_secrets)
    (line,) = [p for p in err.value.problems if p.startswith("cloudflareNodeTunnelTarget")]
    wanted = f"{lab_secrets['cloudflareNodeTunnelId']}.cfargotunnel.com"
    assert "'http://localhost:8000'" in line and repr(wanted) in line and "calypso" in line


def test_another_tunnels_target_is_refused(data, tmp_path, lab_secrets):
    other = lab_secrets["cloudflareTunnelId"]  # the cluster tunnel's: not calypso's records'
    lab_secrets["cloudflareNodeTunnelTarget"] = f"{other}.cfargotunnel.com"
    with pytest.raises(PreflightError, match="cloudflareNodeTunnelTarget"):
        run(data, tmp_path, lab_secrets)


def test_both_keys_are_optional(data, tmp_path, lab_secrets):
    del lab_secrets["cloudflareNodeTunnelHostname"], lab_secrets["cloudflareNodeTunnelTarget"]
    run(data, tmp_path, lab_secrets)


def test_without_base_domain_the_esc_hostname_is_the_default(data, tmp_path, lab_secrets):
    data["base_domain"] = None
    lab_secrets["cloudflareNodeTunnelHostname"] = "Example.org."
    site = run(data, tmp_path, lab_secrets)
    assert {plan.settings.base_domain for plan in site.hosts.values()} == {"example.org"}
    from deploys.gpu_host import cloudflared_node

    rules = cloudflared_node.config(site.hosts["calypso"])["ingress"]
    assert {r["hostname"] for r in rules[:-1]} == {"gpu.example.org", "ml.example.org"}


def test_without_base_domain_nor_the_esc_hostname_says_to_set_one(data, tmp_path, lab_secrets):
    data["base_domain"] = None
    del lab_secrets["cloudflareNodeTunnelHostname"]
    with pytest.raises(PreflightError) as err:
        run(data, tmp_path, lab_secrets)
    assert any(
        p.startswith("base_domain: not set, and its default, ESC cloudflareNodeTunnelHostname")
        for p in err.value.problems
    ), err.value.problems


def test_a_default_hostname_that_is_no_domain_is_refused(data, tmp_path, lab_secrets):
    data["base_domain"] = None
    lab_secrets["cloudflareNodeTunnelHostname"] = "not a domain"
    with pytest.raises(PreflightError) as err:
        run(data, tmp_path, lab_secrets)
    assert any(
        p.startswith("cloudflareNodeTunnelHostname (the default of base_domain): base_domain")
        for p in err.value.problems
    ), err.value.problems
