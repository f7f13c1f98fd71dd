"""Settings validation: every problem at once, each naming its key."""

import pytest

from oceanid.settings import SettingsError, from_data


def problems(data) -> list[str]:
    with pytest.raises(SettingsError) as err:
        from_data(data)
    return err.value.problems


def test_shipped_defaults_validate(data):
    settings = from_data(data)
    assert settings.base_domain == "boathou.se"
    assert settings.k3s.version == "v1.33.4+k3s1"
    assert settings.enable_node_provisioning is False
    assert settings.enable_control_plane_lb is False
    assert settings.esc_environment == "default/oceanid-cluster"
    assert settings.host("calypso").gpu.require_gpu is True
    assert settings.host("styx").gpu is None


def test_pyinfra_keys_are_not_ours(data):
    data.update(ssh_user="oceanid", _sudo=True, ssh_config_file="/x")
    assert from_data(data).admin_user == "oceanid"


def test_unknown_key_suggests_the_right_one(data):
    data["enable_node_provisoning"] = True
    assert problems(data) == [
        "enable_node_provisoning: unknown setting; did you mean enable_node_provisioning?"
    ]


def test_every_problem_is_reported_at_once(data):
    data["base_domain"] = "Not A Domain"
    data["tunnel_protocol"] = "udp"
    data["cloudflared"]["sha256"]["amd64"] = "abc"
    data["k3s"]["url"] = "ftp://example/{version}"
    del data["manage_dns"]
    found = problems(data)
    assert len(found) == 5, found
    joined = "\n".join(found)
    assert "base_domain: must be a lower-case DNS name" in joined
    assert "tunnel_protocol:" in joined and "'udp'" in joined
    assert "cloudflared.sha256.amd64: must be 64 lower-case hex digits" in joined
    assert "k3s.url: must be an http(s) URL template" in joined
    assert "manage_dns: missing; set it in group_data/all.py" in joined


def test_flags_must_be_booleans_not_strings(data):
    data["enable_node_provisioning"] = "false"
    assert problems(data)[0].startswith("enable_node_provisioning: Input should be a valid boolean")


def test_lb_without_provisioning_is_refused(data):
    data["enable_control_plane_lb"] = True
    assert "enable_control_plane_lb needs enable_node_provisioning" in problems(data)[0]


def test_host_data_is_checked_by_path(data):
    data["hosts"]["calypso"]["gpu"]["public_name"] = "GPU.x"
    data["hosts"]["calypso"]["gpu"]["service"]["runtime"] = "podman"
    data["hosts"]["calypso"]["gpu"]["colour"] = "green"
    joined = "\n".join(problems(data))
    assert "hosts.calypso.gpu.public_name: must be one DNS label" in joined
    assert "hosts.calypso.gpu.service.runtime:" in joined
    assert "hosts.calypso.gpu.colour: unknown setting" in joined


def test_http_service_needs_an_image(data):
    data["hosts"]["calypso"]["gpu"]["service"] = {"kind": "http", "port": 5001}
    assert "kind http needs an image" in problems(data)[0]


def test_artifact_url_renders(data):
    url = from_data(data).cloudflared.url_for("amd64")
    assert url.endswith("/2025.8.1/cloudflared-linux-amd64")


def test_admin_keys_must_be_public_keys(data):
    data["admin_ssh_keys"] = ["-----BEGIN OPENSSH PRIVATE KEY-----"]
    assert "admin_ssh_keys: item 0 is not an OpenSSH public key line" in problems(data)[0]


def test_cloudflare_settings_are_checked(data):
    data["cloudflare_api_base_url"] = "api.cloudflare.com/client/v4"
    data["cloudflare_takeover_records"] = ["gpu.boathou.se", "Not A Name"]
    joined = "\n".join(problems(data))
    assert "cloudflare_api_base_url: must be an http(s) URL" in joined
    assert "cloudflare_takeover_records.1: must be a lower-case DNS name" in joined


def test_calypso_is_reached_as_oceanid_with_sudo(data):
    calypso = from_data(data).host("calypso")
    assert (calypso.ssh_user, calypso.sudo) == ("oceanid", True)
    assert (from_data(data).host("tethys").ssh_user, from_data(data).host("tethys").sudo) == (
        None,
        False,
    )


def test_host_login_is_checked_by_path(data):
    data["hosts"]["calypso"].update(ssh_user="Oceanid Admin", sudo="yes")
    joined = "\n".join(problems(data))
    assert "hosts.calypso.ssh_user: String should match pattern" in joined
    assert "hosts.calypso.sudo: Input should be a valid boolean (got 'yes')" in joined


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "must be the path of a YAML or JSON file"),
        ("  ", "must be the path of a YAML or JSON file"),
        (5, "Input should be a valid string"),
    ],
)
def test_secrets_file_must_be_a_path(data, value, message):
    data["secrets_file"] = value
    assert problems(data) == [f"secrets_file: {message} (got {value!r})"]
